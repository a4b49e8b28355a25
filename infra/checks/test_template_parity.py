"""template.yaml and the code agree.

Names come from the code itself: `cargo run --example template_constants` (sweep's) prints them
as JSON (and parses the template's sweep settings and the layer's policy file with the real
parsers). Event patterns and the stream filter are evaluated with the emulator's own
EventBridge pattern matcher (moto.events.models.EventPattern), never a hand-written one.

Run by scripts/checks/template.sh (pytest from .venv/tools).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import tomllib
import zipfile
from functools import cache
from pathlib import Path

import pytest
import yaml
from moto.events.models import EventPattern

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"


# --- the template, CloudFormation short-form tags included ----------------------------------


class CfnLoader(yaml.SafeLoader):
    pass


def _tag(loader: CfnLoader, suffix: str, node: yaml.Node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _tag)


@cache
def template() -> dict:
    return yaml.load((ROOT / "template.yaml").read_text(), Loader=CfnLoader)


def resources(kind: str | None = None) -> dict[str, dict]:
    res = template()["Resources"]
    return {k: v for k, v in res.items() if kind is None or v["Type"] == kind}


def function(name: str) -> dict:
    """A function's properties with Globals merged (as SAM merges them)."""
    glob = dict(template().get("Globals", {}).get("Function", {}))
    props = dict(resources()[name]["Properties"])
    env = dict(glob.get("Environment", {}).get("Variables", {}))
    env.update(props.get("Environment", {}).get("Variables", {}))
    merged = {**glob, **props, "Environment": {"Variables": env}}
    return merged


def default(param: str):
    return template()["Parameters"][param]["Default"]


# --- the code's names ------------------------------------------------------------------------


@cache
def code() -> dict:
    env = dict(os.environ)
    sweep_env = function("SweepFunction")["Environment"]["Variables"]
    for name in ("LATCH_DRIFT_GRACE", "LATCH_SWEEP_CONCURRENCY", "LATCH_DRIFT_IAM_RATE"):
        env[name] = str(sweep_env[name])
    # No `-p`: cargo then resolves features over the whole workspace, as ./scripts/test's build
    # did, and reuses that build instead of compiling the dependencies again.
    out = subprocess.run(
        [
            "cargo", "run", "--quiet", "--example", "template_constants", "--",
            str(layer_policy_file()),
        ],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)


