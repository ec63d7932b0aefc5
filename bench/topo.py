"""The benchmark's simulated node: the project's Cluster(1) with one pod, plus switches that put
the same wires into each configuration under test.

Configurations (one node, one pod, the same addresses, routes and permanent neighbours throughout;
plumbing as the reference ptp plugin does it: host routes, permanent neighbours, forwarding on):
  kernel  no program on the NIC, none on the host veth, none on the pod's eth0: plain kernel
          forwarding, exactly what the ptp plugin leaves behind;
  tc      xdpcni TC mode: tc_nic on the NIC's clsact ingress (bpf_redirect_peer into the pod),
          tc_pod on the host veth, xdp_pod on the pod's eth0 (as `xdpcni` ADD attaches it);
  xdp     xdpcni XDP mode: xdp_nic in native mode on the NIC (a veth here), tc_pod, xdp_pod.
The pod's "door" (first hook) replaces xdp_pod by a counting XDP_DROP for XDP delivery, or adds a
counting TC ingress drop on the pod's eth0 for skb delivery (kernel path, TC mode).

Everything is named with a per-run prefix "xb" + 6 hex digits (not the tests' "xc", so the test
suite's `make clean-test-state` never removes a running benchmark) and pinned under
/sys/fs/bpf/xdpcni-bench/; close() removes all of it, also after a failure.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass

from pyroute2 import IPRoute, netns

from datapath import attach
from datapath.loader import NodeState, open_program
from datapath.netns import entered
from datapath.pins import LOCK_DIR, RUN_DIR, PinLayout
from sim.topology import Cluster, Node, Pod

BENCH_PIN_BASE = "/sys/fs/bpf/xdpcni-bench"
PREFIX_CHARS = "xb"


@dataclass(frozen=True)
class Config:
    nic: str | None  # None, "tc", "xdp" or "drop"
    pod_egress: bool  # tc_pod on the host veth
    pod_xdp: bool  # xdp_pod on the pod's eth0
    door: str | None = None  # None, "xdp" (replaces xdp_pod) or "tc" (TC ingress drop on eth0)


CONFIGS = {
    "kernel": Config(nic=None, pod_egress=False, pod_xdp=False),
    "tc": Config(nic="tc", pod_egress=True, pod_xdp=True),
    "xdp": Config(nic="xdp", pod_egress=True, pod_xdp=True),
    # The veth model's ceiling: generator + NIC receive only (TC drop on the NIC's ingress).
    "nic-drop": Config(nic="drop", pod_egress=False, pod_xdp=False),
    # Live-frames model: the NIC program runs from BPF_PROG_TEST_RUN, nothing attached to the NIC.
    "live-kernel": Config(nic=None, pod_egress=False, pod_xdp=False),
    "live-xdp": Config(nic=None, pod_egress=True, pod_xdp=True),
}


def door_kind(name: str) -> str:
    """The pod's first hook for this configuration's delivery: XDP for frames XDP-redirected into
    the pod veth, TC ingress for skbs (kernel forwarding, bpf_redirect_peer)."""
    return "xdp" if name in ("xdp", "live-xdp") else "tc"


def bench_prefix() -> str:
    return PREFIX_CHARS + secrets.token_hex(3)


class BenchNode:
    """One node (datapath loaded) with one pod; switch configurations with apply()."""

    def __init__(self, progs, log=print, prefix: str | None = None):
        self.progs = progs
        self.log = log
        self.cluster = Cluster(1, prefix=prefix or bench_prefix())
        self.fds: dict[str, int] = {}
        self.toolchain = "?"
        self.current: Config | None = None
        try:
            self.node: Node = self.cluster.nodes[0]
            self.node.pin_root = f"{BENCH_PIN_BASE}/{self.node.ns}"
            self.log(f"  loading the xdpcni datapath in {self.node.ns}")
            try:
                self.node.load("tc")
            except subprocess.CalledProcessError as exc:
                raise RuntimeError(
                    f"xdpcnictl load failed: {(exc.stderr or exc.stdout or '')[-2000:]}"
                ) from exc
            state = NodeState.read(self.node.pin_root)
            self.toolchain = state.toolchain if state else "?"
            self.log(f"  datapath toolchain: {self.toolchain}")
            self.pod: Pod = self.node.add_pod()
            for name in ("xdp_nic", "tc_nic", "tc_pod", "xdp_pod"):
                self.fds[name] = open_program(self.node.pin_root, name)
            with IPRoute(netns=self.ns_path(self.node.ns)) as ipr:
                self.nic_ifindex = ipr.link_lookup(ifname=self.node.nic)[0]
        except BaseException:
            self.close()
            raise

    @staticmethod
    def ns_path(ns: str) -> str:
        return f"/var/run/netns/{ns}"

    @property
    def wire(self) -> str:
        return self.cluster.wire

    def apply(self, cfg: Config) -> None:
        """Put every attachment into the state `cfg` asks for (idempotent)."""
        node, pod = self.node, self.pod
        with IPRoute(netns=self.ns_path(node.ns)) as ipr:
            nic = self.nic_ifindex
            if cfg.nic == "tc":
                attach.attach_tc_ingress(ipr, nic, self.fds["tc_nic"], attach.TC_NIC_FILTER)
                attach.detach_xdp(ipr, nic)
            elif cfg.nic == "drop":  # the veth model's ceiling: count and drop at the NIC's TC ingress
                attach.attach_tc_ingress(ipr, nic, self.progs.fd("door_tc"), "bench_nic_drop")
                attach.detach_xdp(ipr, nic)
            elif cfg.nic == "xdp":
                attach.attach_xdp(ipr, nic, self.fds["xdp_nic"], attach.XDP_FLAGS_DRV_MODE)
                attach.detach_tc_ingress(ipr, nic)
            else:
                attach.detach_xdp(ipr, nic)
                attach.detach_tc_ingress(ipr, nic)
            if cfg.pod_egress:
                attach.attach_tc_ingress(ipr, pod.link.host_ifindex, self.fds["tc_pod"], attach.TC_POD_FILTER)
            else:
                attach.detach_tc_ingress(ipr, pod.link.host_ifindex)
        with IPRoute(netns=self.ns_path(pod.ns)) as pipr:
            eth0 = pod.link.pod_ifindex
            if cfg.door == "xdp":
                attach.attach_xdp(pipr, eth0, self.progs.fd("door_xdp"), attach.XDP_FLAGS_DRV_MODE)
            elif cfg.pod_xdp:
                attach.attach_xdp(pipr, eth0, self.fds["xdp_pod"], attach.XDP_FLAGS_DRV_MODE)
            else:
                attach.detach_xdp(pipr, eth0)
            if cfg.door == "tc":
                attach.attach_tc_ingress(pipr, eth0, self.progs.fd("door_tc"), "bench_door_tc")
            else:
                attach.detach_tc_ingress(pipr, eth0)
        self.current = cfg

    def configure(self, name: str, door: bool = False) -> Config:
        base = CONFIGS[name]
        cfg = Config(base.nic, base.pod_egress, base.pod_xdp, door_kind(name) if door else None)
        self.apply(cfg)
        return cfg

    def link_stats(self, ns: str, ifname: str) -> dict[str, int]:
        with IPRoute(netns=self.ns_path(ns)) as ipr:
            link = ipr.get_links(ipr.link_lookup(ifname=ifname)[0])[0]
            st = link.get_attr("IFLA_STATS64")
            return {k: st[k] for k in ("rx_packets", "tx_packets", "rx_dropped", "tx_dropped")}

    def close(self) -> None:
        """Detach the benchmark's programs, then the cluster's own teardown (pins, namespaces)."""
        try:
            if self.current is not None and getattr(self, "pod", None) is not None:
                self.apply(CONFIGS["kernel"])
        except Exception as exc:  # the namespaces go anyway, taking attachments with them
            self.log(f"  cleanup: detach failed: {exc}")
        for fd in self.fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()
        self.cluster.teardown()
        # Namespaces the phases made under this run's prefix and could not remove themselves (a
        # signal between create and bookkeeping): the prefix is this run's alone.
        prefix = f"{self.cluster.prefix}-"
        try:
            left = [n for n in os.listdir("/var/run/netns") if n.startswith(prefix)]
        except FileNotFoundError:
            left = []
        for name in left:
            try:
                netns.remove(name)
                self.log(f"  cleanup: removed leftover namespace {name}")
            except OSError as exc:
                self.log(f"  cleanup: namespace {name}: {exc}")
        shutil.rmtree(f"{BENCH_PIN_BASE}/{self.cluster.prefix}-n0", ignore_errors=True)
        # State, lock and claim files the datapath and the CNI keep in /run for this pin root.
        if getattr(self, "node", None) is not None:
            key = PinLayout(self.node.pin_root).key
            for path in glob.glob(os.path.join(RUN_DIR, glob.escape(key) + "*")) + glob.glob(
                os.path.join(LOCK_DIR, glob.escape(key) + "*.lock")
            ):
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    try:
                        os.unlink(path)
                    except OSError:
                        pass
        try:
            os.rmdir(BENCH_PIN_BASE)
        except OSError:
            pass


def in_ns(ns: str):
    return entered(ns)
