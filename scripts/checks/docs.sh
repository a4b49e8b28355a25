#!/usr/bin/env bash
# The deploy guide's local track, run as printed (tests/docs; run by ./scripts/test against its
# emulator). pytest from .venv/tools (scripts/checks/template.sh's pins).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib/venv.sh
source scripts/lib/venv.sh
ensure_venv .venv/tools tools infra/checks/requirements-tools.txt
t0=$SECONDS
.venv/tools/bin/python -m pytest -q -p no:cacheprovider tests/docs
echo "    docs local track: ok ($((SECONDS - t0)) s)"
