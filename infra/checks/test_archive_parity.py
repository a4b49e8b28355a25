"""template.yaml's audit archive and the code agree.

The archive path in AWS is the template's EventBridge Pipe (table stream -> filter -> input
template) and Firehose stream (partition query -> prefix -> S3). None of it is Latch's code, and
the emulator has none of those services: a stand-in (crates/latch-aws/src/archive.rs) applies
the strings of crates/latch-core/src/archive.rs instead. These tests hold the template to those
very strings, check the filter's verdicts with EventBridge's own matcher (moto's EventPattern)
against the Rust evaluator's on every stream sample, and check the bucket's lock and the two
roles' permissions.

Run by scripts/checks/template.sh (pytest from .venv/tools).
"""

from __future__ import annotations

import json
import subprocess
from functools import cache
from pathlib import Path

import pytest
from moto.events.models import EventPattern
from test_template_parity import EVENTS, ROOT, resources, template

STREAM_SAMPLES = sorted(EVENTS.glob("dynamodb-stream-*.json"))


@cache
def contract() -> dict:
    # No `-p`: cargo then resolves features over the whole workspace, as ./scripts/test's build
    # did, and reuses that build instead of compiling the dependencies again.
    out = subprocess.run(
        ["cargo", "run", "--quiet", "--example", "archive_contract", "--",
         *map(str, STREAM_SAMPLES)],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)


def pipe() -> dict:
    return resources()["ArchivePipe"]["Properties"]


def destination() -> dict:
    return resources()["ArchiveDeliveryStream"]["Properties"]["ExtendedS3DestinationConfiguration"]


def test_the_pipe_reads_the_tables_stream_from_its_start_and_never_drops_a_record():
    p = pipe()
    assert p["Source"] == {"Fn::GetAtt": ["Table", "StreamArn"]}
    assert p["Target"] == {"Fn::GetAtt": ["ArchiveDeliveryStream", "Arn"]}
    src = p["SourceParameters"]["DynamoDBStreamParameters"]
    assert src["StartingPosition"] == "TRIM_HORIZON"
    assert src["MaximumRetryAttempts"] == -1 and src["MaximumRecordAgeInSeconds"] == -1
    view = resources()["Table"]["Properties"]["StreamSpecification"]["StreamViewType"]
    assert view == "NEW_AND_OLD_IMAGES", "the pipe needs new images, the revoke function old ones"


def test_the_pipes_filter_and_template_are_the_codes():
    [f] = pipe()["SourceParameters"]["FilterCriteria"]["Filters"]
    assert json.loads(f["Pattern"]) == json.loads(contract()["filter_pattern"])
    assert pipe()["TargetParameters"]["InputTemplate"] == contract()["input_template"]


def test_firehose_partitions_by_the_codes_query_under_the_codes_prefix():
    d = destination()
    assert d["Prefix"] == contract()["object_prefix"]
    assert d["DynamicPartitioningConfiguration"]["Enabled"] is True
    assert d["CompressionFormat"] == "UNCOMPRESSED"
    processors = {p["Type"]: {x["ParameterName"]: x["ParameterValue"] for x in p["Parameters"]}
                  for p in d["ProcessingConfiguration"]["Processors"]}
    assert processors["MetadataExtraction"] == {
        "MetadataExtractionQuery": contract()["metadata_extraction_query"],
        "JsonParsingEngine": "JQ-1.6",
    }
    assert processors["AppendDelimiterToRecord"] == {"Delimiter": "\\n"}


@pytest.mark.parametrize("sample", STREAM_SAMPLES, ids=lambda p: p.name)
def test_eventbridges_matcher_and_the_stand_in_agree_on_every_stream_sample(sample):
    [f] = pipe()["SourceParameters"]["FilterCriteria"]["Filters"]
    matcher = EventPattern.load(f["Pattern"])
    verdicts = [v for v in contract()["verdicts"] if v["file"] == str(sample)]
    records = json.loads(sample.read_text())["Records"]
    assert len(verdicts) == len(records)
    for v, record in zip(verdicts, records, strict=True):
        assert "error" not in v["verdict"], v
        assert v["verdict"]["archived"] == matcher.matches_event(record), record["eventID"]


def test_only_audit_inserts_are_archived_and_their_line_is_the_item():
    archived = [v for v in contract()["verdicts"] if v["verdict"].get("archived")]
    assert archived and all("audit-insert" in v["file"] for v in archived)
    for v in archived:
        record = json.loads(Path(v["file"]).read_text())["Records"][v["index"]]
        assert v["verdict"]["line"] == {"Item": record["dynamodb"]["NewImage"]}
        assert v["verdict"]["partition"] == record["dynamodb"]["NewImage"]["recorded_at"]["S"][:10]


def test_the_bucket_is_locked_with_the_parameters_and_only_the_delivery_role_writes():
    b = resources()["ArchiveBucket"]
    assert b["DeletionPolicy"] == "Retain"
    props = b["Properties"]
    assert props["ObjectLockEnabled"] is True
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["ObjectLockConfiguration"] == {
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": {"Ref": "ArchiveRetentionMode"},
                                      "Days": {"Ref": "ArchiveRetentionDays"}}},
    }
    params = template()["Parameters"]
    assert params["ArchiveRetentionMode"]["AllowedValues"] == ["GOVERNANCE", "COMPLIANCE"]
    statements = {s["Sid"]: s for s in resources()["ArchiveBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]}
    writes = statements["OnlyTheDeliveryRoleWrites"]
    assert writes["Effect"] == "Deny" and writes["Action"] == "s3:PutObject"
    assert writes["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": {"Fn::GetAtt": ["ArchiveDeliveryRole", "Arn"]}}}
    assert "s3:BypassGovernanceRetention" in statements["LockStaysOn"]["Action"]


def _actions(policy: str) -> set[str]:
    doc = resources()[policy]["Properties"]["PolicyDocument"]
    out = set()
    for s in doc["Statement"]:
        assert s["Effect"] == "Allow"
        out |= set(s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    return out


def test_the_archive_roles_may_read_the_stream_and_write_objects_and_nothing_else():
    assert _actions("ArchivePipePolicy") == {
        "dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams",
        "firehose:PutRecord", "firehose:PutRecordBatch",
    }
    assert _actions("ArchiveDeliveryPolicy") == {
        "s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads",
        "s3:PutObject", "s3:AbortMultipartUpload", "logs:PutLogEvents",
    }


def test_the_boundary_denies_elevated_roles_the_archive_its_pipe_and_its_stream():
    statements = resources()["ElevatableRoleBoundary"]["Properties"]["PolicyDocument"]["Statement"]
    (deny,) = [s for s in statements if s.get("Sid") == "NoTouchingLatchsArchive"]
    assert deny["Effect"] == "Deny" and set(deny["Action"]) == {"s3:*", "pipes:*", "firehose:*"}
    named = json.dumps(deny["Resource"])
    for resource in ("ArchiveBucket", "ArchivePipe", "ArchiveDeliveryStream", "ArchiveBucketArn"):
        assert resource in named, resource
    assert "/*" in named, "the bucket's objects too"
