#!/usr/bin/env bash
# template.yaml checks (run by ./scripts/test): cfn-lint with no errors or warnings, checkov with
# every skip justified in the template, and the template/code parity test. (`sam build` of the
# three functions and the policy layer is scripts/sam-build, which ./scripts/test runs beside
# the tests.)
#
# Tools come from PyPI at the versions pinned in infra/checks/requirements-*.txt, installed into
# git-ignored venvs under .venv/ (a stamp makes the second run instant): .venv/tools holds
# aws-sam-cli, cargo-lambda (with zig from the `ziglang` package), cfn-lint, pytest and the
# emulator's moto; checkov gets .venv/checkov because it pins a boto3 aws-sam-cli cannot share.
set -euo pipefail
cd "$(dirname "$0")/../.."

export SAM_CLI_TELEMETRY=0
export SAM_CLI_DISABLE_VERSION_CHECK=1 PIP_DISABLE_PIP_VERSION_CHECK=1
export BC_SKIP_MAPPING=TRUE CHECKOV_NO_OUTPUT_WARNINGS=1

# shellcheck source=scripts/lib/venv.sh
source scripts/lib/venv.sh

sub() {
  local name=$1; shift
  local t0=$SECONDS
  "$@"
  echo "    $name: ok ($((SECONDS - t0)) s)"
}

ensure_venv .venv/tools tools infra/checks/requirements-tools.txt
ensure_venv .venv/checkov checkov infra/checks/requirements-checkov.txt

# cfn-lint: any error (2) or warning (4) fails; informational findings (8) are not enabled.
sub cfn-lint .venv/tools/bin/cfn-lint template.yaml

# checkov: any failed check fails; skips are listed in each resource's Metadata.checkov.skip.
sub checkov .venv/checkov/bin/checkov -f template.yaml --framework cloudformation \
  --skip-download --quiet --compact

sub parity .venv/tools/bin/python -m pytest -q -p no:cacheprovider infra/checks
