#!/usr/bin/env bash
# The repo's own Python (ruff, rules in ruff.toml), shell (shellcheck, every tracked bash
# script and sourced library) and Dockerfile (hadolint), clean. Run by ./scripts/test.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib/venv.sh
source scripts/lib/venv.sh
ensure_venv .venv/lint lint infra/checks/requirements-lint.txt

mapfile -t python < <(git ls-files '*.py')
mapfile -t shell < <(git ls-files -z | xargs -0 grep -lIE '^(#!/usr/bin/env bash|# shellcheck shell=bash)' --)
.venv/lint/bin/ruff check --quiet "${python[@]}"
.venv/lint/bin/shellcheck -x "${shell[@]}"
.venv/lint/bin/hadolint Dockerfile
echo "    ruff: ${#python[@]} Python files clean; shellcheck: ${#shell[@]} shell scripts clean; hadolint: Dockerfile clean"
