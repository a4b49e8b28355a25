#!/usr/bin/env bash
# Installs a released `latch` by version and verifies its checksum before anything runs it:
# the action's first step (and usable by any pipeline). Downloads
# latch-<version>-<target>.tar.gz and SHA256SUMS from LATCH_RELEASE_URL (where scripts/release's
# output was published; file:// works too), and refuses the archive unless its SHA-256 is the
# one SHA256SUMS lists for it and, when LATCH_SHA256 pins one (recommended: the workflow then
# trusts only the archive it was reviewed with, not whatever the release server says), that one.
#
#   LATCH_VERSION=0.1.0 LATCH_RELEASE_URL=https://… [LATCH_SHA256=…] [LATCH_TARGET=…] \
#     [LATCH_INSTALL_DIR=…] install-latch.sh
#
# The target defaults to this machine's static Linux build (x86_64 or aarch64, musl). The binary
# lands in LATCH_INSTALL_DIR (default $RUNNER_TEMP/latch-bin, else a temporary directory), which
# is added to $GITHUB_PATH when it is set and printed on stdout.
set -euo pipefail

die() { echo "install-latch: $*" >&2; exit 1; }

version=${LATCH_VERSION:?set LATCH_VERSION, e.g. 0.1.0}
base=${LATCH_RELEASE_URL:?set LATCH_RELEASE_URL to where the release archives are published}
base=${base%/}
base=${base//\{version\}/$version}
if [[ -z ${LATCH_TARGET:-} ]]; then
  case $(uname -m) in
    x86_64|amd64) LATCH_TARGET=x86_64-unknown-linux-musl ;;
    aarch64|arm64) LATCH_TARGET=aarch64-unknown-linux-musl ;;
    *) die "no release for $(uname -m); set LATCH_TARGET" ;;
  esac
fi
name=latch-$version-$LATCH_TARGET
install_dir=${LATCH_INSTALL_DIR:-${RUNNER_TEMP:-$(mktemp -d)}/latch-bin}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fetch() { curl --fail --silent --show-error --location --retry 3 --proto '=https,file' -o "$work/$1" "$base/$1"; }
fetch SHA256SUMS || die "cannot download $base/SHA256SUMS"
fetch "$name.tar.gz" || die "cannot download $base/$name.tar.gz"

listed=$(awk -v file="$name.tar.gz" '$2 == file || $2 == "*" file { print $1 }' "$work/SHA256SUMS")
[[ $listed =~ ^[0-9a-f]{64}$ ]] || die "SHA256SUMS lists no single checksum for $name.tar.gz"
if [[ -n ${LATCH_SHA256:-} && ${LATCH_SHA256,,} != "$listed" ]]; then
  die "SHA256SUMS says $listed for $name.tar.gz, the workflow pins ${LATCH_SHA256}: refusing"
fi
actual=$(sha256sum "$work/$name.tar.gz" | cut -d' ' -f1)
[[ $actual == "$listed" ]] || die "$name.tar.gz has SHA-256 $actual, SHA256SUMS says $listed: refusing"

tar -xzf "$work/$name.tar.gz" -C "$work" "$name/latch"
mkdir -p "$install_dir"
install -m 0755 "$work/$name/latch" "$install_dir/latch"
reported=$("$install_dir/latch" --version)
[[ $reported == "latch $version" ]] || die "the archive's binary says '$reported', not latch $version"
if [[ -n ${GITHUB_PATH:-} ]]; then echo "$install_dir" >>"$GITHUB_PATH"; fi
echo "install-latch: $reported ($LATCH_TARGET, sha256 $actual) in $install_dir" >&2
echo "$install_dir"
