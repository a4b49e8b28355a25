# `latch` in a container, for GitLab CI and Jenkins jobs: built from a release (scripts/release's
# archives and SHA256SUMS), never from source, so the image holds exactly the binary the
# checksums name. The build context is the release's output directory:
#
#   scripts/release                               # → target/dist/<version>/
#   docker buildx build --platform linux/amd64,linux/arm64 --build-arg VERSION=<version> \
#     -f Dockerfile -t registry.example.com/ci/latch:<version> target/dist/<version>
#
# The base is debian-slim, not distroless: a GitLab job's `script` and a Jenkins `sh` step run
# in a shell inside the image, and `latch` verifies TLS against the system's CA certificates.
# It runs as an unprivileged user and has no entrypoint, as CI runners expect.
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS unpack
ARG VERSION
ARG TARGETARCH
WORKDIR /release
COPY SHA256SUMS latch-*-linux-musl.tar.gz ./
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The archive for the image's platform, refused unless SHA256SUMS names its checksum.
RUN case "${TARGETARCH}" in \
      amd64) target=x86_64-unknown-linux-musl ;; \
      arm64) target=aarch64-unknown-linux-musl ;; \
      *) echo "no latch release for ${TARGETARCH}" >&2; exit 1 ;; \
    esac \
 && name="latch-${VERSION:?pass --build-arg VERSION}-${target}" \
 && grep " ${name}.tar.gz\$" SHA256SUMS | sha256sum --check --strict - \
 && tar -xzf "${name}.tar.gz" \
 && install -D -m 0755 "${name}/latch" /out/latch

FROM ${BASE}
# Unpinned on purpose: each rebuild takes the suite's current CA bundle (a pin to a Debian
# stable version also breaks the build as soon as the suite moves past it).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --create-home --shell /bin/bash latch
COPY --from=unpack /out/latch /usr/local/bin/latch
USER 10001
WORKDIR /home/latch
CMD ["latch", "--help"]
