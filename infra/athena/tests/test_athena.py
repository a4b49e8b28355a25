"""The Athena DDL and queries in infra/athena, run by DuckDB over a generated export.

The export comes from `latch audit generate` (the exact layout ExportTableToPointInTime
writes: manifests plus gzip'd DynamoDB JSON lines under data/). Every result is compared with
an oracle computed here in plain Python straight from the data files, and the headline counts
with what the generator says it wrote (latch-generator-truth.json); neither oracle shares code
with the SQL under test or with `latch audit`.

Translating Athena to DuckDB (done mechanically, below, so the files are tested as written):
- The table: Athena's `CREATE EXTERNAL TABLE ... ROW FORMAT SERDE 'org.openx.data.jsonserde.
  JsonSerDe' LOCATION '.../data/'` becomes a DuckDB view over `read_json('<export>/data/*.json.gz',
  format='newline_delimited', compression='gzip', columns={'Item': <type>})`. The Item column
  type is parsed out of create_table.sql and rewritten from Hive syntax to DuckDB's:
  `struct<`a`: T, ...>` -> `STRUCT("a" T, ...)`, `array<T>` -> `T[]`, `string` -> `VARCHAR`.
  Like the OpenX SerDe, read_json ignores attributes the struct does not name and leaves the
  ones an item lacks NULL.
- The view and queries run as written, except Trino's lambda `transform(x, a -> a.S)`, which
  becomes DuckDB's `list_transform(x, lambda a: a.S)`, and `transform_values(m, (k, v) -> v.S)`,
  which becomes a `map_from_entries` over `map_entries`; `map<K, V>` becomes `MAP(K, V)`. Everything else in the .sql files sticks
  to SQL both engines share (CASE sums, count(DISTINCT), text comparison of ISO 8601 times).
"""

import gzip
import json
import os
import re
import subprocess
from collections import defaultdict
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).resolve().parents[3]
ATHENA = ROOT / "infra" / "athena"
SCHEMA = json.loads((ROOT / "events" / "schemas" / "audit-record.schema.json").read_text())
ITEMS = int(os.environ.get("LATCH_ATHENA_ITEMS", "20000"))


# --- Athena -> DuckDB translation -------------------------------------------------------------

def _split_top(s):
    """Splits on commas that are not inside <...>."""
    depth, start, parts = 0, 0, []
    for i, c in enumerate(s):
        if c == "<":
            depth += 1
        elif c == ">":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return [p.strip() for p in parts if p.strip()]


def hive_to_duckdb(t):
    t = t.strip()
    low = t.lower()
    if low.startswith("struct<") and t.endswith(">"):
        fields = []
        for f in _split_top(t[len("struct<"):-1]):
            name, _, ftype = f.partition(":")
            fields.append(f'"{name.strip().strip("`")}" {hive_to_duckdb(ftype)}')
        return "STRUCT(" + ", ".join(fields) + ")"
    if low.startswith("array<") and t.endswith(">"):
        return hive_to_duckdb(t[len("array<"):-1]) + "[]"
    if low.startswith("map<") and t.endswith(">"):
        key, value = _split_top(t[len("map<"):-1])
        return f"MAP({hive_to_duckdb(key)}, {hive_to_duckdb(value)})"
    return {"string": "VARCHAR", "bigint": "BIGINT", "int": "INTEGER", "boolean": "BOOLEAN",
            "double": "DOUBLE"}[low]


def strip_comments(sql):
    return "\n".join(line.split("--", 1)[0] for line in sql.splitlines())


def translate_ddl(ddl, data_dir):
    body = strip_comments(ddl)
    m = re.search(r"CREATE EXTERNAL TABLE IF NOT EXISTS (\w+)\s*\(\s*`(\w+)`\s+(struct<.*>)\s*\)\s*ROW FORMAT",
                  body, re.S | re.I)
    assert m, "create_table.sql no longer has the shape this translation expects"
    table, column, hive_type = m.groups()
    assert re.search(r"org\.openx\.data\.jsonserde\.JsonSerDe", body)
    duck_type = hive_to_duckdb(" ".join(hive_type.split()))
    glob = str(data_dir / "*.json.gz").replace("'", "''")
    return (f"CREATE VIEW {table} AS SELECT * FROM read_json('{glob}', format='newline_delimited', "
            f"compression='gzip', columns={{'{column}': '{duck_type}'}})")


