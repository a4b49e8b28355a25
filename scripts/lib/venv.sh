# shellcheck shell=bash
# The one way the scripts make their pinned Python venvs (sourced, not run).
#
#   ensure_venv VENV NAME REQUIREMENTS
#
# creates VENV when it is missing and installs REQUIREMENTS into it, once: a stamp named NAME in
# VENV, over the interpreter's version and the file's content (and the files it includes with
# `-r`), makes the next call instant, and a changed pin reinstalls. Several NAMEs may share a venv.
#
# uv does the installing: the same requirements files pip would read, for a fraction of pip's
# CPU (checkov's venv: 1.7 s instead of 15 s; the tools venv: 6 s instead of 24 s, each from an
# empty cache), CPU the test suite's Rust build runs beside it and needs. uv itself is pinned
# below and installed from PyPI with pip, once, into the repository's .venv/uv.
UV_REQUIREMENT="uv==0.13.9"
UV_HOME=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/.venv/uv

ensure_uv() {
  local home=$UV_HOME
  mkdir -p "$(dirname "$home")"
  # Several venvs install at once (./scripts/test): one of them installs uv, the others wait.
  (
    flock 9
    if [[ -x $home/bin/uv && "$(cat "$home/.pin" 2>/dev/null)" == "$UV_REQUIREMENT" ]]; then exit 0; fi
    python3 -m venv "$home"
    "$home/bin/pip" install --quiet --disable-pip-version-check --no-compile "$UV_REQUIREMENT"
    echo "$UV_REQUIREMENT" > "$home/.pin"
  ) 9> "$home.lock"
}

ensure_venv() {
  local venv=$1 name=$2 requirements=$3
  local stamp="$venv/.$name.sha" want
  want=$(
    python3 --version
    echo "$UV_REQUIREMENT"
    cat "$requirements"
    sed -n 's/^-r[[:space:]]*//p' "$requirements" | while read -r included; do
      cat "$(dirname "$requirements")/$included"
    done
  )
  want=$(sha256sum <<<"$want" | cut -d' ' -f1)
  if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then return 0; fi
  echo "installing $requirements (pinned) into $venv" >&2
  ensure_uv
  # The system's python3 (the stamp's), never a Python uv would download. No bytecode up
  # front (uv's default): Python compiles each module on its first import, and most are never
  # imported.
  UV_PYTHON_DOWNLOADS=never "$UV_HOME/bin/uv" venv --quiet --allow-existing --python "$(command -v python3)" "$venv"
  UV_PYTHON_DOWNLOADS=never "$UV_HOME/bin/uv" pip install --quiet --python "$venv/bin/python" -r "$requirements"
  echo "$want" > "$stamp"
}
