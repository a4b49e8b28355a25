"""The three calls of one grant, shaped like Latch's own (see crates/latch-aws): a 4-item
TransactWriteItems (grant put, job update, audit put, role counter update), one PutRolePolicy
with a self-expiring policy document, one PutEvents audit event.

Used by the Python + boto3 baseline (handler.py). The items are smaller than Latch's (about half
the attributes); that does not bias the figures, because bench/driver.py measures every handler
against a replay of the requests that handler itself sent.
"""

import datetime as dt
import hashlib
import json

TABLE_DEFAULT = "latch-grants"
BUS_DEFAULT = "latch"


def _s(v):
    return {"S": str(v)}


def _n(v):
    return {"N": str(v)}


def grant_calls(envelope, table, bus):
    """(transact_items, role_name, policy_name, policy_document, put_events_entries)."""
    d = envelope["detail"]
    account = envelope["account"]
    source = envelope["source"]
    start = dt.datetime.fromisoformat(envelope["time"].replace("Z", "+00:00"))
    minutes = 15
    expires = start + dt.timedelta(minutes=minutes)
    key = "\x1f".join(
        [account, source, d["pipeline"], d["run_id"], d["job"], str(d["attempt"]), d["permission_set"], d["role_arn"]]
    )
    gid = hashlib.sha256(key.encode()).hexdigest()[:32]
    role_name = d["role_arn"].rsplit("/", 1)[1]
    policy_name = f"latch-{gid}"
    exp = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    cond = {"DateLessThan": {"aws:CurrentTime": exp}}
    doc = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "WriteArtifacts",
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:GetObject"],
                "Resource": [f"arn:aws:s3:::latch-artifacts-{account}/{d['pipeline']}/*"],
                "Condition": cond,
            },
            {
                "Sid": "ListArtifacts",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::latch-artifacts-{account}"],
                "Condition": {"StringLike": {"s3:prefix": [f"{d['pipeline']}/*"]}, **cond},
            },
        ],
    }
    ttl = int(expires.timestamp()) + 86400
    grant_item = {
        "pk": _s(f"GRANT#{gid}"),
        "sk": _s("GRANT"),
        "record_type": _s("grant"),
        "grant_id": _s(gid),
        "status": _s("active"),
        "source": _s(source),
        "account": _s(account),
        "region": _s(envelope["region"]),
        "event_id": _s(envelope["id"]),
        "pipeline": _s(d["pipeline"]),
        "run_id": _s(d["run_id"]),
        "job": _s(d["job"]),
        "attempt": _n(d["attempt"]),
        "role_arn": _s(d["role_arn"]),
        "permission_set": _s(d["permission_set"]),
        "policy_name": _s(policy_name),
        "rule": _s("bench-deploys"),
        "granted_at": _s(envelope["time"]),
        "expires_at": _s(exp),
        "expiry_bucket": _s("active"),
        "ttl": _n(int(expires.timestamp())),
        "reason": _s(d.get("reason", "")),
        "actor": _s(d.get("actor", "")),
    }
    audit = {
        "audit_id": gid + "-activated",
        "decision": "activated",
        "grant_id": gid,
        "event_id": envelope["id"],
        "source": source,
        "account": account,
        "pipeline": d["pipeline"],
        "run_id": d["run_id"],
        "job": d["job"],
        "role_arn": d["role_arn"],
        "permission_set": d["permission_set"],
        "expires_at": exp,
    }
    audit_item = {"pk": _s(f"AUDIT#{gid}"), "sk": _s("AUDIT#activated"), "record_type": _s("audit")}
    audit_item.update({k: _s(v) for k, v in audit.items()})
    job_pk = f"JOB#{account}#{source}#{d['pipeline']}#{d['run_id']}#{d['job']}#{d['attempt']}"
    items = [
        {"Put": {"TableName": table, "Item": grant_item, "ConditionExpression": "attribute_not_exists(pk)",
                 "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}},
        {"Update": {"TableName": table, "Key": {"pk": _s(job_pk), "sk": _s("JOB")},
                    "UpdateExpression": "SET #type = :type, #ttl = :ttl ADD #ids :id",
                    "ConditionExpression": "attribute_not_exists(#finished)",
                    "ExpressionAttributeNames": {"#type": "record_type", "#ttl": "ttl", "#ids": "grant_ids",
                                                 "#finished": "finished_at"},
                    "ExpressionAttributeValues": {":type": _s("job"), ":ttl": _n(ttl), ":id": {"SS": [gid]}}}},
        {"Put": {"TableName": table, "Item": audit_item, "ConditionExpression": "attribute_not_exists(pk)"}},
        {"Update": {"TableName": table, "Key": {"pk": _s("ROLE#" + d["role_arn"]), "sk": _s("COUNTER")},
                    "UpdateExpression": "SET #type = :type ADD #active :delta",
                    "ExpressionAttributeNames": {"#type": "record_type", "#active": "active_grants"},
                    "ExpressionAttributeValues": {":type": _s("role_counter"), ":delta": _n(1)}}},
    ]
    entries = [{"Source": "latch", "DetailType": "Latch Grant Activated", "Detail": json.dumps(audit),
                "EventBusName": bus, "Resources": []}]
    return items, role_name, policy_name, json.dumps(doc), entries
