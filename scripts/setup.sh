#!/usr/bin/env bash
# Idempotent node/dev set-up for xdpcni on Debian 12: apt packages, the kernel-headers fix BCC
# needs on this kernel, a venv that sees Debian's bcc, the project installed into it, bpffs.
# Every step checks first and says in one line what it did (or that nothing was needed).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

APT_PKGS=(python3-bpfcc libbpf1 libbpf-dev bpftool clang clang-format llvm iproute2 ethtool tcpdump netsniff-ng sockperf
          iperf3 wrk containernetworking-plugins nftables iptables conntrack podman runc busybox-static
          linux-headers-amd64 python3-venv util-linux procps
          iputils-ping)

say() { printf 'setup: %s\n' "$*"; }

missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing ${#missing[@]} Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "Debian packages present (${#APT_PKGS[@]})"
fi

# BCC compiles against /lib/modules/$(uname -r)/build. Debian ships no headers for this kernel,
# but the networking uapi is stable, so the newest installed linux-headers tree works.
kver=$(uname -r)
if [ ! -e "/lib/modules/$kver/build/include" ]; then
  hdr=$(ls -d /lib/modules/*/build 2>/dev/null | grep -v "/$kver/" | sort -V | tail -n1 || true)
  [ -n "$hdr" ] || { echo "setup: no kernel headers found after installing linux-headers-amd64" >&2; exit 1; }
  target=$(dirname "$hdr")
  if [ -e "/lib/modules/$kver" ] && [ ! -L "/lib/modules/$kver" ]; then
    ln -sfn "$(readlink -f "$hdr")" "/lib/modules/$kver/build"
    say "kernel headers: linked /lib/modules/$kver/build -> $(readlink -f "$hdr") (no $kver headers package exists)"
  else
    ln -sfn "$target" "/lib/modules/$kver"
    say "kernel headers: linked /lib/modules/$kver -> $target (no $kver headers package exists)"
  fi
else
  say "kernel headers for BCC present (/lib/modules/$kver/build)"
fi

# The venv must come from Debian's python3 so --system-site-packages exposes python3-bpfcc.
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import bcc' 2>/dev/null; then
  rm -rf "$VENV"
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
  say "created venv $VENV from /usr/bin/python3 (sees Debian's bcc)"
fi
stamp="$VENV/.xdpcni-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/pip" install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -c 'import pyroute2, scapy, yaml, bcc, datapath, cni' 
  touch "$stamp"
  say "installed xdpcni and its Python packages into $VENV"
else
  say "venv up to date ($VENV)"
fi

# The datapath programs as clang/libbpf objects (bpf/build/*.o): make rebuilds only what changed.
if make -s -C bpf >/tmp/xdpcni-bpf-build.log 2>&1; then
  say "BPF objects built (bpf/build: $(ls bpf/build/*.o | wc -l) programs, clang + libbpf CO-RE)"
else
  cat /tmp/xdpcni-bpf-build.log >&2
  echo "setup: the clang build of bpf/ failed (log above)" >&2
  exit 1
fi

# mode=0700 as systemd mounts it: on a world-writable bpffs any local user can create the pin root
# first and steer the datapath (the loader refuses such a root; this keeps it from happening).
if ! mountpoint -q /sys/fs/bpf; then
  mount -t bpf -o mode=0700 bpf /sys/fs/bpf
  say "mounted bpffs on /sys/fs/bpf (mode 0700)"
elif [ "$(stat -c %a /sys/fs/bpf)" != "700" ]; then
  old=$(stat -c %a /sys/fs/bpf)
  chmod 0700 /sys/fs/bpf  # bpffs applies mode= only at mount time; its root inode takes chmod
  say "bpffs root was mode $old; now 0700"
else
  say "bpffs mounted (mode 0700)"
fi
