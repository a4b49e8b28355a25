# moto server for the private emulators of latch_tests::moto (see moto.rs for why each patch).
# Run as: python3 -c "$(cat moto_launch.py)" -H 127.0.0.1 -p PORT
import copy
import os
import sys
import threading
import time

# 1. moto appends every model instance it creates to a class-wide list (for its dashboard),
#    deep copies included: nothing is ever freed. Stop tracking.
from moto.core.common_models import BaseModel

BaseModel.__new__ = lambda cls, *args, **kwargs: object.__new__(cls)

# 2. TransactWriteItems deep-copies every table it names (items and stream records) to roll
#    back on failure: O(table) per transaction. Snapshot only the items the transaction names,
#    and the stream's length, and restore those on failure. The fault proxy forwards one request
#    at a time, so nothing else writes while a transaction runs.
import moto.dynamodb.models as dynamodb_models  # noqa: E402  (after the patch above)
from moto.dynamodb.models.dynamo_type import DynamoType  # noqa: E402
from moto.dynamodb.models.table import Table  # noqa: E402

_deepcopy = copy.deepcopy


class _TablesPassThrough:
    def deepcopy(self, x, memo=None):
        return x if isinstance(x, Table) else _deepcopy(x, memo)

    def __getattr__(self, name):
        return getattr(copy, name)


dynamodb_models.copy = _TablesPassThrough()
_transact_write_items = dynamodb_models.DynamoDBBackend.transact_write_items


def _key(table, attrs):
    if table.hash_key_attr not in attrs:
        return None
    h = DynamoType(attrs[table.hash_key_attr])
    if not table.range_key_attr:
        return h, None
    if table.range_key_attr not in attrs:
        return None
    return h, DynamoType(attrs[table.range_key_attr])


def transact_write_items(self, transact_items):
    saved = []
    for entry in transact_items:
        op = next(iter(entry.values()), {})
        table = self.tables.get(op.get("TableName"))
        if table is None:
            continue
        key = _key(table, op.get("Item") or op.get("Key") or {})
        if key is None:
            continue
        h, r = key
        bucket = table.items.get(h)
        current = bucket if r is None else (bucket or {}).get(r)
        shard = table.stream_shard
        saved.append((table, h, r, None if current is None else _deepcopy(current),
                      None if shard is None else len(shard.items)))
    try:
        return _transact_write_items(self, transact_items)
    except BaseException:
        for table, h, r, old, stream_len in reversed(saved):
            if r is None:
                if old is None:
                    table.items.pop(h, None)
                else:
                    table.items[h] = old
            elif old is None:
                if h in table.items:
                    table.items[h].pop(r, None)
                    if not table.items[h]:
                        del table.items[h]
            else:
                table.items[h][r] = old
            if stream_len is not None and table.stream_shard is not None:
                del table.stream_shard.items[stream_len:]
        raise


dynamodb_models.DynamoDBBackend.transact_write_items = transact_write_items

# 3. Die with the process that started us, even when it is killed before it can stop us.
_parent = os.getppid()


def _watch_parent():
    while os.getppid() == _parent:
        time.sleep(1.0)
    os._exit(0)


threading.Thread(target=_watch_parent, daemon=True).start()

from moto.server import main  # noqa: E402  (after the patches)

sys.exit(main(sys.argv[1:]))