def event(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


def pattern_of(rule: str) -> EventPattern:
    return EventPattern.load(json.dumps(resources()[rule]["Properties"]["EventPattern"]))


FUNCTIONS = {"GrantFunction": "grant", "RevokeFunction": "revoke", "SweepFunction": "sweep"}


# --- functions and their build ----------------------------------------------------------------


@pytest.mark.parametrize("logical_id,crate", FUNCTIONS.items())
def test_each_function_builds_its_own_crate_with_cargo_lambda(logical_id, crate):
    fn = function(logical_id)
    meta = resources()[logical_id]["Metadata"]
    assert meta["BuildMethod"] == "rust-cargolambda"
    assert fn["Runtime"] == "provided.al2023" and fn["Handler"] == "bootstrap"
    manifest = tomllib.loads((ROOT / fn["CodeUri"] / "Cargo.toml").read_text())
    assert manifest["package"]["name"] == crate
    bins = [b["name"] for b in manifest.get("bin", [])]
    assert bins == [meta["BuildProperties"]["Binary"]] == [crate]


def test_every_function_has_exactly_the_environment_its_code_reads():
    c = code()["env"]
    # Every function loads latch-aws's Config: the boundary and the deployment id come with it.
    common = {c["table"], c["bus"], c["boundary_arn"], c["deployment"], "RUST_LOG"}
    want = {
        "GrantFunction": common | {c["policy_path"]},
        "RevokeFunction": common,
        "SweepFunction": common | {c["policy_path"], c["drift_grace"], c["sweep_concurrency"], c["drift_iam_rate"]},
    }
    for logical_id, names in want.items():
        env = function(logical_id)["Environment"]["Variables"]
        assert set(env) == names, logical_id
        assert env[c["table"]] == {"Ref": "Table"}
        assert env[c["bus"]] == {"Ref": "Bus"}
        assert env["RUST_LOG"] == {"Ref": "LogLevel"}
        assert env[c["boundary_arn"]] == BOUNDARY_ARN
        # The stack's own id, in every policy name: two stacks never share a namespace.
        assert "AWS::StackId" in json.dumps(env[c["deployment"]])


def test_sweep_settings_in_the_template_parse_with_the_sweeps_own_parser():
    s = code()["sweep_settings"]
    assert s["ok"], s
    assert s["drift_grace_secs"] > 0 and 1 <= s["concurrency"] <= 64
    assert 0.1 <= s["drift_iam_per_second"] <= 100


# --- the policy file layer --------------------------------------------------------------------


def layer_dir() -> Path:
    return ROOT / resources()["PolicyLayer"]["Properties"]["ContentUri"]


def layer_policy_file() -> Path:
    # /opt/latch/policies.yaml: a layer's content is extracted under /opt.
    rel = Path("/opt/latch/policies.yaml").relative_to("/opt")
    return layer_dir() / rel


def test_policy_path_is_the_code_default_and_the_layer_puts_the_file_there():
    c = code()
    policy_path = c["defaults"]["policy_path"]
    assert policy_path.startswith("/opt/")
    assert layer_dir() / Path(policy_path).relative_to("/opt") == layer_policy_file()
    for logical_id in ("GrantFunction", "SweepFunction"):
        fn = function(logical_id)
        assert fn["Environment"]["Variables"][c["env"]["policy_path"]] == policy_path
        assert fn["Layers"] == [{"Ref": "PolicyLayer"}], logical_id
    assert "Layers" not in function("RevokeFunction"), "revoke does not read the policy file"


def test_the_layer_is_one_copy_of_infra_policies_yaml_and_sam_packages_its_content():
    f = layer_policy_file()
    assert f.is_symlink() and f.resolve() == (ROOT / "infra" / "policies.yaml").resolve()
    # The zip `sam deploy` uploads, made by SAM's own packager.
    from samcli.lib.package.utils import make_zip

    with tempfile.TemporaryDirectory() as tmp:
        zipped = make_zip(os.path.join(tmp, "layer"), str(layer_dir()))
        with zipfile.ZipFile(zipped) as z:
            assert z.namelist() == ["latch/policies.yaml"]
            assert z.read("latch/policies.yaml") == (ROOT / "infra" / "policies.yaml").read_bytes()


def test_elevatable_path_default_matches_the_policy_file():
    p = code()["policy_file"]
    assert p["ok"], p
    assert default("ElevatableRolePath") == p["elevatable_path"]


# --- the table --------------------------------------------------------------------------------


def test_table_matches_the_item_layout():
    t = code()["table"]
    props = resources()["Table"]["Properties"]
    assert props["KeySchema"] == [
        {"AttributeName": t["pk"], "KeyType": "HASH"},
        {"AttributeName": t["sk"], "KeyType": "RANGE"},
    ]
    [gsi] = props["GlobalSecondaryIndexes"]
    assert gsi["IndexName"] == t["expiry_index"]
    assert gsi["KeySchema"] == [
        {"AttributeName": t["expiry_bucket"], "KeyType": "HASH"},
        {"AttributeName": t["expires_at_epoch"], "KeyType": "RANGE"},
    ]
    assert gsi["Projection"] == {"ProjectionType": "ALL"}
    types = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
    assert types == {t["pk"]: "S", t["sk"]: "S", t["expiry_bucket"]: "S", t["expires_at_epoch"]: "N"}
    assert props["TimeToLiveSpecification"] == {"AttributeName": t["ttl"], "Enabled": True}
    # Old images for the revoke function, new ones for the archive pipe (test_archive_parity.py).
    assert props["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["DeletionProtectionEnabled"] is True
    assert props["SSESpecification"]["SSEEnabled"] is True
    assert resources()["Table"]["DeletionPolicy"] == "Retain"


def test_the_sweeps_query_permission_names_the_codes_index():
    [stmt] = [s for s in role_statements("SweepRole") if "dynamodb:Query" in actions_of(s)]
    assert stmt["Resource"] == {"Fn::Sub": "${Table.Arn}/index/" + code()["table"]["expiry_index"]}


# --- rules and patterns -----------------------------------------------------------------------


def test_pipeline_rule_carries_exactly_the_codes_detail_types_and_matches_the_sample_events():
    props = resources()["PipelineEventsRule"]["Properties"]
    assert props["EventBusName"] == {"Ref": "Bus"}
    assert props["EventPattern"]["detail-type"] == code()["pipeline_detail_types"]
    # `latch dev` routes as the stack does: an event from a source no rule trusts still reaches
    # the grant function and is audited as a denial, locally as in AWS.
    assert props["EventPattern"] == code()["local_pipeline_pattern"]
    assert props["Targets"][0]["Arn"] == {"Fn::GetAtt": ["GrantFunction", "Arn"]}
    pattern = pattern_of("PipelineEventsRule")
    assert pattern.matches_event(event("pipeline-job-started.json"))
    assert pattern.matches_event(event("pipeline-job-finished.json"))
    for dt in code()["audit_detail_types"].values():
        audit = {**event("pipeline-job-started.json"), "source": code()["audit_source"], "detail-type": dt}
        assert not pattern.matches_event(audit), dt


def test_native_rule_is_on_the_default_bus_and_targets_the_grant_function():
    props = resources()["NativePipelineEventsRule"]["Properties"]
    assert "EventBusName" not in props, "AWS services emit on the default bus only"
    assert props["EventPattern"] == {
        "source": ["aws.codepipeline", "aws.codebuild"],
        "detail-type": ["CodePipeline Action Execution State Change", "CodeBuild Build State Change"],
    }
    assert props["Targets"][0]["Arn"] == {"Fn::GetAtt": ["GrantFunction", "Arn"]}
    pattern = pattern_of("NativePipelineEventsRule")
    samples = sorted((ROOT / "events").glob("code*-*.json"))
    assert len(samples) == 9, samples  # 5 action states, 4 build states
    for sample in samples:
        assert pattern.matches_event(event(sample.name)), sample.name
    assert not pattern.matches_event(event("pipeline-job-started.json"))


def test_every_rule_target_retries_and_has_a_dead_letter_queue_except_the_alert():
    for name, rule in resources("AWS::Events::Rule").items():
        for target in rule["Properties"]["Targets"]:
            if name == "RevokeFailedRule":
                continue
            assert target["RetryPolicy"]["MaximumRetryAttempts"] > 0, name
            assert target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0] in resources("AWS::SQS::Queue"), name


def test_revoke_failed_events_go_to_the_alarm_topic():
    props = resources()["RevokeFailedRule"]["Properties"]
    assert props["EventBusName"] == {"Ref": "Bus"}
    assert props["Targets"][0]["Arn"] == {"Ref": "AlarmTopic"}
    c = code()
    pattern = pattern_of("RevokeFailedRule")
    failed = {"source": c["audit_source"], "detail-type": c["audit_detail_types"]["revoke_failed"]}
    assert pattern.matches_event(failed)
    for key, dt in c["audit_detail_types"].items():
        if key != "revoke_failed":
            assert not pattern.matches_event({"source": c["audit_source"], "detail-type": dt})
    assert not pattern.matches_event({**failed, "source": "ci.github"}), "a publisher cannot raise it"


# --- the stream -------------------------------------------------------------------------------


def stream_event() -> dict:
    return function("RevokeFunction")["Events"]["TtlRemovals"]


def test_stream_mapping_reports_item_failures_bisects_and_bounds_retries():
    ev = stream_event()
    assert ev["Type"] == "DynamoDB"
    props = ev["Properties"]
    assert props["Stream"] == {"Fn::GetAtt": ["Table", "StreamArn"]}
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["BisectBatchOnFunctionError"] is True
    assert 0 <= props["MaximumRetryAttempts"] <= 10
    assert 60 <= props["MaximumRecordAgeInSeconds"] <= 86400
    assert props["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["RevokeFailureQueue", "Arn"]}


def test_a_full_batch_fits_the_timeout_with_room_for_the_deadline_margin():
    """A batch's records run RECORD_CONCURRENCY at a time; none starts in the last
    DEADLINE_MARGIN seconds, which must leave room for the timeout and for work to happen."""
    r = code()["revoke"]
    props = stream_event()["Properties"]
    timeout = function("RevokeFunction")["Timeout"]
    assert 1 <= props["BatchSize"] <= 1000
    assert 0 < props["MaximumBatchingWindowInSeconds"] <= 30
    assert props["ParallelizationFactor"] == 1
    # Three calls a record, each bounded to 10 s: the margin covers the slowest one in flight.
    assert r["deadline_margin_secs"] >= 10
    assert timeout >= 2 * r["deadline_margin_secs"]
    assert r["record_concurrency"] >= 2


def stream_filter() -> EventPattern:
    [f] = stream_event()["Properties"]["FilterCriteria"]["Filters"]
    return EventPattern.load(f["Pattern"])


def test_stream_filter_names_the_codes_attributes():
    t = code()["table"]
    old_image = json.loads(stream_event()["Properties"]["FilterCriteria"]["Filters"][0]["Pattern"])["dynamodb"]["OldImage"]
    assert set(old_image) == {t["record_type"], t["status"]}


def test_stream_filter_accepts_ttl_removals_of_active_grants():
    records = event("dynamodb-stream-ttl-remove.json")["Records"]
    assert records
    for record in records:
        assert stream_filter().matches_event(record), record["eventID"]


def test_stream_filter_accepts_every_live_status_the_code_has():
    [record] = event("dynamodb-stream-ttl-remove.json")["Records"][:1]
    old = record["dynamodb"]["OldImage"]
    for status in code()["live_statuses"]:
        live = {**record, "dynamodb": {**record["dynamodb"], "OldImage": {**old, "status": {"S": status}}}}
        assert stream_filter().matches_event(live), status


@pytest.mark.parametrize("fixture", ["user-remove", "insert", "modify"])
def test_stream_filter_rejects_everything_else(fixture):
    records = event(f"dynamodb-stream-{fixture}.json")["Records"]
    assert records
    for record in records:
        assert not stream_filter().matches_event(record), record["eventID"]


def test_stream_filter_rejects_ttl_removals_of_other_items_and_revoked_grants():
    [record] = event("dynamodb-stream-ttl-remove.json")["Records"]
    old = record["dynamodb"]["OldImage"]
    for change in ({"record_type": {"S": "job"}}, {"status": {"S": "revoked"}}, {"status": {"S": "failed"}}):
        other = {**record, "dynamodb": {**record["dynamodb"], "OldImage": {**old, **change}}}
        assert not stream_filter().matches_event(other), change


# --- the sweep schedule -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "event_name,fixture,schedule,task",
    [
        ("Sweep", "scheduled-sweep.json", "SweepSchedule", "sweep"),
        ("DriftRepair", "scheduled-drift-repair.json", "DriftRepairSchedule", "drift"),
    ],
)
def test_each_sweep_schedule_input_is_its_fixture_and_it_retries_into_a_dead_letter_queue(
    event_name, fixture, schedule, task
):
    ev = function("SweepFunction")["Events"][event_name]
    assert ev["Type"] == "ScheduleV2"
    props = ev["Properties"]
    assert json.loads(props["Input"]) == event(fixture)
    assert event(fixture)["detail-type"] == code()["schedule_detail_types"][task]
    assert props["ScheduleExpression"] == {"Ref": schedule}
    assert props["RetryPolicy"]["MaximumRetryAttempts"] > 0
    assert props["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["SweepDeadLetterQueue", "Arn"]}


def test_schedule_defaults_sweep_every_minute_and_repair_drift_more_slowly():
    assert default("SweepSchedule") == "rate(1 minute)"
    assert default("DriftRepairSchedule") == "rate(5 minutes)"
    for param in ("SweepSchedule", "DriftRepairSchedule"):
        assert re.fullmatch(template()["Parameters"][param]["AllowedPattern"], default(param))


def test_the_sweep_timeout_leaves_its_deadline_margin_inside_a_minute():
    """Each run's lease lasts until its deadline and 5 s more; with the timeout under a minute
    less that, a dead run never blocks the next minute's run."""
    timeout = function("SweepFunction")["Timeout"]
    assert timeout + 5 < 60
    assert timeout > code()["sweep_deadline_margin_secs"]


# --- least privilege --------------------------------------------------------------------------

# Every action each function role holds. Widening one is a deliberate change to this list.
EXPECTED_ACTIONS = {
    "GrantRole": {
        "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:GetItem", "dynamodb:BatchGetItem",
        "iam:PutRolePolicy", "iam:DeleteRolePolicy",
        # Role resolution: its real ARN, its boundary, its own inline policies' sizes.
        "iam:GetRole", "iam:ListRolePolicies", "iam:GetRolePolicy",
        # Native starts confirmed with their service (latch_aws::native): one read each.
        "codebuild:BatchGetBuilds", "codepipeline:GetPipelineExecution",
        "events:PutEvents",
        "sqs:SendMessage",
        "logs:CreateLogStream", "logs:PutLogEvents",
    },
    "RevokeRole": {
        # GetItem: the consistent read confirming a TTL record's grant item is gone.
        "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:GetItem",
        "dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams",
        "iam:DeleteRolePolicy",
        "events:PutEvents",
        "sqs:SendMessage",
        "logs:CreateLogStream", "logs:PutLogEvents",
    },
    "SweepRole": {
        "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:GetItem", "dynamodb:DeleteItem",
        "iam:DeleteRolePolicy", "iam:ListRolePolicies", "iam:GetRolePolicy", "iam:ListRoles",
        "events:PutEvents",
        "sqs:SendMessage",
        "logs:CreateLogStream", "logs:PutLogEvents",
    },
}

ELEVATABLE = {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:role${ElevatableRolePath}*"}
# The runs a native start is confirmed against: this account's and region's builds and pipelines.
NATIVE_RUNS = [
    {"Fn::Sub": "arn:${AWS::Partition}:codebuild:${AWS::Region}:${AWS::AccountId}:project/*"},
    {"Fn::Sub": "arn:${AWS::Partition}:codepipeline:${AWS::Region}:${AWS::AccountId}:*"},
]


def _as_list(x):
    return x if isinstance(x, list) else [x]


def actions_of(stmt: dict) -> list[str]:
    return _as_list(stmt["Action"])


def role_statements(role: str) -> list[dict]:
    out = []
    for res in resources().values():
        props = res.get("Properties", {})
        if res["Type"] == "AWS::IAM::RolePolicy" and props["RoleName"] == {"Ref": role}:
            out += props["PolicyDocument"]["Statement"]
        elif res["Type"] == "AWS::IAM::Policy" and {"Ref": role} in props["Roles"]:
            out += props["PolicyDocument"]["Statement"]
    inline = resources()[role]["Properties"]
    assert "Policies" not in inline and "ManagedPolicyArns" not in inline, role
    return out


def allows(role: str) -> list[dict]:
    return [s for s in role_statements(role) if s["Effect"] == "Allow"]


@pytest.mark.parametrize("role", EXPECTED_ACTIONS)
def test_each_role_holds_exactly_the_calls_its_code_makes(role):
    held = {a for s in allows(role) for a in actions_of(s)}
    assert held == EXPECTED_ACTIONS[role]
    # Its only Deny is the audit items' (below): denies narrow, they never hold a call.
    denies = [s for s in role_statements(role) if s["Effect"] != "Allow"]
    assert [s["Sid"] for s in denies] == ["AuditItemsAreCreateOnly"]


@pytest.mark.parametrize("role", EXPECTED_ACTIONS)
def test_each_action_is_on_latchs_own_resources_only(role):
    for s in allows(role):
        resources_ = _as_list(s["Resource"])
        for action in actions_of(s):
            assert "*" not in action, action
            service = action.split(":")[0]
            if action == "iam:ListRoles":
                assert resources_ == ["*"]  # no resource-level permissions exist for it
            elif service == "iam":
                assert resources_ == [ELEVATABLE], action
            elif service == "dynamodb":
                assert all(
                    r in ({"Fn::GetAtt": ["Table", "Arn"]}, {"Fn::GetAtt": ["Table", "StreamArn"]})
                    or (isinstance(r, dict) and r.get("Fn::Sub", "").startswith("${Table.Arn}/index/"))
                    for r in resources_
                ), action
            elif service in ("codebuild", "codepipeline"):
                assert resources_ == NATIVE_RUNS, action
            elif service == "events":
                assert resources_ == [{"Fn::GetAtt": ["Bus", "Arn"]}], action
                assert s["Condition"] == {"StringEquals": {"events:source": code()["audit_source"]}}
            else:
                assert "*" not in resources_, action


def test_no_wildcard_iam_anywhere_in_allow_statements():
    for name, res in resources().items():
        text = json.dumps(res)
        assert '"iam:*"' not in text, name


def test_function_roles_are_outside_the_elevatable_path():
    path = default("ElevatableRolePath")
    assert path != "/" and re.fullmatch(template()["Parameters"]["ElevatableRolePath"]["AllowedPattern"], "/") is None
    for logical_id in FUNCTIONS:
        role = resources()[logical_id]["Properties"]["Role"]["Fn::GetAtt"][0]
        role_path = resources()[role]["Properties"].get("Path", "/")
        assert not role_path.startswith(path), role
        assert "Policies" not in resources()[logical_id]["Properties"], "SAM must not manage the role"


# --- failure queues, alarms, checkov skips ----------------------------------------------------


def test_every_failure_queue_is_alarmed_to_the_topic():
    alarmed = {
        a["Properties"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        for a in resources("AWS::CloudWatch::Alarm").values()
        if a["Properties"]["Namespace"] == "AWS/SQS" and {"Ref": "AlarmTopic"} in a["Properties"]["AlarmActions"]
    }
    assert alarmed == set(resources("AWS::SQS::Queue"))


def test_every_checkov_skip_is_justified():
    skips = [
        (name, s)
        for name, res in resources().items()
        for s in res.get("Metadata", {}).get("checkov", {}).get("skip", [])
    ]
    assert skips
    for name, s in skips:
        assert re.fullmatch(r"CKV2?_AWS_\d+", s["id"]), name
        assert len(s.get("comment", "")) >= 40, f"{name} {s['id']}: say why"


def test_samconfig_enables_the_cargo_lambda_beta():
    cfg = tomllib.loads((ROOT / "samconfig.toml").read_text())
    assert cfg["default"]["build"]["parameters"]["beta_features"] is True


def test_the_only_roles_sam_generates_are_the_schedulers_and_they_invoke_the_sweep_only(monkeypatch):
    import copy

    from samtranslator.translator.transform import transform

    class NoManagedPolicies:
        def load(self):
            return {}

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    t = copy.deepcopy(template())
    for res in t["Resources"].values():
        for key in ("CodeUri", "ContentUri"):
            if key in res.get("Properties", {}):
                res["Properties"][key] = "s3://bucket/key"
    out = transform(t, {}, NoManagedPolicies())["Resources"]
    generated = {k: v for k, v in out.items() if k not in template()["Resources"]}
    roles = {k: v for k, v in generated.items() if v["Type"] == "AWS::IAM::Role"}
    # One per schedule: the sweep's and drift repair's.
    assert sorted(roles) == ["SweepFunctionDriftRepairRole", "SweepFunctionSweepRole"]
    for props in (r["Properties"] for r in roles.values()):
        assert "Path" not in props or not props["Path"].startswith(default("ElevatableRolePath"))
        held = {
            (a, json.dumps(s["Resource"], sort_keys=True))
            for p in props["Policies"]
            for s in p["PolicyDocument"]["Statement"]
            for a in actions_of(s)
        }
        assert held == {
            ("lambda:InvokeFunction", json.dumps({"Fn::GetAtt": ["SweepFunction", "Arn"]})),
            ("sqs:SendMessage", json.dumps({"Fn::GetAtt": ["SweepDeadLetterQueue", "Arn"]})),
        }


def test_the_boundary_admits_the_grants_propagation_probe_and_nothing_else_of_it():
    probe = code()["probe"]
    statements = resources()["ElevatableRoleBoundary"]["Properties"]["PolicyDocument"]["Statement"]
    probes = [s for s in statements if s.get("Sid") == "LatchPropagationProbe"]
    assert len(probes) == 1
    (st,) = probes
    assert st["Effect"] == "Allow" and st["Action"] == probe["action"]
    resource = st["Resource"]["Fn::Sub"] if isinstance(st["Resource"], dict) else st["Resource"]
    assert resource.endswith(":event-bus/" + probe["bus_prefix"] + "*"), resource
    assert "${AWS::AccountId}" in resource, "only buses in the role's own account"


# --- containment: a small evaluator of the template's intrinsics and of IAM matching ----------
#
# The tests below evaluate the policies the template would deploy, for given parameter values,
# the way CloudFormation resolves them (Ref, Fn::If/Select/Split/Join/Sub/GetAtt, conditions,
# AWS::NoValue) and match requests against them the way IAM does (case-insensitive actions,
# `*`/`?` wildcards in actions, ARNs and Arn*/String*Like conditions). Resource ARNs are fake but
# shaped as AWS shapes them (a SAM function of stack `latch` is named latch-<LogicalId>-<suffix>).

NO_VALUE = object()
ACCOUNT, REGION, STACK = "123456789012", "us-east-1", "latch"
BOUNDARY_ARN = {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:policy/${AWS::StackName}-elevatable-boundary"}


def fake_arn(logical_id: str) -> str:
    kind = (resources_after_sam().get(logical_id) or resources()[logical_id])["Type"]
    name = f"{STACK}-{logical_id}-AbC123dEf456"
    return {
        "AWS::Lambda::Function": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}",
        "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT}:role/{name}",
        "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{STACK}-grants",
        "AWS::SQS::Queue": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}",
        "AWS::CloudWatch::Alarm": f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{name}",
        "AWS::SNS::Topic": f"arn:aws:sns:{REGION}:{ACCOUNT}:{name}",
        "AWS::Logs::LogGroup": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{name}:*",
        "AWS::Events::EventBus": f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{STACK}",
        "AWS::Events::Rule": f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{name}",
        "AWS::Scheduler::Schedule": f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule/default/{name}",
    }.get(kind, f"arn:aws:fake:{REGION}:{ACCOUNT}:{logical_id}")


def fake_ref(logical_id: str) -> str:
    kind = (resources_after_sam().get(logical_id) or resources()[logical_id])["Type"]
    if kind in ("AWS::SNS::Topic", "AWS::IAM::ManagedPolicy"):
        return fake_arn(logical_id)
    if kind == "AWS::Lambda::EventSourceMapping":
        return "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    return f"{STACK}-{logical_id}-AbC123dEf456"


@cache
def resources_after_sam() -> dict:
    import copy

    from samtranslator.translator.transform import transform

    class NoManagedPolicies:
        def load(self):
            return {}

    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    t = copy.deepcopy(template())
    for res in t["Resources"].values():
        for key in ("CodeUri", "ContentUri"):
            if key in res.get("Properties", {}):
                res["Properties"][key] = "s3://bucket/key"
    return transform(t, {}, NoManagedPolicies())["Resources"]


class Stack:
    """The template's values for given parameters (defaults otherwise)."""

    def __init__(self, doc: dict | None = None, **params):
        self.doc = doc or template()
        self.params = {}
        for name, spec in self.doc["Parameters"].items():
            value = params.get(name, spec.get("Default"))
            if spec["Type"] == "CommaDelimitedList" and isinstance(value, str):
                value = value.split(",")
            self.params[name] = value

    def condition(self, name: str) -> bool:
        return bool(self.eval(self.doc["Conditions"][name]))

    def ref(self, name: str):
        pseudo = {
            "AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT,
            "AWS::StackName": STACK, "AWS::NoValue": NO_VALUE,
            "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{STACK}/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.params:
            return self.params[name]
        return fake_ref(name)

    def sub(self, text: str, extra: dict | None = None) -> str:
        def one(m):
            key = m.group(1)
            if extra and key in extra:
                return str(self.eval(extra[key]))
            if "." in key and not key.startswith("AWS::"):
                logical_id, attr = key.split(".", 1)
                return self.getatt(logical_id, attr)
            return str(self.ref(key))

        return re.sub(r"\$\{([^}!]+)\}", one, text)

    def getatt(self, logical_id: str, attr: str) -> str:
        if attr == "Arn":
            return fake_arn(logical_id)
        if attr == "StreamArn":
            return fake_arn(logical_id) + "/stream/2026-11-30T00:00:00.000"
        return f"{fake_ref(logical_id)}.{attr}"

    def eval(self, x):
        if isinstance(x, list):
            out = []
            for item in x:
                v = self.eval(item)
                if v is not NO_VALUE:
                    out.append(v)
            return out
        if not isinstance(x, dict):
            return x
        if len(x) == 1:
            (key, arg), = x.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Condition":
                return self.condition(arg)
            if key == "Fn::GetAtt":
                return self.getatt(*(arg if isinstance(arg, list) else arg.split(".", 1)))
            if key == "Fn::Sub":
                return self.sub(arg) if isinstance(arg, str) else self.sub(arg[0], arg[1])
            if key == "Fn::Join":
                return self.eval(arg[0]).join(self.eval(arg[1]))
            if key == "Fn::Split":
                return self.eval(arg[1]).split(self.eval(arg[0]))
            if key == "Fn::Select":
                return self.eval(arg[1])[int(self.eval(arg[0]))]
            if key == "Fn::If":
                return self.eval(arg[1] if self.condition(arg[0]) else arg[2])
            if key == "Fn::Equals":
                a, b = (self.eval(v) for v in arg)
                return str(a) == str(b)
            if key == "Fn::Not":
                return not self.eval(arg[0])
            if key == "Fn::And":
                return all(self.eval(v) for v in arg)
            if key == "Fn::Or":
                return any(self.eval(v) for v in arg)
        return {k: v for k, v in ((k, self.eval(v)) for k, v in x.items()) if v is not NO_VALUE}

    def statements(self, policy_document) -> list[dict]:
        return self.eval(policy_document)["Statement"]


def iam_match(pattern: str, value: str, ignore_case: bool = False) -> bool:
    """IAM's wildcard match: `*` any run of characters, `?` one character, nothing else special."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE if ignore_case else 0) is not None


def condition_holds(condition: dict, context: dict) -> bool:
    for op, tests in condition.items():
        for key, wanted in tests.items():
            wanted = _as_list(wanted)
            value = context.get(key)
            values = _as_list(value) if value is not None else []
            if op.startswith("ForAnyValue:"):
                base = op.split(":", 1)[1]
                if not any(condition_holds({base: {key: wanted}}, {**context, key: v}) for v in values):
                    return False
                continue
            if value is None:
                if "Not" in op:
                    continue  # a negated operator holds when the key is absent
                return False
            if op in ("StringEquals", "ArnEquals", "ArnLike", "StringLike"):
                exact = op == "StringEquals"
                if not any((w == value) if exact else iam_match(w, value) for w in wanted):
                    return False
            elif op in ("StringNotEquals", "ArnNotEquals", "ArnNotLike", "StringNotLike"):
                exact = op == "StringNotEquals"
                if any((w == value) if exact else iam_match(w, value) for w in wanted):
                    return False
            else:
                raise AssertionError(f"operator {op} not modelled")
    return True


def statement_applies(stmt: dict, action: str, resource: str, context: dict) -> bool:
    if not any(iam_match(a, action, ignore_case=True) for a in _as_list(stmt["Action"])):
        return False
    if "NotResource" in stmt:
        if any(iam_match(r, resource) for r in _as_list(stmt["NotResource"])):
            return False
    elif not any(iam_match(r, resource) for r in _as_list(stmt["Resource"])):
        return False
    return condition_holds(stmt.get("Condition", {}), context)


def denied(statements: list[dict], action: str, resource: str, context: dict | None = None) -> bool:
    return any(
        s["Effect"] == "Deny" and statement_applies(s, action, resource, context or {}) for s in statements
    )


def allowed(statements: list[dict], action: str, resource: str, context: dict | None = None) -> bool:
    ctx = context or {}
    return not denied(statements, action, resource, ctx) and any(
        s["Effect"] == "Allow" and statement_applies(s, action, resource, ctx) for s in statements
    )


def boundary(stack: Stack | None = None) -> list[dict]:
    return (stack or Stack()).statements(resources()["ElevatableRoleBoundary"]["Properties"]["PolicyDocument"])


def test_the_boundary_arn_every_reference_spells_out_is_the_boundarys_own():
    props = resources()["ElevatableRoleBoundary"]["Properties"]
    stack = Stack()
    assert props["Path"] == "/"
    assert stack.eval(BOUNDARY_ARN) == f"arn:aws:iam::{ACCOUNT}:policy/{stack.eval(props['ManagedPolicyName'])}"


def test_no_circular_dependency_after_the_sam_transform():
    # CloudFormation refuses a stack whose resources depend on each other in a cycle; cfn-lint
    # did not see the one through the functions' environment and the boundary.
    out = resources_after_sam()

    def refs(x, acc):
        if isinstance(x, dict):
            for k, v in x.items():
                if k == "Ref" and isinstance(v, str) and v in out:
                    acc.add(v)
                elif k == "Fn::GetAtt":
                    name = v[0] if isinstance(v, list) else v.split(".")[0]
                    acc.add(name)
                elif k == "Fn::Sub":
                    text = v if isinstance(v, str) else v[0]
                    acc.update(n for n in re.findall(r"\$\{([A-Za-z0-9]+)", text) if n in out)
                    if not isinstance(v, str):
                        refs(v[1], acc)
                else:
                    refs(v, acc)
        elif isinstance(x, list):
            for i in x:
                refs(i, acc)
        return acc

    graph = {}
    for name, res in out.items():
        deps = res.get("DependsOn", [])
        graph[name] = refs(res.get("Properties", {}), set()) | set(_as_list(deps))
    state: dict[str, int] = {}

    def visit(n, path):
        state[n] = 1
        for m in sorted(graph.get(n, ())):
            assert state.get(m) != 1, f"cycle: {' -> '.join([*path, n, m])}"
            if not state.get(m):
                visit(m, [*path, n])
        state[n] = 2

    for n in sorted(graph):
        if not state.get(n):
            visit(n, [])


# --- 1. the boundary, enforced by IAM -----------------------------------------------------------


def grant_role_statements(stack: Stack) -> list[dict]:
    return [s for st in role_statements("GrantRole") for s in [stack.eval(st)]]


@pytest.mark.parametrize("tag", ["false", "true"])
def test_the_grant_role_puts_policies_only_on_roles_carrying_the_boundary(tag):
    stack = Stack(RequireElevatableTag=tag)
    statements = grant_role_statements(stack)
    boundary_arn = stack.eval(BOUNDARY_ARN)
    role = f"arn:aws:iam::{ACCOUNT}:role/latch/app-deployer"
    with_boundary = {"iam:PermissionsBoundary": boundary_arn, "aws:ResourceTag/latch:elevatable": "true"}
    assert allowed(statements, "iam:PutRolePolicy", role, with_boundary)
    # A role without the boundary, or with another one: IAM refuses the put.
    assert not allowed(statements, "iam:PutRolePolicy", role, {"aws:ResourceTag/latch:elevatable": "true"})
    other = {**with_boundary, "iam:PermissionsBoundary": f"arn:aws:iam::{ACCOUNT}:policy/other"}
    assert not allowed(statements, "iam:PutRolePolicy", role, other)
    untagged = {"iam:PermissionsBoundary": boundary_arn}
    assert allowed(statements, "iam:PutRolePolicy", role, untagged) == (tag == "false")
    # Revocation works on any role under the path, boundary or not.
    assert allowed(statements, "iam:DeleteRolePolicy", role, {})
    # Never outside the path.
    assert not allowed(statements, "iam:PutRolePolicy", f"arn:aws:iam::{ACCOUNT}:role/admin", with_boundary)


def test_every_put_role_policy_statement_carries_the_boundary_condition():
    for st in role_statements("GrantRole"):
        if "iam:PutRolePolicy" in actions_of(st):
            assert actions_of(st) == ["iam:PutRolePolicy"], "DeleteRolePolicy must stay unconditioned"
            for tag in ("true", "false"):
                cond = Stack(RequireElevatableTag=tag).eval(st["Condition"])
                assert cond["StringEquals"]["iam:PermissionsBoundary"] == Stack().eval(BOUNDARY_ARN)


def latch_function_arns() -> dict[str, str]:
    return {f: fake_arn(f) for f in FUNCTIONS}


@pytest.mark.parametrize("function_id", FUNCTIONS)
def test_the_boundary_denies_every_lambda_action_on_latchs_functions_and_their_qualified_arns(function_id):
    arn = fake_arn(function_id)
    for action in ("lambda:UpdateFunctionCode", "lambda:UpdateFunctionConfiguration", "lambda:InvokeFunction",
                   "lambda:PublishVersion", "lambda:UpdateAlias", "lambda:AddPermission", "lambda:DeleteFunction",
                   "lambda:PutFunctionConcurrency", "lambda:TagResource"):
        for resource in (arn, f"{arn}:live", f"{arn}:7", f"{arn}:$LATEST"):
            assert denied(boundary(), action, resource), (action, resource)


def render(statement: dict, **values) -> list[str]:
    out = []
    for r in statement["resources"]:
        for k, v in values.items():
            r = r.replace("${" + k + "}", v)
        out.append(r)
    return out


def test_a_grant_rendered_for_pipeline_latch_matches_latchs_functions_yet_the_boundary_denies_it():
    # GIVEN the stock lambda-deploy set rendered with ${pipeline} = latch (a rule whose pipeline
    # pattern admits it), in Latch's own account, with the default stack name
    sets = yaml.safe_load((ROOT / "infra" / "policies.yaml").read_text())["permission_sets"]
    [stmt] = sets["lambda-deploy"]["statements"]
    grant = [{"Effect": "Allow", "Action": stmt["actions"],
              "Resource": render(stmt, pipeline=STACK, region=REGION, account=ACCOUNT)}]
    assert tomllib.loads((ROOT / "samconfig.toml").read_text())["default"]["global"]["parameters"]["stack_name"] == STACK
    for function_id, arn in latch_function_arns().items():
        # THEN the grant's own document would allow replacing Latch's code...
        assert allowed(grant, "lambda:UpdateFunctionCode", arn), "the rendered grant reaches Latch"
        # ...but what IAM allows is its intersection with the boundary (and the role's ceiling)
        effective = not denied(boundary(), "lambda:UpdateFunctionCode", arn) and allowed(
            boundary(), "lambda:UpdateFunctionCode", arn
        ) and allowed(grant, "lambda:UpdateFunctionCode", arn)
        assert not effective, function_id
        assert not allowed(boundary(), "lambda:UpdateFunctionCode", f"{arn}:live")
    # AND a function of the pipeline's own is still reachable through the same grant.
    own = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:latch-reports-api"
    assert allowed(grant, "lambda:UpdateFunctionCode", own) and allowed(boundary(), "lambda:UpdateFunctionCode", own)


def test_the_boundary_denies_every_write_to_latchs_table_its_stream_and_index():
    table = fake_arn("Table")
    for action in ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem",
                   "dynamodb:PartiQLUpdate", "dynamodb:DeleteTable", "dynamodb:UpdateTimeToLive",
                   "dynamodb:GetRecords", "dynamodb:Query", "dynamodb:TagResource"):
        for resource in (table, f"{table}/stream/2026-11-30T00:00:00.000", f"{table}/index/by-expiry"):
            assert denied(boundary(), action, resource), (action, resource)


def test_the_boundary_denies_the_event_source_mapping_and_the_schedule():
    esm = f"arn:aws:lambda:{REGION}:{ACCOUNT}:event-source-mapping:{fake_ref('RevokeFunctionTtlRemovals')}"
    for action in ("lambda:UpdateEventSourceMapping", "lambda:DeleteEventSourceMapping"):
        assert denied(boundary(), action, esm)
    schedule = fake_arn("SweepFunctionSweep")
    for action in ("scheduler:UpdateSchedule", "scheduler:DeleteSchedule"):
        assert denied(boundary(), action, schedule)


@pytest.mark.parametrize(
    "kind,actions",
    [
        ("AWS::SQS::Queue", ["sqs:PurgeQueue", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:SetQueueAttributes"]),
        ("AWS::CloudWatch::Alarm", ["cloudwatch:DeleteAlarms", "cloudwatch:DisableAlarmActions", "cloudwatch:PutMetricAlarm"]),
        ("AWS::SNS::Topic", ["sns:Unsubscribe", "sns:SetTopicAttributes", "sns:DeleteTopic"]),
        ("AWS::Logs::LogGroup", ["logs:DeleteLogGroup", "logs:PutRetentionPolicy", "logs:DeleteLogStream"]),
    ],
)
def test_the_boundary_denies_every_queue_alarm_topic_and_log_group_of_latch(kind, actions):
    found = [name for name, res in resources_after_sam().items() if res["Type"] == kind]
    assert found, kind
    for name in found:
        for action in actions:
            assert denied(boundary(), action, fake_arn(name)), (name, action)


def test_the_boundary_denies_changes_to_every_rule_that_feeds_or_alarms_latch():
    rules = [name for name, res in resources_after_sam().items() if res["Type"] == "AWS::Events::Rule"]
    assert {"PipelineEventsRule", "NativePipelineEventsRule", "RevokeFailedRule"} <= set(rules), rules
    for name in rules:
        props = resources()[name]["Properties"]
        # Rules on the Latch bus have ARNs under rule/<bus>/; the native one is on the default bus.
        arn = (f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{STACK}/{name}" if "EventBusName" in props
               else fake_arn(name))
        for action in ("events:PutRule", "events:DisableRule", "events:DeleteRule", "events:PutTargets",
                       "events:RemoveTargets", "events:TagResource"):
            assert denied(boundary(), action, arn), (name, action)
    assert denied(boundary(), "events:DeleteEventBus", fake_arn("Bus"))


def test_the_boundary_denies_forged_audit_events_tags_the_stack_and_the_audit_trail():
    b = boundary()
    assert denied(b, "events:PutEvents", fake_arn("Bus"), {"events:source": "latch"})
    assert not denied(b, "events:PutEvents", fake_arn("Bus"), {"events:source": "ci.github"})
    for action in ("iam:TagRole", "iam:UntagRole", "lambda:TagResource", "tag:TagResources", "s3:PutBucketTagging"):
        assert denied(b, action, "arn:aws:iam::123456789012:role/latch/app", {"aws:TagKeys": ["latch:elevatable"]})
    assert not denied(b, "s3:PutObjectTagging", "arn:aws:s3:::b/k", {"aws:TagKeys": ["team"]})
    stack_id = Stack().ref("AWS::StackId")
    for action in ("cloudformation:UpdateStack", "cloudformation:DeleteStack", "cloudformation:CreateChangeSet"):
        assert denied(b, action, stack_id)
    for action in ("cloudtrail:StopLogging", "cloudtrail:DeleteTrail"):
        assert denied(b, action, "*")
    for action in ("iam:PutRolePolicy", "iam:AttachRolePolicy", "iam:CreatePolicyVersion", "iam:CreateAccessKey",
                   "iam:UpdateAssumeRolePolicy", "iam:DeleteRolePermissionsBoundary"):
        assert denied(b, action, "arn:aws:iam::123456789012:role/latch/app"), action


@pytest.mark.parametrize("passable", ["", "arn:aws:iam::123456789012:role/ci/lambda-exec-*"])
def test_the_boundary_denies_pass_role_and_assume_role_outside_the_ceiling(passable):
    b = boundary(Stack(CeilingPassableRoles=passable, CeilingActions="iam:PassRole,sts:AssumeRole"))
    for action in ("iam:PassRole", "sts:AssumeRole", "sts:AssumeRoleWithWebIdentity"):
        assert not allowed(b, action, "arn:aws:iam::123456789012:role/admin")
        assert not allowed(b, action, "arn:aws:iam::210987654321:role/anything")
    exec_role = "arn:aws:iam::123456789012:role/ci/lambda-exec-reports"
    assert allowed(b, "iam:PassRole", exec_role) == bool(passable)


def test_the_ceiling_is_the_parameter_and_its_default_covers_the_example_policy_file():
    b = boundary()
    [ceiling] = [s for s in b if s.get("Sid") == "Ceiling"]
    assert resources()["ElevatableRoleBoundary"]["Properties"]["PolicyDocument"]["Statement"][0]["Action"] == {
        "Ref": "CeilingActions"
    }
    sets = yaml.safe_load((ROOT / "infra" / "policies.yaml").read_text())["permission_sets"]
    for name, ps in sets.items():
        for stmt in ps["statements"]:
            for action in stmt["actions"]:
                assert any(iam_match(a, action, ignore_case=True) for a in ceiling["Action"]), (name, action)
    # A platform team widens it without editing the template.
    wider = boundary(Stack(CeilingActions="s3:*,ecr:PutImage,dynamodb:*"))
    assert allowed(wider, "ecr:PutImage", "arn:aws:ecr:us-east-1:123456789012:repository/app")
    assert allowed(wider, "dynamodb:PutItem", "arn:aws:dynamodb:us-east-1:123456789012:table/app")
    assert not allowed(wider, "dynamodb:PutItem", fake_arn("Table")), "the denies stay"


# --- 3. publishers bound to their sources -------------------------------------------------------


def bus_statements(stack: Stack) -> list[dict]:
    return stack.statements(resources()["Bus"]["Properties"]["Policy"])


def may_publish(stack: Stack, principal: str, source: str) -> bool:
    """PutEvents on the bus: the bus policy's allow (or, for Latch's own roles, their identity
    policy, source latch only), and no deny in the bus policy."""
    statements = bus_statements(stack)
    bus = fake_arn("Bus")
    ctx = {"aws:PrincipalArn": principal, "events:source": source}
    if denied(statements, "events:PutEvents", bus, ctx):
        return False
    function_roles = {fake_arn(r) for r in ("GrantRole", "RevokeRole", "SweepRole")}
    if principal in function_roles:
        return source == code()["audit_source"]
    return any(
        s["Effect"] == "Allow" and principal in _as_list(s["Principal"]["AWS"])
        and statement_applies(s, "events:PutEvents", bus, ctx)
        for s in statements
    )


GITHUB = "arn:aws:iam::111122223333:role/gh-publisher"
GITLAB = "arn:aws:iam::444455556666:role/ci/gitlab=publisher"  # "=" is legal in a role name


def test_each_publisher_may_put_its_own_source_only():
    stack = Stack(Publishers=f"{GITHUB}=>ci.github,{GITLAB}=>ci.gitlab")
    assert may_publish(stack, GITHUB, "ci.github")
    assert may_publish(stack, GITLAB, "ci.gitlab")
    # The wrong-source publisher: each is denied the other's source, any other, and latch.
    assert not may_publish(stack, GITHUB, "ci.gitlab")
    assert not may_publish(stack, GITLAB, "ci.github")
    assert not may_publish(stack, GITHUB, "ci.jenkins")
    assert not may_publish(stack, GITHUB, "latch")
    # Nobody else, whatever the source.
    assert not may_publish(stack, "arn:aws:iam::111122223333:role/other", "ci.github")
    # Latch's functions publish audit events, and only those.
    assert may_publish(stack, fake_arn("GrantRole"), "latch")
    assert not may_publish(stack, fake_arn("GrantRole"), "ci.github")


def test_without_publishers_nobody_but_latch_publishes():
    stack = Stack()
    assert not any(s.get("Sid") == "ListedPublishersMayPut" for s in bus_statements(stack))
    assert not may_publish(stack, GITHUB, "ci.github")
    assert may_publish(stack, fake_arn("SweepRole"), "latch")


def test_every_one_of_the_eight_slots_binds_its_publisher():
    pairs = [(f"arn:aws:iam::1111222233{i:02d}:role/p{i}", f"ci.s{i}") for i in range(8)]
    stack = Stack(Publishers=",".join(f"{p}=>{s}" for p, s in pairs))
    for i, (principal, source) in enumerate(pairs):
        assert may_publish(stack, principal, source), i
        other = pairs[(i + 1) % 8][1]
        assert not may_publish(stack, principal, other), i
    slots = [c for c in template()["Conditions"] if c.startswith("HasPublisherSlot")]
    assert len(slots) == 8
    assert re.fullmatch(template()["Parameters"]["Publishers"]["AllowedPattern"], f"{GITLAB}=>ci.gitlab")
    assert not re.fullmatch(template()["Parameters"]["Publishers"]["AllowedPattern"], GITHUB), "a source is required"


def test_a_principal_listed_twice_publishes_nothing():
    stack = Stack(Publishers=f"{GITHUB}=>ci.github,{GITHUB}=>ci.gitlab")
    assert not may_publish(stack, GITHUB, "ci.github")
    assert not may_publish(stack, GITHUB, "ci.gitlab")


# --- 4. fair share ------------------------------------------------------------------------------


def test_the_grant_function_reserves_the_concurrency_parameter():
    props = resources()["GrantFunction"]["Properties"]
    assert Stack().eval(props["ReservedConcurrentExecutions"]) == 10 == default("GrantConcurrency")
    assert Stack(GrantConcurrency=25).eval(props["ReservedConcurrentExecutions"]) == 25
    assert "ReservedConcurrentExecutions" not in Stack(GrantConcurrency=0).eval(props)


# --- 5. audit items are create-only ------------------------------------------------------------


@pytest.mark.parametrize("role", EXPECTED_ACTIONS)
def test_no_function_role_can_update_or_delete_an_audit_item(role):
    statements = [Stack().eval(s) for s in role_statements(role)]
    table = fake_arn("Table")
    audit_key = code()["table"]["audit_pk_prefix"] + "0123abcd"
    assert code()["table"]["audit_pk_prefix"] == "AUDIT#"
    for action in ("dynamodb:UpdateItem", "dynamodb:DeleteItem"):
        assert not allowed(statements, action, table, {"dynamodb:LeadingKeys": [audit_key]}), action
    # Creating one stays allowed, and so do the role's writes of other items.
    assert allowed(statements, "dynamodb:PutItem", table, {"dynamodb:LeadingKeys": [audit_key]})
    held = EXPECTED_ACTIONS[role]
    for action in ("dynamodb:UpdateItem", "dynamodb:DeleteItem"):
        if action in held:
            assert allowed(statements, action, table, {"dynamodb:LeadingKeys": ["GRANT#0123abcd"]}), action


# --- the organisation SCP (infra/scp) -------------------------------------------------------------


def scp_statements() -> list[dict]:
    doc = yaml.load((ROOT / "infra" / "scp" / "latch-scp.yaml").read_text(), Loader=CfnLoader)
    outputs = {k: Stack().eval(v["Value"]) for k, v in template()["Outputs"].items()}
    stack = Stack(
        doc,
        TargetIds="ou-abcd-12345678",
        LatchFunctionArns=outputs["FunctionArns"],
        ScheduleRoleArn=outputs["ScheduleRoleArn"],
        LatchTableArn=outputs["TableArn"],
        LatchFunctionRoleArns=outputs["FunctionRoleArns"],
    )
    [policy] = doc["Resources"].values()
    assert policy["Properties"]["Type"] == "SERVICE_CONTROL_POLICY"
    return stack.statements(policy["Properties"]["Content"])


@pytest.mark.parametrize("function_id", FUNCTIONS)
def test_the_scp_denies_direct_invocation_of_every_latch_function_but_the_schedulers(function_id):
    scp = scp_statements()
    arn = fake_arn(function_id)
    admin = {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/Admin"}
    for resource in (arn, f"{arn}:live", f"{arn}:3"):
        assert denied(scp, "lambda:InvokeFunction", resource, admin), resource
    scheduler = {"aws:PrincipalArn": fake_arn("SweepFunctionSweepRole")}
    assert not denied(scp, "lambda:InvokeFunction", arn, scheduler)
    assert not denied(scp, "lambda:InvokeFunction", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:other", admin)


def test_the_scp_lets_only_latchs_roles_write_its_table():
    scp = scp_statements()
    table = fake_arn("Table")
    for action in ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"):
        assert denied(scp, action, table, {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/Admin"}), action
        for role in ("GrantRole", "RevokeRole", "SweepRole"):
            assert not denied(scp, action, table, {"aws:PrincipalArn": fake_arn(role)}), (action, role)
    # CloudFormation still manages the table.
    assert not denied(scp, "dynamodb:UpdateTable", table, {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/Deployer"})


def test_the_native_adapter_makes_only_the_reads_the_grant_role_holds():
    adapter = (ROOT / "crates/latch-aws/src/native.rs").read_text()
    calls = set(re.findall(r"\.(batch_get_builds|get_pipeline_execution)\(\)", adapter))
    assert calls == {"batch_get_builds", "get_pipeline_execution"}
    other_sdk_calls = re.findall(r"self\s*\.(codebuild|codepipeline)\s*\.(\w+)\(\)", adapter)
    assert {c for _, c in other_sdk_calls} == calls
    held = {a for s in role_statements("GrantRole") for a in actions_of(s)}
    assert {"codebuild:BatchGetBuilds", "codepipeline:GetPipelineExecution"} <= held
