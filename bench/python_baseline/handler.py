"""COMPARISON BASELINE, not part of Latch: the grant path written as a plain Python + boto3
Lambda handler, making the same three calls (TransactWriteItems, PutRolePolicy, PutEvents).
bench/run measures it beside the Rust functions, under the same runtime stub and emulator.
Policy evaluation is reduced to the minimum (no policy file): the baseline is about runtime
and SDK cost, and it errs in Python's favour.
"""

import os

import boto3
from shapes import BUS_DEFAULT, TABLE_DEFAULT, grant_calls

# Init, as a Python Lambda would: one session, clients built once.
_session = boto3.session.Session()
_dynamodb = _session.client("dynamodb")
_iam = _session.client("iam")
_events = _session.client("events")
_table = os.environ.get("LATCH_TABLE", TABLE_DEFAULT)
_bus = os.environ.get("LATCH_BUS", BUS_DEFAULT)


def handler(event, context):
    if event.get("detail-type") != "Pipeline Job Started":
        return
    items, role, name, doc, entries = grant_calls(event, _table, _bus)
    _dynamodb.transact_write_items(TransactItems=items)
    _iam.put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=doc)
    _events.put_events(Entries=entries)
    return
