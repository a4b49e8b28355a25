"""template.yaml and the code agree.

Names come from the code itself: `cargo run -p sweep --example template_constants` prints them
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
    for name in ("LATCH_DRIFT_GRACE", "LATCH_SWEEP_CONCURRENCY"):
        env[name] = str(sweep_env[name])
    out = subprocess.run(
        [
            "cargo", "run", "--quiet", "-p", "sweep", "--example", "template_constants", "--",
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
        "SweepFunction": common | {c["policy_path"], c["drift_grace"], c["sweep_concurrency"]},
    }
    for logical_id, names in want.items():
        env = function(logical_id)["Environment"]["Variables"]
        assert set(env) == names, logical_id
        assert env[c["table"]] == {"Ref": "Table"}
        assert env[c["bus"]] == {"Ref": "Bus"}
        assert env["RUST_LOG"] == {"Ref": "LogLevel"}
        assert env[c["boundary_arn"]] == {"Ref": "ElevatableRoleBoundary"}
        # The stack's own id, in every policy name: two stacks never share a namespace.
        assert "AWS::StackId" in json.dumps(env[c["deployment"]])


def test_sweep_settings_in_the_template_parse_with_the_sweeps_own_parser():
    s = code()["sweep_settings"]
    assert s["ok"], s
    assert s["drift_grace_secs"] > 0 and 1 <= s["concurrency"] <= 64


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
    assert props["StreamSpecification"] == {"StreamViewType": "OLD_IMAGE"}
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


def test_sweep_schedule_input_is_the_fixture_and_it_retries_into_a_dead_letter_queue():
    ev = function("SweepFunction")["Events"]["Sweep"]
    assert ev["Type"] == "ScheduleV2"
    props = ev["Properties"]
    assert json.loads(props["Input"]) == event("scheduled-sweep.json")
    assert props["ScheduleExpression"] == {"Ref": "SweepSchedule"}
    assert default("SweepSchedule") == "rate(1 minute)"
    assert props["RetryPolicy"]["MaximumRetryAttempts"] > 0
    assert props["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["SweepDeadLetterQueue", "Arn"]}


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
        "dynamodb:PutItem", "dynamodb:UpdateItem",
        "dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams",
        "iam:DeleteRolePolicy",
        "events:PutEvents",
        "sqs:SendMessage",
        "logs:CreateLogStream", "logs:PutLogEvents",
    },
    "SweepRole": {
        "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:GetItem", "dynamodb:DeleteItem",
        "iam:DeleteRolePolicy", "iam:ListRolePolicies", "iam:ListRoles",
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


@pytest.mark.parametrize("role", EXPECTED_ACTIONS)
def test_each_role_holds_exactly_the_calls_its_code_makes(role):
    statements = role_statements(role)
    assert all(s["Effect"] == "Allow" for s in statements)
    held = {a for s in statements for a in actions_of(s)}
    assert held == EXPECTED_ACTIONS[role]


@pytest.mark.parametrize("role", EXPECTED_ACTIONS)
def test_each_action_is_on_latchs_own_resources_only(role):
    for s in role_statements(role):
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
        if {"Ref": "AlarmTopic"} in a["Properties"]["AlarmActions"]
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
        assert re.fullmatch(r"CKV_AWS_\d+", s["id"]), name
        assert len(s.get("comment", "")) >= 40, f"{name} {s['id']}: say why"


def test_samconfig_enables_the_cargo_lambda_beta():
    cfg = tomllib.loads((ROOT / "samconfig.toml").read_text())
    assert cfg["default"]["build"]["parameters"]["beta_features"] is True


def test_the_only_role_sam_generates_is_the_schedulers_and_it_invokes_the_sweep_only(monkeypatch):
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
    assert list(roles) == ["SweepFunctionSweepRole"]
    props = roles["SweepFunctionSweepRole"]["Properties"]
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


def test_the_native_adapter_makes_only_the_reads_the_grant_role_holds():
    adapter = (ROOT / "crates/latch-aws/src/native.rs").read_text()
    calls = set(re.findall(r"\.(batch_get_builds|get_pipeline_execution)\(\)", adapter))
    assert calls == {"batch_get_builds", "get_pipeline_execution"}
    other_sdk_calls = re.findall(r"self\s*\.(codebuild|codepipeline)\s*\.(\w+)\(\)", adapter)
    assert {c for _, c in other_sdk_calls} == calls
    held = {a for s in role_statements("GrantRole") for a in actions_of(s)}
    assert {"codebuild:BatchGetBuilds", "codepipeline:GetPipelineExecution"} <= held
