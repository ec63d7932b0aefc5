"""Pod-level datapath work done on every CNI ADD/DEL: no compiling, only pins and netlink.

attach(): the pod program on the host-side veth's TC ingress (pod egress, anti-spoofing) and the
XDP_PASS program on the pod's eth0 (without it a veth silently drops XDP-redirected frames).
"""

from __future__ import annotations

import os

from pyroute2 import IPRoute

from . import attach as nl
from .attach import TC_HANDLE, TC_POD_FILTER, TC_PRIO, XDP_FLAGS_DRV_MODE
from .loader import open_program
from .rtnl import Rtnl


def attach_host_side(ipr: IPRoute, root: str, host_ifindex: int) -> None:
    fd = open_program(root, "tc_pod")
    try:
        nl.attach_tc_ingress(ipr, host_ifindex, fd, nl.TC_POD_FILTER)
    finally:
        os.close(fd)


def attach_nic(ipr: IPRoute, root: str, nic_ifindex: int, mode: str) -> None:
    """(Re-)attach the pinned NIC program for `mode` as the loader does: native XDP, or TC
    clsact ingress. For tools and tests that detached it; a load attaches its fresh programs."""
    name = "xdp_nic" if mode == "xdp" else "tc_nic"
    fd = open_program(root, name)
    try:
        if mode == "xdp":
            nl.attach_xdp(ipr, nic_ifindex, fd, nl.XDP_FLAGS_DRV_MODE)
        else:
            nl.attach_tc_ingress(ipr, nic_ifindex, fd, nl.TC_NIC_FILTER)
    finally:
        os.close(fd)


def attach_pod_side(pod_ipr: IPRoute, root: str, pod_ifindex: int) -> None:
    """pod_ipr is an IPRoute bound to the pod's namespace; the fd is resolved in our process."""
    fd = open_program(root, "xdp_pod")
    try:
        nl.attach_xdp(pod_ipr, pod_ifindex, fd, nl.XDP_FLAGS_DRV_MODE)
    finally:
        os.close(fd)


def detach_host_side(ipr: IPRoute, host_ifindex: int) -> None:
    nl.detach_tc_ingress(ipr, host_ifindex)


def attach_host_side_nl(nl: Rtnl, root: str, host_ifindex: int) -> None:
    """attach_host_side() over datapath/rtnl.py: clsact and our filter in one batch."""
    fd = open_program(root, "tc_pod")
    try:
        nl.add_clsact(host_ifindex)
        nl.replace_bpf_filter(host_ifindex, fd, TC_POD_FILTER, handle=TC_HANDLE, prio=TC_PRIO)
        nl.flush()
    finally:
        os.close(fd)


def attach_pod_side_nl(pod_nl: Rtnl, root: str, pod_ifindex: int) -> None:
    """attach_pod_side() over a datapath/rtnl.py socket in the pod's namespace."""
    fd = open_program(root, "xdp_pod")
    try:
        pod_nl.set_xdp(pod_ifindex, fd, XDP_FLAGS_DRV_MODE)
        pod_nl.flush()
    finally:
        os.close(fd)
