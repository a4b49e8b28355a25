"""The deploy guide's local track runs as printed: every ```sh block of docs/deploy.md that a
`<!-- local-run -->` comment precedes is run, in order, as one bash script (`set -euo pipefail`)
from the repository's root against the emulator the suite runs (AWS_ENDPOINT_URL), so the
documented commands cannot drift from what the code does.

The only change made to the text: when CARGO_TARGET_DIR moves cargo's output away from
`target/`, the documented `target/debug/` paths are pointed there. The script runs in a
session of its own, so whatever it leaves running (a `latch dev` a failed step never stopped)
is stopped afterwards.

Run by scripts/checks/docs.sh.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "deploy.md"
MARKED = re.compile(r"<!-- local-run -->\s*\n```sh\n(.*?)^```", re.S | re.M)


def local_run_blocks(page: Path) -> list[str]:
    return MARKED.findall(page.read_text())


def script() -> str:
    text = "\n".join(local_run_blocks(GUIDE))
    target = os.environ.get("CARGO_TARGET_DIR")
    if target and Path(target).resolve() != (ROOT / "target").resolve():
        text = text.replace("target/debug/", f"{target}/debug/")
    return text


def test_the_guide_marks_its_local_track():
    blocks = local_run_blocks(GUIDE)
    assert len(blocks) >= 2, "docs/deploy.md marks no local track (<!-- local-run --> before ```sh)"
    text = "\n".join(blocks)
    for command in ("latch init", "latch policy check", "latch dev", "latch request", "latch release"):
        assert command in text, f"the local track does not run `{command}`"


def test_the_local_track_runs_as_printed():
    assert os.environ.get("AWS_ENDPOINT_URL", "").startswith("http://127.0.0.1:"), (
        "run through ./scripts/test (the emulator on loopback)"
    )
    proc = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", script()],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=900)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    assert proc.returncode == 0, out
    assert "latch-start/policies.yaml: ok" in out, out
    assert re.search(r"^active: grant [0-9a-f]+ on arn:aws:iam::123456789012:role/latch/app-deployer", out, re.M), out
