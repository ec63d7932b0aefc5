#!/usr/bin/env bash
# Install xdpcni on this node the way a kubelet's runtime expects it:
#   /opt/cni/bin/xdpcni                 the plugin (the lean client, cni/client.py, on this venv's python)
#   /opt/cni/bin/xdpcnictl              the operator tool
#   /etc/cni/net.d/10-xdpcni.conflist   network config (kept if it exists)
#   /etc/xdpcni/xdpcni.yaml             node config: set `nic:` to the node's uplink (kept if it exists)
# `--uninstall` unloads the datapath and removes the files (edited configs are kept as *.bak).
# DESTDIR=/some/dir installs under that prefix (used by the tests; nothing is loaded then).
set -euo pipefail
cd "$(dirname "$0")/.."
HERE=$(pwd)
DEST=${DESTDIR:-}
BIN="$DEST/opt/cni/bin"
NETD="$DEST/etc/cni/net.d"
ETC="$DEST/etc/xdpcni"
PY="$HERE/.venv/bin/python"

say() { printf 'install: %s\n' "$*"; }

if [ "${1:-}" = "--uninstall" ]; then
  if [ -z "$DEST" ] && [ -x "$PY" ]; then
    "$PY" -m node.ctl unload || true
  fi
  rm -f "$BIN/xdpcni" "$BIN/xdpcnictl"
  for f in "$NETD/10-xdpcni.conflist" "$ETC/xdpcni.yaml"; do
    [ -e "$f" ] && mv -f "$f" "$f.bak" && say "kept your config as $f.bak"
  done
  say "removed xdpcni from $BIN"
  exit 0
fi

[ -x "$PY" ] || { echo "install: run 'make setup' first (no venv at $HERE/.venv)" >&2; exit 1; }
mkdir -p "$BIN" "$NETD" "$ETC"
# The plugin: the lean client (cni/client.py) under the venv's python3 -I -S, no shell in between.
"$PY" -c 'import sys; from cni.client import write_launcher; write_launcher(sys.argv[1])' "$BIN/xdpcni"
cat > "$BIN/xdpcnictl.tmp" <<LAUNCHER
#!/bin/sh
# xdpcni launcher (scripts/install.sh): runs node.ctl from $HERE
exec "$PY" -m node.ctl "\$@"
LAUNCHER
chmod 0755 "$BIN/xdpcnictl.tmp"
mv -f "$BIN/xdpcnictl.tmp" "$BIN/xdpcnictl"
say "installed $BIN/xdpcni and $BIN/xdpcnictl"
if [ ! -e "$NETD/10-xdpcni.conflist" ]; then
  install -m 0644 conf/10-xdpcni.conflist "$NETD/10-xdpcni.conflist"
  say "wrote $NETD/10-xdpcni.conflist (edit ipam.ranges to this node's pod CIDRs)"
else
  say "kept existing $NETD/10-xdpcni.conflist"
fi
if [ ! -e "$ETC/xdpcni.yaml" ]; then
  install -m 0644 conf/xdpcni.yaml "$ETC/xdpcni.yaml"
  say "wrote $ETC/xdpcni.yaml (set nic: to this node's uplink, then: xdpcnictl load)"
else
  say "kept existing $ETC/xdpcni.yaml"
fi
