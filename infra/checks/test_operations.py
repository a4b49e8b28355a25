"""Operations in template.yaml agree with the code and the sample events.

- Metrics: every Latch metric the dashboard and the alarms name is one the code emits
  (`latch_core::metrics::Metric`, printed by the template_constants example), with the dimension
  the code gives it; every metric the code emits is on the dashboard.
- Notifications: each rule's pattern matches its sample audit event in events/ (and no other
  decision), and each message, rendered from that sample by the emulator's own input-transformer
  implementation (moto.events.utils.EventTemplateParser), for every webhook kind, is the JSON the
  webhook takes, naming what the operator needs.

Run by scripts/checks/template.sh with the parity test (pytest from .venv/tools).
"""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
from moto.events.utils import EventTemplateParser
from test_template_parity import EVENTS, code, event, resources, template

SAMPLES = {
    "denied": "audit-grant-denied.json",
    "activated": "audit-grant-activated.json",
    "revoke_failed": "audit-revoke-failed.json",
    "drift_repaired": "audit-drift-repaired.json",
}


def catalogue() -> dict[str, dict]:
    m = code()["metrics"]
    assert m["namespace"] == "Latch"
    return {c["name"]: c for c in m["catalogue"]}


# --- metrics ---------------------------------------------------------------------------------


def dashboard() -> dict:
    body = resources()["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"][0]
    # ${...} are CloudFormation substitutions (region, function names, alarm ARNs).
    return json.loads(re.sub(r"\$\{[^}]+\}", "X", body))


def dashboard_metrics() -> list[list]:
    out = []
    for w in dashboard()["widgets"]:
        for m in w["properties"].get("metrics", []):
            if isinstance(m[0], str):
                out.append(m)
    return out


def search_expressions() -> list[str]:
    return [
        m[0]["expression"]
        for w in dashboard()["widgets"]
        for m in w["properties"].get("metrics", [])
        if isinstance(m[0], dict) and "expression" in m[0]
    ]


def test_every_latch_metric_on_the_dashboard_is_one_the_code_emits_with_its_dimension():
    cat = catalogue()
    for m in dashboard_metrics():
        if m[0] != "Latch":
            continue
        name, rest = m[1], [x for x in m[2:] if isinstance(x, str)]
        assert name in cat, name
        dims = rest[0::2]
        assert dims in ([], [cat[name]["dimension"]]), (name, dims)
    for expr in search_expressions():
        [(dims, name)] = re.findall(r"\{Latch,([^}]*)\} MetricName=\"(\w+)\"", expr)
        assert name in cat and dims == cat[name]["dimension"], expr


def test_every_metric_the_code_emits_is_on_the_dashboard():
    shown = {m[1] for m in dashboard_metrics() if m[0] == "Latch"}
    shown |= {n for e in search_expressions() for n in re.findall(r"MetricName=\"(\w+)\"", e)}
    assert shown == set(catalogue())


