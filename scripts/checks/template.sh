#!/usr/bin/env bash
# template.yaml checks (run by ./scripts/test): cfn-lint with no errors or warnings, checkov with
# every skip justified in the template, the template/code parity test, and `sam build` of the
# three functions and the policy layer.
#
# Tools come from PyPI at the versions pinned in infra/checks/requirements-*.txt, installed into
# git-ignored venvs under .venv/ (a stamp makes the second run instant): .venv/tools holds
# aws-sam-cli, cargo-lambda (with zig from the `ziglang` package), cfn-lint, pytest and the
# emulator's moto; checkov gets .venv/checkov because it pins a boto3 aws-sam-cli cannot share.
#
# `sam build` builds in place into the workspace's target/ (cargo-lambda, release profile), so a
# second run only re-links what changed.
set -euo pipefail
cd "$(dirname "$0")/../.."

export SAM_CLI_TELEMETRY=0
export SAM_CLI_DISABLE_VERSION_CHECK=1 PIP_DISABLE_PIP_VERSION_CHECK=1
export BC_SKIP_MAPPING=TRUE CHECKOV_NO_OUTPUT_WARNINGS=1

build_dir=target/sam-build

ensure_venv() {
  local venv=$1; shift
  local stamp="$venv/.requirements.sha"
  local want
  want=$( { python3 --version; cat "$@"; } | sha256sum | cut -d' ' -f1)
  if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then return; fi
  echo "template: installing pinned packages into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet -r "$1"
  echo "$want" > "$stamp"
}

sub() {
  local name=$1; shift
  local t0=$SECONDS
  "$@"
  echo "    $name: ok ($((SECONDS - t0)) s)"
}

ensure_venv .venv/tools infra/checks/requirements-tools.txt infra/local/requirements.txt
ensure_venv .venv/checkov infra/checks/requirements-checkov.txt

# cfn-lint: any error (2) or warning (4) fails; informational findings (8) are not enabled.
sub cfn-lint .venv/tools/bin/cfn-lint template.yaml

# checkov: any failed check fails; skips are listed in each resource's Metadata.checkov.skip.
sub checkov .venv/checkov/bin/checkov -f template.yaml --framework cloudformation \
  --skip-download --quiet --compact

sub parity .venv/tools/bin/python -m pytest -q -p no:cacheprovider infra/checks

sam_build() {
  PATH="$PWD/.venv/tools/bin:$PATH" .venv/tools/bin/sam build >"$build_dir.log" 2>&1 \
    || { cat "$build_dir.log" >&2; return 1; }
  .venv/tools/bin/python infra/checks/built.py "$build_dir"
}
mkdir -p target
sub "sam build" sam_build
