#!/usr/bin/env bash
# The installable `latch` (run by ./scripts/test): `cargo install --locked --path
# crates/latch-cli` works (the lock file holds; debug profile); scripts/release makes
# an archive and SHA256SUMS for the host target (the debug profile: it reuses the workspace's
# build; the archive and checksum steps are the release's own); and the GitHub Action's
# install-latch.sh installs that archive from its URL, runs it, and refuses a tampered archive
# and a checksum other than the one the workflow pins.
set -euo pipefail
cd "$(dirname "$0")/../.."

t0=$SECONDS
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
host=$(rustc -vV | sed -n 's/^host: //p')

# `cargo install --locked --path crates/latch-cli`, as the docs give it, on the debug profile
# and the workspace's target dir (what ./scripts/test built first: seconds, not a build of its own).
cargo install --quiet --locked --debug --path crates/latch-cli --root "$work/root" \
  --target-dir "${CARGO_TARGET_DIR:-target}" 2>"$work/install.log" || { cat "$work/install.log" >&2; exit 1; }
"$work/root/bin/latch" --version >/dev/null
echo "    cargo install --locked: ok ($((SECONDS - t0)) s)"
scripts/release --profile dev --target host --out "$work/dist" >"$work/release.log" 2>&1 \
  || { cat "$work/release.log" >&2; exit 1; }
version=$(sed -n 's/^latch \(.*\)/\1/p' < <("${CARGO_TARGET_DIR:-target}/debug/latch" --version))
archive=latch-$version-$host.tar.gz
(cd "$work/dist" && sha256sum --check --quiet SHA256SUMS)
tar -tzf "$work/dist/$archive" | sort | diff -u - <(printf '%s\n' "latch-$version-$host/" \
  "latch-$version-$host/README.md" "latch-$version-$host/latch" "latch-$version-$host/latch.1")
echo "    release: $archive and SHA256SUMS ($((SECONDS - t0)) s)"

install_latch() {
  LATCH_VERSION=$version LATCH_RELEASE_URL="file://$1" LATCH_TARGET=$host \
    LATCH_INSTALL_DIR="$work/bin" "${@:2}" examples/github-actions/latch-request/install-latch.sh
}
# GIVEN the published release WHEN the action installs it THEN `latch` runs, and is on GITHUB_PATH
: >"$work/github_path"
GITHUB_PATH=$work/github_path install_latch "$work/dist" env 2>/dev/null >/dev/null
[[ $("$work/bin/latch" --version) == "latch $version" && $(cat "$work/github_path") == "$work/bin" ]]
pinned=$(cut -d' ' -f1 "$work/dist/SHA256SUMS")
install_latch "$work/dist" env LATCH_SHA256="$pinned" 2>/dev/null >/dev/null

# GIVEN a pin the release does not match WHEN installing THEN it is refused
if install_latch "$work/dist" env LATCH_SHA256="${pinned//?/0}" 2>"$work/err" >/dev/null; then
  echo "install-latch accepted an archive the workflow's pin does not name" >&2; exit 1
fi
grep -q "refusing" "$work/err"
# GIVEN an archive altered after SHA256SUMS was made WHEN installing THEN it is refused
mkdir "$work/tampered"
cp "$work/dist/SHA256SUMS" "$work/tampered/"
{ cat "$work/dist/$archive"; printf 'x'; } >"$work/tampered/$archive"
rm -rf "${work:?}/bin"
if install_latch "$work/tampered" env 2>"$work/err" >/dev/null; then
  echo "install-latch accepted an archive whose checksum differs from SHA256SUMS" >&2; exit 1
fi
grep -q "refusing" "$work/err"
[[ ! -e $work/bin/latch ]]
echo "    install-latch: installs the release by version, refuses a tampered archive or another pin"