def test_every_latch_alarm_names_an_emitted_metric_and_goes_to_the_topic():
    cat = catalogue()
    latch_alarms = {
        k: a["Properties"] for k, a in resources("AWS::CloudWatch::Alarm").items() if a["Properties"]["Namespace"] == "Latch"
    }
    assert {"DriftRepairsAlarm", "SweepBacklogAlarm", "SweepLagAlarm"} <= set(latch_alarms)
    for name, props in latch_alarms.items():
        assert props["MetricName"] in cat, name
        assert "Dimensions" not in props, f"{name}: the code publishes a total without dimensions"
        assert props["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
        assert props["TreatMissingData"] == "notBreaching", name


def test_the_dashboard_shows_every_alarm():
    body = resources()["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"][0]
    shown = set(re.findall(r"\$\{(\w+)\.Arn\}", body))
    assert shown == set(resources("AWS::CloudWatch::Alarm"))


# --- notifications ---------------------------------------------------------------------------

NOTIFY_RULES = {
    "NotifyDeniedRule": "denied",
    "NotifySensitiveGrantRule": "activated",
    "NotifyRevokeFailedRule": "revoke_failed",
    "NotifyDriftRepairedRule": "drift_repaired",
}


def sample(decision: str) -> dict:
    return event(SAMPLES[decision])


@pytest.mark.parametrize("decision", SAMPLES)
def test_sample_audit_events_are_what_the_code_publishes(decision):
    ev = sample(decision)
    c = code()
    assert ev["source"] == c["audit_source"]
    assert ev["detail-type"] == c["audit_detail_types"][decision]
    assert ev["detail"]["decision"] == decision
    schema = json.loads((EVENTS / "schemas" / "audit-record.schema.json").read_text())
    jsonschema.validate(ev["detail"], schema)




@pytest.mark.parametrize("rule,decision", NOTIFY_RULES.items())
def test_each_notification_rule_matches_its_decision_only(rule, decision):
    props = resources()[rule]["Properties"]
    assert resources()[rule]["Condition"] == "HasWebhook"
    assert props["EventBusName"] == {"Ref": "Bus"}
    pattern = json.loads(json.dumps(props["EventPattern"]))
    if rule == "NotifySensitiveGrantRule":
        assert pattern["detail"]["permission_set"] == {"Ref": "NotifyPermissionSets"}
        pattern["detail"]["permission_set"] = [sample("activated")["detail"]["permission_set"]]
    from moto.events.models import EventPattern

    matcher = EventPattern.load(json.dumps(pattern))
    assert matcher.matches_event(sample(decision))
    for other in SAMPLES:
        if other != decision:
            assert not matcher.matches_event(sample(other)), other
    assert not matcher.matches_event({**sample(decision), "source": "ci.github"}), "a publisher cannot notify"


def test_sensitive_grants_are_only_the_listed_sets():
    pattern = json.loads(json.dumps(resources()["NotifySensitiveGrantRule"]["Properties"]["EventPattern"]))
    pattern["detail"]["permission_set"] = ["-"]  # the parameter's default: none
    from moto.events.models import EventPattern

    assert not EventPattern.load(json.dumps(pattern)).matches_event(sample("activated"))
    assert template()["Parameters"]["NotifyPermissionSets"]["Default"] == "-"


def render(rule: str, kind: str, ev: dict) -> str:
    """The rule target's message for a webhook kind, as EventBridge builds it."""
    [target] = resources()[rule]["Properties"]["Targets"]
    transformer = target["InputTransformer"]
    template_ = transformer["InputTemplate"]
    if isinstance(template_, dict):
        cond, generic, text = template_["Fn::If"]
        assert cond == "GenericWebhook"
        template_ = generic if kind == "generic" else text
    return EventTemplateParser.parse(template_, transformer["InputPathsMap"], {**ev, "ingestion-time": ev["time"]})


@pytest.mark.parametrize("kind", ["slack", "teams", "generic"])
@pytest.mark.parametrize("rule,decision", NOTIFY_RULES.items())
def test_each_message_renders_from_its_sample_as_the_webhooks_json(rule, decision, kind):
    ev = sample(decision)
    message = render(rule, kind, ev)
    assert isinstance(message, dict)
    text = message["text"]
    assert "<" not in text, f"a placeholder left unfilled: {text}"
    d = ev["detail"]
    if kind == "generic":
        assert message["decision"] == decision
        for k, v in message.items():
            if k in d:
                assert v == d[k], k
    else:
        assert set(message) == {"text"}, "Slack and Teams incoming webhooks take {text}"
    # What an operator needs to act, by decision.
    need = {
        "denied": ["reason", "role_arn", "pipeline"],
        "activated": ["permission_set", "role_arn", "pipeline", "expires_at"],
        "revoke_failed": ["grant_id", "role_arn", "detail"],
        "drift_repaired": ["policy_name", "role_arn"],
    }[decision]
    for field in need:
        assert d[field] in text or (kind == "generic" and message.get(field) == d[field]), field


def test_the_revoke_failed_alarm_message_says_which_grant_which_role_and_what_iam_answered():
    [target] = resources()["RevokeFailedRule"]["Properties"]["Targets"]
    t = target["InputTransformer"]
    ev = sample("revoke_failed")
    message = EventTemplateParser.parse(t["InputTemplate"], t["InputPathsMap"], {**ev, "ingestion-time": ev["time"]})
    d = ev["detail"]
    for value in (d["grant_id"], d["role_arn"], d["detail"], d["expires_at"]):
        assert value in message
    assert "<" not in message


def test_notifications_invoke_only_the_destination_and_fail_into_an_alarmed_queue():
    role = resources()["NotifyRole"]["Properties"]
    [policy] = role["Policies"]
    [stmt] = policy["PolicyDocument"]["Statement"]
    assert stmt["Action"] == "events:InvokeApiDestination"
    assert stmt["Resource"] == {"Fn::GetAtt": ["NotifyDestination", "Arn"]}
    for rule in NOTIFY_RULES:
        [target] = resources()[rule]["Properties"]["Targets"]
        assert target["Arn"] == {"Fn::GetAtt": ["NotifyDestination", "Arn"]}
        assert target["RoleArn"] == {"Fn::GetAtt": ["NotifyRole", "Arn"]}
        assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["NotifyDeadLetterQueue", "Arn"]}
    dest = resources()["NotifyDestination"]["Properties"]
    assert dest["InvocationEndpoint"] == {"Ref": "NotifyWebhookUrl"} and dest["HttpMethod"] == "POST"
    assert template()["Parameters"]["NotifyWebhookUrl"]["NoEcho"] is True
    assert template()["Parameters"]["NotifyWebhookUrl"]["Default"] == ""
