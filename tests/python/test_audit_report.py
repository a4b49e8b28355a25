"""Browser test of `latch audit --report`: headless Chromium (Debian's) opens the page from
file:// with no network, runs its script, and the DOM it dumps must hold the timeline (one
SVG bar per grant, one lane per role, markers for denials, revoke failures and drift repairs)
and the summary counts the generator says it wrote. A screenshot is saved to
target/audit-report.png for a person to look at.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--virtual-time-budget=5000"]


def latch(*args):
    binary = os.environ.get("LATCH_BIN", str(ROOT / "target" / "debug" / "latch"))
    return subprocess.run([binary, *map(str, args)], check=True, capture_output=True, text=True)


def chromium(*args):
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], check=True,
                              capture_output=True, text=True, timeout=90)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    latch("audit", "generate", "--items", 6000, "--seed", 21, "--out", out)
    return out, json.loads((out / "latch-generator-truth.json").read_text())


def dom_of(page):
    return chromium("--dump-dom", page.as_uri()).stdout


def table(dom, table_id):
    m = re.search(rf'<table id="{table_id}"[^>]*>(.*?)</table>', dom, re.S)
    assert m, f"the page has a table {table_id}"
    return m.group(1)


def cells(html):
    rows = (re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in re.findall(r"<tr[^>]*>(.*?)</tr>", html, re.S))
    return [row for row in rows if row]  # (the head's row has no td)


def test_given_a_report_when_chromium_runs_it_then_the_timeline_and_counts_are_there(export):
    out, truth = export
    page = out / "report.html"
    latch("audit", out, "--report", page)
    dom = dom_of(page)
    assert 'data-rendered="yes"' in dom, "the page script ran to the end"
    d = truth["audit_by_decision"]
    cards = dict(re.findall(r'id="count-([a-z-]+)" data-count="(\d+)"', dom))
    assert cards == {
        "activated": str(d["activated"]), "revoked": str(d["revoked"]),
        "job-finished": str(truth["revoked_by_reason"]["job_finished"]),
        "expired": str(truth["revoked_by_reason"].get("expired_sweep", 0) + truth["revoked_by_reason"].get("expired_ttl", 0)),
        "active": str(truth["active_at_export"]), "denied": str(d["denied"]),
        "revoke-failed": str(d["revoke_failed"]), "drift-repaired": str(d["drift_repaired"]),
    }
    # One bar per grant: every revoked grant plus the ones active at export time.
    grants = d["revoked"] + truth["active_at_export"]
    bars = re.findall(r'<rect class="bar" data-ended="([a-z_]+)"', dom)
    assert len(bars) == grants
    m = re.search(r'data-bars-rendered="(\d+)" data-markers-rendered="(\d+)"', dom)
    assert m and int(m.group(1)) == grants
    assert int(m.group(2)) == d["denied"] + d["revoke_failed"] + d["drift_repaired"]
    ended = {k: bars.count(k) for k in set(bars)}
    assert ended == {**truth["revoked_by_reason"], "active": truth["active_at_export"]}
    lanes = re.findall(r'<text class="lane-label"[^>]*>([^<]+)<title>', dom)
    assert set(truth["activated_by_role"]) <= set(lanes)
    for kind, n in (("denied", d["denied"]), ("revoke_failed", d["revoke_failed"]),
                    ("drift_repaired", d["drift_repaired"])):
        assert len(re.findall(rf'class="marker marker-{kind}"', dom)) == n, kind
    assert "ended by job finish" in dom and "revoke failure" in dom, "the legend is drawn"
    assert 'id="denials"' in dom and 'id="revoke-failures"' in dom and 'id="drift-repairs"' in dom

    shot = ROOT / "target" / "audit-report.png"
    shot.parent.mkdir(exist_ok=True)
    chromium("--window-size=1400,1700", f"--screenshot={shot}", page.as_uri())
    assert shot.stat().st_size > 20_000


def test_given_filters_when_reported_then_only_the_chosen_role_has_a_lane(export):
    out, _ = export
    page = out / "app.html"
    latch("audit", out, "--report", page, "--role", "app-deployer", "--since", "7d")
    dom = dom_of(page)
    assert 'data-rendered="yes"' in dom
    lanes = re.findall(r'<text class="lane-label"[^>]*>([^<]+)<title>', dom)
    assert lanes == ["app-deployer"]
    assert "role app-deployer" in dom and "since 7days before the export" in dom


def test_given_records_that_stand_on_their_own_when_reported_then_identities_policy_files_and_deleted_documents_show(export):
    out, _ = export
    records = [json.loads(line) for line in latch("audit", out, "--format", "jsonl").stdout.splitlines() if line]
    page = out / "facts.html"
    latch("audit", out, "--report", page)
    dom = dom_of(page)
    assert 'data-rendered="yes"' in dom

    # Verified vs claimed: every activation counted under whose word its identity is.
    by_identity = Counter(r.get("identity") or "unknown" for r in records if r["decision"] == "activated")
    shown = {code: int(n) for code, n in
             re.findall(r'<tr data-reason="([^"]+)"><td><code>[^<]*</code></td><td class="num">(\d+)</td>',
                        table(dom, "identities"))}
    assert shown == dict(by_identity) and shown, shown

    # Policy-file versions over time: one row per digest, its label and how many it decided.
    decided = Counter((r["policy_file_label"], r["policy_file_sha256"]) for r in records if r.get("policy_file_sha256"))
    rows = {(row[0], row[1]): int(row[4]) for row in cells(table(dom, "policy-files"))}
    assert rows == dict(decided) and len(rows) >= 2, rows

    # Drift repairs with the document each deleted.
    repairs = [r for r in records if r["decision"] == "drift_repaired"]
    assert repairs and all(r.get("deleted_document") for r in repairs)
    shown = cells(table(dom, "drift-repairs"))
    total = re.search(r"<h2>Drift repairs \((\d+)\)</h2>", dom)
    assert total and int(total.group(1)) == len(repairs)
    assert 0 < len(shown) <= len(repairs)
    assert all("Statement" in row[5] for row in shown), "each row shows the deleted document"
