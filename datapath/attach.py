"""Attach/detach XDP and TC (clsact ingress) programs with pyroute2 netlink calls."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from pyroute2.netlink.exceptions import NetlinkError

if TYPE_CHECKING:
    from pyroute2 import IPRoute

XDP_FLAGS_UPDATE_IF_NOEXIST = 1
XDP_FLAGS_SKB_MODE = 2
XDP_FLAGS_DRV_MODE = 4

TC_INGRESS_PARENT = "ffff:fff2"  # clsact's ingress hook
TC_PRIO = 1
TC_HANDLE = 1


def attach_xdp(ipr: IPRoute, ifindex: int, prog_fd: int, flags: int = XDP_FLAGS_DRV_MODE) -> None:
    """Attach (or atomically replace) the XDP program; native (driver) mode by default."""
    ipr.link("set", index=ifindex, xdp={"attrs": [("IFLA_XDP_FD", prog_fd), ("IFLA_XDP_FLAGS", flags)]})


# Names of our cls_bpf filters on clsact ingress (what `tc filter show` and CHECK look for).
TC_NIC_FILTER = "xdpcni_tc_nic"
TC_POD_FILTER = "xdpcni_tc_pod"


def detach_xdp(ipr: IPRoute, ifindex: int) -> None:
    """Remove an XDP program in either mode; a generic-mode one only goes with the SKB flag."""
    for flags in (XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE):
        try:
            ipr.link("set", index=ifindex, xdp={"attrs": [("IFLA_XDP_FD", -1), ("IFLA_XDP_FLAGS", flags)]})
        except NetlinkError as exc:
            if exc.code not in (errno.ENODEV, errno.EINVAL, errno.EOPNOTSUPP):
                raise


def xdp_prog_id(ipr: IPRoute, ifindex: int) -> int:
    """ID of the XDP program attached to the link, 0 when none."""
    link = ipr.get_links(ifindex)[0]
    xdp = link.get_attr("IFLA_XDP")
    if not xdp:
        return 0
    return xdp.get_attr("IFLA_XDP_PROG_ID") or 0


def ensure_clsact(ipr: IPRoute, ifindex: int) -> None:
    try:
        ipr.tc("add", "clsact", index=ifindex)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise


def attach_tc_ingress(ipr: IPRoute, ifindex: int, prog_fd: int, name: str) -> None:
    """Attach (or atomically replace) our direct-action filter on the clsact ingress hook."""
    ensure_clsact(ipr, ifindex)
    ipr.tc(
        "replace-filter",
        "bpf",
        index=ifindex,
        handle=TC_HANDLE,
        prio=TC_PRIO,
        fd=prog_fd,
        name=name,
        parent=TC_INGRESS_PARENT,
        classid=1,
        direct_action=True,
    )


def detach_tc_ingress(ipr: IPRoute, ifindex: int) -> None:
    """Remove our filter only (others' filters on the same hook stay); gone already is fine."""
    try:
        ipr.tc("del-filter", "bpf", index=ifindex, handle=TC_HANDLE, prio=TC_PRIO, parent=TC_INGRESS_PARENT)
    except NetlinkError as exc:
        if exc.code not in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
            raise


def tc_ingress_prog_names(ipr: IPRoute, ifindex: int) -> list[str]:
    names = []
    try:
        filters = ipr.get_filters(index=ifindex, parent=TC_INGRESS_PARENT)
    except NetlinkError:
        return names
    for f in filters:
        opts = f.get_attr("TCA_OPTIONS")
        if opts is not None and opts.get_attr("TCA_BPF_NAME"):
            names.append(opts.get_attr("TCA_BPF_NAME"))
    return names
