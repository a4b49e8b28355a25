#!/usr/bin/env bash
# Auditors' tooling, beyond `cargo test`:
#   1. the Athena DDL and queries in infra/athena, run by DuckDB over a generated export;
#   2. the HTML report of `latch audit`, opened by headless Chromium (Debian's package).
# Installs what it needs: infra/athena/requirements.txt into the repo's .venv (a stamp makes
# the second run instant) and `chromium` with apt-get when /usr/bin/chromium is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

# shellcheck source=scripts/lib/venv.sh
source scripts/lib/venv.sh
venv=.venv
ensure_venv "$venv" emulator infra/local/requirements.txt
ensure_venv "$venv" athena infra/athena/requirements.txt

if [[ ! -x /usr/bin/chromium ]]; then
  echo "audit: installing Debian's chromium for the browser test" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium > /dev/null
fi

# ./scripts/test passes the binary its workspace build made (LATCH_BIN); alone, build it.
if [[ -z ${LATCH_BIN:-} ]]; then
  cargo build --quiet -p latch-cli
  target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  LATCH_BIN=$target_dir/debug/latch
fi
export LATCH_BIN CHROMIUM=/usr/bin/chromium
"$venv/bin/python" -m pytest -q -p no:cacheprovider infra/athena/tests tests/python
echo "audit: report screenshot in target/audit-report.png" >&2
