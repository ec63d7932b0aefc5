"""Per-device forwarding switches, written through /proc/sys of the caller's network namespace.

xdpcni turns forwarding on per device (NIC and host-side veths) and leaves the node's global
switch alone: bpf_fib_lookup and the kernel's fallback path need it on the devices involved, and
with the global switch off any packet the kernel forwards is provably not one the fast path took.
"""

from __future__ import annotations

import os

# procfs to write sysctls through. /proc/sys is read-only in an unprivileged container, so the
# DaemonSet mounts the host's /proc at /host/proc and sets XDPCNI_PROCFS=/host/proc (Cilium's
# --procfs does the same). /proc/sys/net resolves in the *writer's* network namespace whichever
# procfs mount it goes through, so writes from a pod-namespace thread still land in the pod.
PROCFS = os.environ.get("XDPCNI_PROCFS", "/proc")


def sys_net(rel: str) -> str:
    """Path of net sysctl `rel` (e.g. "ipv4/conf/eth0/forwarding") under PROCFS/sys/net."""
    return f"{PROCFS}/sys/net/{rel}"


def _write(path: str, value: str) -> bool:
    """One write(2) of `value` (an unbuffered fd: no text layer, no O_CREAT/O_TRUNC, as
    sysctl(8) writes); False when the sysctl does not exist."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)
    return True


def _ensure_on(path: str) -> bool:
    """The switch at `path` on ("1"): written only when it reads otherwise. A device made while
    the node forwards globally (net.ipv4.ip_forward=1, as kube-proxy needs) starts with
    forwarding on, and writing a forwarding switch costs far more than reading it (the kernel
    then flushes the routing cache and announces the change: ~0.13 ms against ~0.02 ms here).
    False when the sysctl does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        if os.read(fd, 16).strip() == b"1":
            return True
    finally:
        os.close(fd)
    return _write(path, "1")


def enable_forwarding(ifname: str, ipv4: bool = True, ipv6: bool = True) -> None:
    """Forwarding on `ifname` for the families asked (a pod's host veth: the families of its
    addresses), each switch written only when it is off (_ensure_on)."""
    if ipv4:
        _ensure_on(sys_net(f"ipv4/conf/{ifname}/forwarding"))
    if ipv6:
        _ensure_on(sys_net(f"ipv6/conf/{ifname}/forwarding"))
        # Kernel >= 6.17: IPv6 forwarding on this device even with the global switch off; without
        # it the kernel fallback for IPv6 (e.g. hop limit exceeded) needs all.forwarding=1.
        _ensure_on(sys_net(f"ipv6/conf/{ifname}/force_forwarding"))


def disable_ipv6_ra(ifname: str) -> None:
    """A pod's host veth must never configure the node from router advertisements (a pod could
    send them), whether or not IPv6 is forwarded on it."""
    _write(sys_net(f"ipv6/conf/{ifname}/accept_ra"), "0")


def read_snmp(netns_proc_pid: int | None = None) -> dict[str, int]:
    """`Ip:` and `Ip6` counters of the caller's network namespace (per-namespace files)."""
    base = f"/proc/{netns_proc_pid}/net" if netns_proc_pid else "/proc/self/net"
    out: dict[str, int] = {}
    with open(os.path.join(base, "snmp")) as fh:
        lines = fh.read().splitlines()
    for head, vals in zip(lines[::2], lines[1::2]):
        names = head.split()[1:]
        prefix = head.split(":")[0]
        for n, v in zip(names, vals.split()[1:]):
            out[f"{prefix}{n}"] = int(v)
    with open(os.path.join(base, "snmp6")) as fh:
        for line in fh:
            parts = line.split()
            if len(parts) == 2:
                out[parts[0]] = int(parts[1])
    return out
