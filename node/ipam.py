"""Address use of the node's xdpcni networks, for `xdpcnictl status` and the metrics: a full range
shows here and in the failing ADD's error (code 103), never as a failing STATUS (containerd would
mark the whole node NotReady).

The networks are the xdpcni plugins in the CNI config directory (the runtime's; default
/etc/cni/net.d, or XDPCNI_CNI_CONF_DIR / --cni-conf-dir): each is parsed exactly as the plugin
parses it, and cni.commands.status.address_use counts its leases.
"""

from __future__ import annotations

import glob
import json
import os

DEFAULT_CONF_DIR = "/etc/cni/net.d"


def conf_dir(explicit: str | None = None) -> str:
    return explicit or os.environ.get("XDPCNI_CNI_CONF_DIR", DEFAULT_CONF_DIR)


def _xdpcni_plugins(path: str) -> list[dict]:
    """The xdpcni plugin configs in one .conflist/.conf file, with the list's name and version."""
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict):
        return []
    plugins = data.get("plugins") if isinstance(data.get("plugins"), list) else [data]
    out = []
    for p in plugins:
        if isinstance(p, dict) and p.get("type") == "xdpcni":
            out.append(
                {
                    **p,
                    "name": data.get("name", p.get("name")),
                    "cniVersion": data.get("cniVersion", p.get("cniVersion")),
                }
            )
    return out


def address_use(directory: str | None = None) -> list[dict]:
    """[{network, range_set, ranges, size, used, free}] per built-in range set, or a row with an
    `error` for a network whose config or leases cannot be read."""
    from cni.commands.status import address_use as use
    from cni.errors import CniError
    from cni.netconf import parse

    rows = []
    for path in sorted(glob.glob(os.path.join(conf_dir(directory), "*.conf*"))):
        for plugin in _xdpcni_plugins(path):
            name = plugin.get("name") or "?"
            try:
                for row in use(parse(plugin, "ADD")):
                    rows.append({"network": name, **row})
            except (CniError, OSError, ValueError) as exc:
                rows.append({"network": name, "error": str(exc), "file": path})
    return rows
