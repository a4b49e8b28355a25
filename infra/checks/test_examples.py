"""The copy-paste pieces in examples/aws/ work as printed: each is valid (JSON without duplicate
keys, TOML), and each agrees with the template and the shipped policy file it goes with.

- the elevatable role's trust policies (GitHub, GitLab): web identity only, the audience and a
  fully pinned `sub` (StringEquals, no wildcard) of a repository / project the policy file's
  rule for that role admits;
- the publisher's policy: PutEvents on the template's bus pinned to a source the policy file's
  rules trust, GetItem on the stack's table;
- samconfig.toml: its parameter_overrides, parsed by the SAM CLI's own parser, name only the
  template's parameters with values their AllowedPattern / AllowedValues accept; its publisher is
  the one deploy.yml assumes, bound to the publisher policy's source; the boundary's ceiling
  covers every action of the policy file's permission sets.

Run by scripts/checks/template.sh (pytest from .venv/tools).
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from functools import cache
from pathlib import Path

import pytest
import yaml
from samcli.cli.types import CfnParameterOverridesType
from test_template_parity import template

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "aws"
ACCOUNT = "123456789012"


def strict_json(path: Path):
    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), f"{path.name}: duplicate key in {keys}"
        return dict(pairs)

    return json.loads(path.read_text(), object_pairs_hook=no_duplicates)


@cache
def policy_file() -> dict:
    return yaml.safe_load((ROOT / "infra" / "policies.yaml").read_text())


@cache
def samconfig() -> dict:
    return tomllib.loads((EXAMPLES / "samconfig.toml").read_text())


def overrides() -> dict[str, str]:
    raw = samconfig()["default"]["deploy"]["parameters"]["parameter_overrides"]
    values = tuple(raw) if isinstance(raw, list) else (raw,)
    return CfnParameterOverridesType().convert(values, None, None)


def rules_for_role(role: str) -> list[dict]:
    return [r for r in policy_file()["rules"] if any(fnmatch.fnmatchcase(role, p) for p in r["roles"])]


def as_list(v):
    return v if isinstance(v, list) else [v]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.name)
def test_each_json_piece_is_an_iam_policy_without_duplicate_keys(path):
    doc = strict_json(path)
    assert doc["Version"] == "2012-10-17"
    assert doc["Statement"], path.name


@pytest.mark.parametrize(
    ("file", "provider", "role", "claim", "sub_pattern"),
    [
        (
            "deploy-role-trust-github.json",
            "token.actions.githubusercontent.com",
            f"arn:aws:iam::{ACCOUNT}:role/latch/app-deployer",
            "repository",
            r"^repo:(?P<subject>[\w.-]+/[\w.-]+):environment:[\w.-]+$",
        ),
        (
            "deploy-role-trust-gitlab.json",
            "gitlab.com",
            f"arn:aws:iam::{ACCOUNT}:role/latch/ci-deployer",
            "project_path",
            r"^project_path:(?P<subject>[\w./-]+):ref_type:branch:ref:[\w./-]+$",
        ),
    ],
)
def test_the_trust_policy_admits_one_pinned_subject_the_roles_rule_admits(file, provider, role, claim, sub_pattern):
    (statement,) = strict_json(EXAMPLES / file)["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Principal"] == {"Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/{provider}"}
    # Only exact matches: a StringLike (or a wildcard) would admit other repositories' jobs.
    assert list(statement["Condition"]) == ["StringEquals"], statement["Condition"]
    condition = statement["Condition"]["StringEquals"]
    assert condition[f"{provider}:aud"] == "sts.amazonaws.com"
    sub = condition[f"{provider}:sub"]
    assert "*" not in sub and "?" not in sub, sub
    subject = re.match(sub_pattern, sub)
    assert subject, sub
    rules = rules_for_role(role)
    assert rules, f"no rule of infra/policies.yaml names {role}"
    assert any(fnmatch.fnmatchcase(subject["subject"], p) for r in rules for p in as_list(r["claims"][claim])), (
        f"{sub}: no rule for {role} admits {claim} {subject['subject']}"
    )


def test_the_publisher_may_put_only_its_source_on_the_templates_bus_and_read_the_table():
    statements = {s["Sid"]: s for s in strict_json(EXAMPLES / "publisher-policy-github.json")["Statement"]}
    put = statements["PublishOwnSourceOnly"]
    bus = overrides()["BusName"]
    assert re.fullmatch(template()["Parameters"]["BusName"]["AllowedPattern"], bus)
    assert put["Action"] == "events:PutEvents"
    assert put["Resource"] == f"arn:aws:events:us-east-1:{ACCOUNT}:event-bus/{bus}"
    source = put["Condition"]["StringEquals"]["events:source"]
    assert any(source in r["sources"] for r in policy_file()["rules"]), source
    read = statements["ReadTheDecision"]
    assert read["Action"] == "dynamodb:GetItem"
    # The template names the table after the stack: !Sub ${AWS::StackName}-grants.
    table = template()["Resources"]["Table"]["Properties"]["TableName"]
    stack = samconfig()["default"]["global"]["parameters"]["stack_name"]
    assert read["Resource"] == f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/" + table["Fn::Sub"].replace(
        "${AWS::StackName}", stack
    )


def test_samconfig_names_only_template_parameters_with_values_they_accept():
    parameters = template()["Parameters"]
    for key, value in overrides().items():
        assert key in parameters, f"samconfig.toml: {key} is not a parameter of template.yaml"
        spec = parameters[key]
        items = value.split(",") if spec["Type"] == "CommaDelimitedList" else [value]
        for item in items:
            if "AllowedPattern" in spec:
                assert re.fullmatch(spec["AllowedPattern"], item), f"{key}: {item!r}"
            if "AllowedValues" in spec:
                assert item in [str(v) for v in spec["AllowedValues"]], f"{key}: {item!r}"


def test_samconfig_binds_the_workflows_publisher_to_the_publisher_policys_source():
    workflow = yaml.safe_load((ROOT / "examples" / "github-actions" / "deploy.yml").read_text())
    steps = workflow["jobs"]["deploy"]["steps"]
    publisher = next(s["with"]["role-to-assume"] for s in steps if "configure-aws-credentials" in s.get("uses", ""))
    put = strict_json(EXAMPLES / "publisher-policy-github.json")["Statement"][0]
    assert overrides()["Publishers"] == f"{publisher}=>{put['Condition']['StringEquals']['events:source']}"


def test_samconfig_ceiling_covers_every_action_of_the_policy_files_permission_sets():
    ceiling = overrides()["CeilingActions"].split(",")
    for name, pset in policy_file()["permission_sets"].items():
        for statement in pset["statements"]:
            for action in statement["actions"]:
                assert any(fnmatch.fnmatchcase(action, c) for c in ceiling), f"{name}: {action} is over the ceiling"


def test_the_deploy_guide_includes_each_piece_by_path():
    guide = (ROOT / "docs" / "deploy.md").read_text()
    for piece in EXAMPLES.iterdir():
        assert f"examples/aws/{piece.name}" in guide, f"docs/deploy.md does not point at {piece.name}"
