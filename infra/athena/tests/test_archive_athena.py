"""The archive's Athena DDL (partition projection) and view, run by DuckDB over a generated archive.

`latch audit generate --archive DIR` writes the archive of the same decisions as its export, as
the template's Firehose stream lays it out (audit/date=YYYY-MM-DD/, JSON lines of export-shaped
items, a few records twice: at least once). Results are compared with an oracle computed here
from the files in plain Python, and with the generator's truth.

Translating Athena to DuckDB (mechanically, so the files are tested as written): the table
becomes a view over `read_json('<archive>/audit/date=*/*', hive_partitioning=true)`, which reads
the `date=` folder names into the `date` column as partition projection computes them in Athena;
the projection's properties are checked against the folders the archive really has. The Item
column type is parsed and rewritten as for the export table (test_athena.py).
"""

import json
import os
import re
import subprocess
from collections import Counter
from datetime import date

import duckdb
import pytest
from test_athena import ATHENA, SCHEMA, hive_to_duckdb, latch_bin, strip_comments, translate_sql

ITEMS = int(os.environ.get("LATCH_ATHENA_ITEMS", "20000"))


def table_parts(ddl):
    body = strip_comments(ddl)
    m = re.search(r"CREATE EXTERNAL TABLE IF NOT EXISTS (\w+)\s*\(\s*`(\w+)`\s+(struct<.*>)\s*\)\s*"
                  r"PARTITIONED BY \(`(\w+)` string\)\s*ROW FORMAT", body, re.S | re.I)
    assert m, "archive_table.sql no longer has the shape this translation expects"
    props = dict(re.findall(r"'([\w.]+)'\s*=\s*'([^']*)'", body[body.index("TBLPROPERTIES"):]))
    location = re.search(r"LOCATION '([^']+)'", body).group(1)
    return m.groups(), props, location


@pytest.fixture(scope="session")
def archive(tmp_path_factory):
    out = tmp_path_factory.mktemp("generated")
    subprocess.run([latch_bin(), "audit", "generate", "--items", str(ITEMS), "--seed", "13",
                    "--out", str(out / "export"), "--archive", str(out / "archive")], check=True)
    truth = json.loads((out / "export" / "latch-generator-truth.json").read_text())
    return out / "archive", truth


@pytest.fixture(scope="session")
def db(archive):
    root, _ = archive
    (table, column, hive_type, key), _, _ = table_parts((ATHENA / "archive_table.sql").read_text())
    glob = str(root / "audit" / f"{key}=*" / "*").replace("'", "''")
    con = duckdb.connect()
    con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_json('{glob}', format='newline_delimited', "
                f"columns={{'{column}': '{hive_to_duckdb(' '.join(hive_type.split()))}'}}, "
                f"hive_partitioning=true, hive_types={{'{key}': 'VARCHAR'}})")
    con.execute(translate_sql((ATHENA / "archive_view.sql").read_text()))
    return con


@pytest.fixture(scope="session")
def lines(archive):
    root, _ = archive
    out = []
    for path in sorted((root / "audit").glob("date=*/*")):
        for line in path.read_text().splitlines():
            out.append((path.parent.name.split("=", 1)[1], json.loads(line)["Item"]))
    return out


def test_the_archive_table_holds_the_export_tables_item_type():
    (_, _, archive_type, _), _, _ = table_parts((ATHENA / "archive_table.sql").read_text())
    export = strip_comments((ATHENA / "create_table.sql").read_text())
    export_type = re.search(r"`Item`\s+(struct<.*>)\s*\)\s*ROW FORMAT", export, re.S).group(1)
    assert " ".join(archive_type.split()) == " ".join(export_type.split())


def test_partition_projection_describes_the_folders_firehose_writes(archive):
    root, _ = archive
    (_, _, _, key), props, location = table_parts((ATHENA / "archive_table.sql").read_text())
    assert props["projection.enabled"] == "true"
    assert props[f"projection.{key}.type"] == "date"
    assert props[f"projection.{key}.format"] == "yyyy-MM-dd"
    assert props["storage.location.template"] == location + key + "=${" + key + "}/"
    first, last = props[f"projection.{key}.range"].split(",")
    assert last == "NOW"
    folders = sorted(p.name for p in (root / "audit").iterdir())
    assert folders and all(re.fullmatch(rf"{key}=\d{{4}}-\d{{2}}-\d{{2}}", f) for f in folders)
    assert all(date.fromisoformat(f.split("=")[1]) >= date.fromisoformat(first) for f in folders)


def test_the_view_has_the_records_columns_then_the_partition(db):
    cols = [r[0] for r in db.execute("DESCRIBE latch_archive_audit").fetchall()]
    assert cols == [*SCHEMA["properties"], "date"]


def test_the_view_has_one_row_per_decision_whatever_the_archive_repeats(db, lines, archive):
    _, truth = archive
    ids = Counter(item["audit_id"]["S"] for _, item in lines)
    assert max(ids.values()) == 2, "the generated archive repeats some records, as Firehose may"
    assert len(lines) == truth["archive_lines"]
    (n, distinct) = db.execute("SELECT count(*), count(DISTINCT audit_id) FROM latch_archive_audit").fetchone()
    assert n == distinct == len(ids) == truth["by_record_type"]["audit"]
    by_decision = dict(db.execute("SELECT decision, count(*) FROM latch_archive_audit GROUP BY decision").fetchall())
    assert by_decision == truth["audit_by_decision"]


def test_each_record_sits_in_the_partition_of_its_decisions_day(db, lines):
    assert all(d == item["recorded_at"]["S"][:10] for d, item in lines)
    day = lines[len(lines) // 2][0]
    want = {item["audit_id"]["S"] for d, item in lines if d == day}
    got = {r[0] for r in db.execute("SELECT audit_id FROM latch_archive_audit WHERE date = ?", [day]).fetchall()}
    assert got == want and got