def translate_sql(sql):
    # Trino's transform_values(m, (k, v) -> v.S) over a map of DynamoDB values: DuckDB rebuilds the map.
    sql = re.sub(r"transform_values\(([^,]+),\s*\((\w+),\s*(\w+)\)\s*->\s*\3\.S\)",
                 r"map_from_entries(list_transform(map_entries(\1), lambda e: {'key': e.key, 'value': e.value.S}))", sql)
    return re.sub(r"transform\(([^,]+),\s*(\w+)\s*->", r"list_transform(\1, lambda \2:", sql)


# --- fixtures -----------------------------------------------------------------------------------

def latch_bin():
    return os.environ.get("LATCH_BIN", str(ROOT / "target" / "debug" / "latch"))


@pytest.fixture(scope="session")
def export(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    subprocess.run([latch_bin(), "audit", "generate", "--items", str(ITEMS), "--seed", "13", "--out", str(out)],
                   check=True)
    truth = json.loads((out / "latch-generator-truth.json").read_text())
    return out / truth["export_dir"], truth


@pytest.fixture(scope="session")
def db(export):
    export_dir, _ = export
    con = duckdb.connect()
    con.execute(translate_ddl((ATHENA / "create_table.sql").read_text(), export_dir / "data"))
    con.execute(translate_sql((ATHENA / "audit_view.sql").read_text()))
    return con


def unwrap(av):
    (kind, value), = av.items()
    if kind == "N":
        return int(value)
    if kind == "L":
        return [unwrap(x) for x in value]
    return value


@pytest.fixture(scope="session")
def records(export):
    """Every audit record, read the plain way: manifest, gzip, json, unwrap."""
    export_dir, _ = export
    out = []
    for line in (export_dir / "manifest-files.json").read_text().splitlines():
        entry = json.loads(line)
        path = export_dir / "data" / entry["dataFileS3Key"].rsplit("/", 1)[1]
        with gzip.open(path, "rt") as f:
            for item_line in f:
                item = json.loads(item_line)["Item"]
                if item.get("record_type") == {"S": "audit"}:
                    out.append({k: unwrap(v) for k, v in item.items() if k not in ("pk", "sk", "record_type")})
    return out


def run(db, name):
    cur = db.execute(translate_sql((ATHENA / "queries" / name).read_text()))
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


# --- tests ----------------------------------------------------------------------------------------

def test_given_the_schema_when_the_ddl_and_view_are_read_then_they_name_every_audit_field(db):
    ddl = strip_comments((ATHENA / "create_table.sql").read_text())
    fields = set(re.findall(r"`(\w+)`:", ddl))
    assert set(SCHEMA["properties"]) | {"pk", "sk", "record_type"} <= fields
    cols = [r[0] for r in db.execute("DESCRIBE latch_audit").fetchall()]
    assert cols == list(SCHEMA["properties"]), "the view's columns are the record's fields, in order"


def test_given_an_export_when_the_view_is_read_then_it_has_one_row_per_audit_record(db, records, export):
    _, truth = export
    (n,) = db.execute("SELECT count(*) FROM latch_audit").fetchone()
    assert n == len(records) == truth["by_record_type"]["audit"]
    by_decision = dict(db.execute("SELECT decision, count(*) FROM latch_audit GROUP BY decision").fetchall())
    assert by_decision == truth["audit_by_decision"]
    (items,) = db.execute("SELECT count(*) FROM latch_export").fetchone()
    assert items == truth["items"], "every item is a row of the raw table"
    row = db.execute("SELECT actions, attempt FROM latch_audit WHERE decision = 'activated' LIMIT 1").fetchone()
    assert isinstance(row[0], list) and row[0] and all(isinstance(a, str) for a in row[0])


def test_given_a_period_when_grants_per_role_run_then_each_role_counts_its_activations(db, records, export):
    _, truth = export
    rows = run(db, "01_grants_per_role.sql")
    window = [r for r in records if r["decision"] == "activated"
              and "2026-03-01T00:00:00Z" <= r["granted_at"] < "2026-03-08T00:00:00Z"]
    want = defaultdict(lambda: {"grants": 0, "secs": 0, "pipelines": set(), "actors": set()})
    for r in window:
        w = want[r["role_arn"]]
        w["grants"] += 1
        w["secs"] += r["expires_at_epoch"] - r["granted_at_epoch"]
        w["pipelines"].add(r["pipeline"])
        w["actors"].add(r["actor"])
    assert {r["role_arn"]: (r["grants"], r["granted_secs"], r["pipelines"], r["actors"]) for r in rows} == {
        role: (w["grants"], w["secs"], len(w["pipelines"]), len(w["actors"])) for role, w in want.items()}
    assert [r["grants"] for r in rows] == sorted((r["grants"] for r in rows), reverse=True)
    by_name = {r["role_arn"].rsplit("/", 1)[1]: r["grants"] for r in rows}
    assert by_name == truth["activated_first_week_by_role"]


def test_given_revocations_when_longest_grants_run_then_the_longest_holds_come_first(db, records, export):
    _, truth = export
    rows = run(db, "02_longest_grants.sql")
    held = sorted(((r["revoked_at_epoch"] - r["granted_at_epoch"], r["grant_id"]) for r in records
                   if r["decision"] == "revoked"), key=lambda x: (-x[0], x[1]))[:20]
    assert [(r["held_secs"], r["grant_id"]) for r in rows] == held
    assert [r["held_secs"] for r in rows[:5]] == truth["longest_held_secs"]
    assert all(r["ended_by"] in ("job_finished", "expired_sweep", "expired_ttl") for r in rows)


def test_given_denials_when_grouped_by_reason_then_counts_match_the_generator(db, records, export):
    _, truth = export
    rows = run(db, "03_denials_by_reason.sql")
    assert {r["reason"]: r["denials"] for r in rows} == truth["denied_by_reason"]
    denied = [r for r in records if r["decision"] == "denied"]
    for row in rows:
        mine = [r for r in denied if r["reason"] == row["reason"]]
        assert row["pipelines"] == len({r["pipeline"] for r in mine if "pipeline" in r})
        assert row["first_seen"] == min(r["recorded_at"] for r in mine)
        assert row["last_seen"] == max(r["recorded_at"] for r in mine)
    malformed = next(r for r in rows if r["reason"] == "malformed_event")
    assert malformed["roles"] == 0 and malformed["pipelines"] == 0, "a malformed event names no role or pipeline"


def test_given_grants_when_endings_run_then_finish_and_expiry_split_as_generated(db, export):
    _, truth = export
    rows = run(db, "04_grant_endings.sql")
    for r in rows:
        name = r["role_arn"].rsplit("/", 1)[1]
        ends = truth["revoked_by_role_reason"][name]
        assert r["grants"] == truth["activated_by_role"][name]
        assert r["ended_by_finish"] == ends.get("job_finished", 0)
        assert r["expired_sweep"] == ends.get("expired_sweep", 0)
        assert r["expired_ttl"] == ends.get("expired_ttl", 0)
        assert r["ended_by_expiry"] == r["expired_sweep"] + r["expired_ttl"]
    assert sum(r["not_revoked"] for r in rows) >= truth["active_at_export"] > 0


def test_given_revoke_failures_when_listed_then_each_shows_how_its_grant_finally_ended(db, records, export):
    _, truth = export
    rows = run(db, "05_revoke_failures.sql")
    assert len(rows) == truth["audit_by_decision"]["revoke_failed"] > 0
    revoked = {r["grant_id"]: r for r in records if r["decision"] == "revoked"}
    for row in rows:
        assert row["error"], "the AWS error is recorded"
        final = revoked.get(row["grant_id"])
        assert row["finally_revoked_at"] == (final["revoked_at"] if final else None)
        if final:
            assert row["finally_revoked_at"] > row["failed_at"]
    assert [r["failed_at"] for r in rows] == sorted((r["failed_at"] for r in rows), reverse=True)


def test_given_the_hive_type_syntax_when_translated_then_duckdb_types_come_out():
    assert hive_to_duckdb("struct<`S`: string>") == 'STRUCT("S" VARCHAR)'
    assert hive_to_duckdb("struct<`L`: array<struct<`S`: string>>, `n`: bigint>") == \
        'STRUCT("L" STRUCT("S" VARCHAR)[], "n" BIGINT)'
    assert translate_sql("transform(Item.actions.L, a -> a.S)") == "list_transform(Item.actions.L, lambda a: a.S)"
