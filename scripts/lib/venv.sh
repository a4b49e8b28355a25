# shellcheck shell=bash
# The one way the scripts make their pinned Python venvs (sourced, not run).
#
#   ensure_venv VENV NAME REQUIREMENTS
#
# creates VENV when it is missing and installs REQUIREMENTS into it, once: a stamp named NAME in
# VENV, over the interpreter's version and the file's content (and the files it includes with
# `-r`), makes the next call instant, and a changed pin reinstalls. Several NAMEs may share a venv.
ensure_venv() {
  local venv=$1 name=$2 requirements=$3
  local stamp="$venv/.$name.sha" want
  want=$(
    python3 --version
    cat "$requirements"
    sed -n 's/^-r[[:space:]]*//p' "$requirements" | while read -r included; do
      cat "$(dirname "$requirements")/$included"
    done
  )
  want=$(sha256sum <<<"$want" | cut -d' ' -f1)
  if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then return 0; fi
  echo "installing $requirements (pinned) into $venv" >&2
  python3 -m venv "$venv"
  # --no-compile: Python compiles each module on its first import instead of pip compiling
  # every file of every package up front (most are never imported; it was CPU the suite's
  # Rust build could use).
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-compile -r "$requirements"
  echo "$want" > "$stamp"
}
