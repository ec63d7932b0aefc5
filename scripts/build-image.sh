#!/usr/bin/env bash
# `make image`: the xdpcni container image (localhost/xdpcni:VERSION), built offline from
# Debian packages and PyPI only (no registry is reachable here, so no `FROM debian`):
#   1. mmdebstrap makes a Debian 12 rootfs with python3, python3-venv, libbpf1 and iproute2,
#      from this machine's own apt sources;
#   2. a customize hook copies the checkout (the files git tracks, plus the clang-built BPF
#      objects from bpf/build: no compiler in the image) to /opt/xdpcni and installs it with
#      its Python dependencies into /opt/xdpcni/.venv;
#   3. `podman import` turns the tarball into an image.
# The DaemonSet (conf/kubernetes/30-daemonset.yaml) runs /opt/xdpcni/.venv/bin/xdpcnictl from it.
set -euo pipefail
cd "$(dirname "$0")/.."
HERE=$(pwd)
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE=${IMAGE:-localhost/xdpcni:$VERSION}
SUITE=${SUITE:-bookworm}
say() { printf 'image: %s\n' "$*"; }

for tool in mmdebstrap podman; do
  if ! command -v "$tool" >/dev/null; then
    say "installing $tool"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$tool" >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$tool" >/dev/null; }
  fi
done
ls bpf/build/*.o >/dev/null 2>&1 || { echo "image: no BPF objects in bpf/build: run 'make setup' first" >&2; exit 1; }

sources=""
for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list; do
  [ -f "$f" ] && grep -q "^Types:.*deb\|^deb " "$f" && { sources=$f; break; }
done
[ -n "$sources" ] || { echo "image: no apt sources on this machine to build the rootfs from" >&2; exit 1; }

# pip inside the rootfs trusts what this machine's pip trusts (a site proxy's CA, if any) while
# it builds; the file is removed before the image is made.
HOST_CA=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
# Commands in the rootfs get a clean environment: none of this machine's PIP_*/SSL_* settings
# (they name host paths) leak into the build.
export CLEAN_ENV="env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 PIP_CERT=/tmp/build-ca.crt SSL_CERT_FILE=/tmp/build-ca.crt"

work=$(mktemp -d /tmp/xdpcni-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
# The checkout as it is (tracked and new files that .gitignore does not exclude: no venv, no
# caches), plus the built objects.
git ls-files -z --cached --others --exclude-standard \
  | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
  | tar --null -T - -cf "$work/src.tar"
tar -rf "$work/src.tar" bpf/build/*.o

say "building the $SUITE rootfs with mmdebstrap (sources: $sources)"
mmdebstrap --quiet --variant=minbase \
  --include=python3,python3-venv,libbpf1,iproute2,ca-certificates \
  --dpkgopt='path-exclude=/usr/share/{doc,man,info,locale}/*' \
  --customize-hook="mkdir -p \"\$1/opt/xdpcni\" && tar -xf $work/src.tar -C \"\$1/opt/xdpcni\"" \
  --customize-hook='cp /etc/resolv.conf "$1/etc/resolv.conf"' \
  --customize-hook="cp $HOST_CA \"\$1/tmp/build-ca.crt\"" \
  --customize-hook='chroot "$1" $CLEAN_ENV python3 -m venv --system-site-packages /opt/xdpcni/.venv' \
  --customize-hook='chroot "$1" $CLEAN_ENV /opt/xdpcni/.venv/bin/pip install -q --no-cache-dir --disable-pip-version-check wheel && chroot "$1" $CLEAN_ENV /opt/xdpcni/.venv/bin/pip install -q --no-cache-dir --disable-pip-version-check --no-build-isolation -e /opt/xdpcni' \
  --customize-hook='chroot "$1" $CLEAN_ENV /opt/xdpcni/.venv/bin/python -c "import pyroute2, yaml, kubernetes, datapath.build as b; assert all(p.exists() for p in b.objects().values())"' \
  --customize-hook='rm -f "$1/etc/resolv.conf" "$1/tmp/build-ca.crt"' \
  "$SUITE" "$work/rootfs.tar" "$sources"

say "importing $(du -h "$work/rootfs.tar" | cut -f1) rootfs as $IMAGE"
podman import \
  --change 'ENV PATH=/opt/xdpcni/.venv/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'WORKDIR /opt/xdpcni' \
  --change 'CMD ["/opt/xdpcni/.venv/bin/xdpcnictl", "--help"]' \
  --change "LABEL org.opencontainers.image.title=xdpcni org.opencontainers.image.version=$VERSION" \
  "$work/rootfs.tar" "$IMAGE" >/dev/null
say "built $IMAGE ($(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')) from $HERE"
