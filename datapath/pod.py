"""Pod-level datapath work done on every CNI ADD/DEL: no compiling, only pins and netlink.

attach(): the pod program on the host-side veth's TC ingress (pod egress, anti-spoofing) and GRO
on the pod's eth0. A veth silently drops XDP-redirected frames (XDP mode: the NIC's devmap redirect
into the host veth) unless its peer runs NAPI, which GRO turns on (kernel >= 5.13) as an XDP
program would. Unlike an XDP program (`xdp_pod`, which pods made before this change still carry),
GRO leaves TSO/GSO on the host veth: the kernel strips NETIF_F_GSO_SOFTWARE from a veth whose peer
has an XDP program, so everything the stack delivered into the pod was segmented in software.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
from typing import TYPE_CHECKING

from . import attach as nl
from .attach import TC_HANDLE, TC_POD_FILTER, TC_PRIO
from .pins import open_program
from .rtnl import Rtnl

if TYPE_CHECKING:
    from pyroute2 import IPRoute


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


SIOCETHTOOL = 0x8946
ETHTOOL_GGRO = 0x2B
ETHTOOL_SGRO = 0x2C


def _ethtool_value(sock: socket.socket, ifname: str, cmd: int, value: int = 0) -> int:
    """One ETHTOOL_{G,S}* ioctl with a struct ethtool_value on `sock`'s namespace (any socket
    works, netlink included: the kernel passes unknown socket ioctls to dev_ioctl)."""
    buf = ctypes.create_string_buffer(struct.pack("=II", cmd, value), 8)
    ifr = struct.pack("16sP", ifname.encode(), ctypes.addressof(buf)).ljust(40, b"\0")
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifr)
    return struct.unpack("=II", buf.raw)[1]


def set_gro(sock: socket.socket, ifname: str, on: bool = True) -> None:
    _ethtool_value(sock, ifname, ETHTOOL_SGRO, int(on))


def gro_on(sock: socket.socket, ifname: str) -> bool:
    return _ethtool_value(sock, ifname, ETHTOOL_GGRO) != 0


def attach_pod_side_nl(pod_nl: Rtnl, pod_ifname: str) -> None:
    """GRO on the pod's eth0, through a socket in the pod's namespace (datapath/rtnl.py's)."""
    set_gro(pod_nl.sock, pod_ifname, True)


def detach_host_side(ipr: IPRoute, host_ifindex: int) -> None:
    nl.detach_tc_ingress(ipr, host_ifindex)


def attach_host_side_nl(nl: Rtnl, root: str, host_ifindex: int) -> None:
    """attach_host_side() over datapath/rtnl.py: clsact and our filter in one batch."""
    fd = open_program(root, "tc_pod")
    try:
        queue_host_side(nl, fd, host_ifindex)
        nl.flush()
    finally:
        os.close(fd)


def queue_host_side(nl: Rtnl, prog_fd: int, host_ifindex: int) -> None:
    """Queue clsact and our filter (program `prog_fd`) on the host veth for `nl`'s next flush."""
    nl.add_clsact(host_ifindex)
    nl.replace_bpf_filter(host_ifindex, prog_fd, TC_POD_FILTER, handle=TC_HANDLE, prio=TC_PRIO)
