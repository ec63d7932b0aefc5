"""Node lifecycle: compile the programs with BCC, pin them and their maps, attach to the NIC.

Runs once per node (and again to upgrade). Maps are pinned, so loading again reuses them: pods
keep their entries, and the NIC and pod programs are replaced atomically (XDP replace, TC
replace-filter), so no packet is lost across a reload. The pod-level code (CNI) never compiles:
it opens the pins this module leaves behind.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pyroute2 import IPRoute

from . import abi, attach, libbpf, probes, sysctl
from .bccsrc import flatten
from .config import ConfigError, NodeConfig
from .maps import PinnedMap
from .pins import PROGRAMS, PinLayout

BPF_DIR = Path(os.environ.get("XDPCNI_BPF_DIR", Path(__file__).resolve().parent.parent / "bpf"))

# program name -> (source file, BCC program type name)
PROGRAM_SOURCES = {
    "xdp_nic": ("xdp_nic.c", "XDP"),
    "tc_nic": ("tc_nic.c", "SCHED_CLS"),
    "tc_pod": ("tc_pod.c", "SCHED_CLS"),
    "xdp_pod": ("xdp_pod.c", "XDP"),
}


class LoadError(RuntimeError):
    pass


@dataclass
class NodeState:
    """What the loader did, kept in /run so status/unload/CNI know the NIC and mode."""

    root: str
    nic: str
    nic_ifindex: int
    mode: str
    requested_mode: str
    vlan: int
    loaded_at: float
    prog_ids: dict

    def save(self, layout: PinLayout) -> None:
        os.makedirs(os.path.dirname(layout.state_file), mode=0o700, exist_ok=True)
        tmp = layout.state_file + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(asdict(self), fh, indent=2)
        os.replace(tmp, layout.state_file)

    @classmethod
    def read(cls, root: str) -> NodeState | None:
        try:
            with open(PinLayout(root).state_file) as fh:
                return cls(**json.load(fh))
        except FileNotFoundError:
            return None


def resolve_mode(ipr: IPRoute, ifindex: int, requested: str) -> str:
    """auto: TC on virtual NICs (veth, bridge...: XDP redirect there costs more than it saves, see
    docs/design.md "Costs"), XDP on a real NIC with a driver; xdp/tc: as asked."""
    if requested != "auto":
        return requested
    link = ipr.get_links(ifindex)[0]
    info = link.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    return "tc" if kind else "xdp"


def _ensure_devmap(layout: PinLayout) -> None:
    path = layout.map("tx_ports")
    if os.path.exists(path):
        return
    # BCC 0.26 has no DEVMAP_HASH table type: create and pin it with libbpf; the C opens the pin.
    fd = libbpf.map_create(libbpf.BPF_MAP_TYPE_DEVMAP_HASH, "tx_ports", 4, 4, abi.MAX_ENDPOINTS)
    try:
        libbpf.obj_pin(fd, path)
    finally:
        os.close(fd)


def compile_programs(layout: PinLayout, log=print) -> tuple[list, dict[str, int]]:
    """Compile and load every program; returns (BCC objects to keep alive, name -> prog fd)."""
    bcc = probes.require_bcc()
    keep, fds = [], {}
    cflags = [f'-DPIN_ROOT="{layout.root}"', "-Wno-unused-function"]
    for name, (src, ptype) in PROGRAM_SOURCES.items():
        t0 = time.monotonic()
        try:
            b = bcc.BPF(text=flatten(BPF_DIR / src), cflags=cflags)
            fn = b.load_func(name, getattr(bcc.BPF, ptype))
        except Exception as exc:
            raise LoadError(f"{src}: {exc} (see the verifier log above)") from exc
        keep.append(b)
        fds[name] = fn.fd
        log(f"  compiled {src} ({time.monotonic() - t0:.1f}s)")
    return keep, fds


def _pin_program(layout: PinLayout, name: str, fd: int) -> None:
    """Replace the pin atomically: pin under a temporary name, then rename over the old one."""
    final = layout.prog(name)
    tmp = final + "_new"  # bpffs refuses names with a dot
    if os.path.exists(tmp):
        os.unlink(tmp)
    libbpf.obj_pin(fd, tmp)
    os.chmod(tmp, 0o600)
    os.replace(tmp, final)


def load(cfg: NodeConfig, log=print) -> NodeState:
    probes.require_loader()
    layout = PinLayout(cfg.bpffs_root)
    for d in (layout.root, layout.maps_dir, layout.progs_dir):
        os.makedirs(d, mode=0o700, exist_ok=True)
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=cfg.nic)
        if not found:
            raise LoadError(f"NIC {cfg.nic!r} not found in this network namespace")
        nic_ifindex = found[0]
        nic_mac = ipr.get_links(nic_ifindex)[0].get_attr("IFLA_ADDRESS")
        mode = resolve_mode(ipr, nic_ifindex, cfg.mode)

        _ensure_devmap(layout)
        keep, fds = compile_programs(layout, log)
        for m in os.listdir(layout.maps_dir):
            os.chmod(layout.map(m), 0o600)

        with PinnedMap(layout, "node_cfg") as node_cfg:
            node_cfg.put(
                0,
                abi.NodeConfig(nic_ifindex=nic_ifindex, nic_mac=abi.mac_to_bytes(nic_mac), vlan_id=cfg.vlan),
            )
        sysctl.enable_forwarding(cfg.nic)

        # New program first, then remove the other mode's: never a moment without a fast path.
        if mode == "xdp":
            try:
                attach.attach_xdp(ipr, nic_ifindex, fds["xdp_nic"], attach.XDP_FLAGS_DRV_MODE)
            except Exception as exc:
                raise LoadError(
                    f"native XDP attach on {cfg.nic} failed ({exc}); use mode: tc or auto"
                ) from exc
            attach.detach_tc_ingress(ipr, nic_ifindex)
        else:
            attach.attach_tc_ingress(ipr, nic_ifindex, fds["tc_nic"], "xdpcni_tc_nic")
            attach.detach_xdp(ipr, nic_ifindex)

        for name in PROGRAMS:
            _pin_program(layout, name, fds[name])

        # Upgrade: point existing pods' host veths at the new pod program (atomic replace).
        upgraded = 0
        with PinnedMap(layout, "ifaces") as ifaces:
            for key in ifaces:
                if _link_exists(ipr, key.value):
                    attach.attach_tc_ingress(ipr, key.value, fds["tc_pod"], "xdpcni_tc_pod")
                    upgraded += 1
        if upgraded:
            log(f"  re-attached the pod program on {upgraded} existing endpoint(s)")

        prog_ids = {name: libbpf.prog_info(fd).id for name, fd in fds.items()}
        del keep  # pinned and attached: the BCC objects (and their fds) may go
    state = NodeState(
        root=layout.root,
        nic=cfg.nic,
        nic_ifindex=nic_ifindex,
        mode=mode,
        requested_mode=cfg.mode,
        vlan=cfg.vlan,
        loaded_at=time.time(),
        prog_ids=prog_ids,
    )
    state.save(layout)
    return state


def _link_exists(ipr: IPRoute, ifindex: int) -> bool:
    try:
        ipr.get_links(ifindex)
        return True
    except Exception:
        return False


def unload(root: str, log=print) -> bool:
    """Detach everything the loader and the CNI attached in this namespace and remove the pins.

    Returns False when there was nothing to unload. Pod eth0 XDP programs live in pod namespaces
    and go with them; the host-side veths lose their filter here.
    """
    layout = PinLayout(root)
    state = NodeState.read(root)
    did = False
    with IPRoute() as ipr:
        if state is not None and _link_exists(ipr, state.nic_ifindex):
            attach.detach_xdp(ipr, state.nic_ifindex)
            attach.detach_tc_ingress(ipr, state.nic_ifindex)
            did = True
        if os.path.exists(layout.map("ifaces")):
            with PinnedMap(layout, "ifaces") as ifaces:
                for key in ifaces:
                    if _link_exists(ipr, key.value):
                        attach.detach_tc_ingress(ipr, key.value)
    if os.path.isdir(layout.root):
        for sub in (layout.progs_dir, layout.maps_dir):
            if os.path.isdir(sub):
                for f in os.listdir(sub):
                    os.unlink(os.path.join(sub, f))
                os.rmdir(sub)
        os.rmdir(layout.root)
        did = True
    try:
        os.unlink(layout.state_file)
    except FileNotFoundError:
        pass
    if did:
        log(f"unloaded xdpcni datapath under {root}")
    return did


def open_program(root: str, name: str) -> int:
    """fd of a pinned program (the CNI attaches pod programs from these)."""
    path = PinLayout(root).prog(name)
    try:
        return libbpf.obj_get(path)
    except FileNotFoundError as exc:
        raise LoadError(f"program {path} is not pinned: load the node datapath first") from exc


def main() -> int:
    """`python -m datapath.loader`: load with the NodeConfig given as JSON on stdin.

    How the CNI plugin loads a missing datapath (cni/node.py) without compiling in its own
    process. Log lines go to stdout; a failure is one line on stderr and exit status 1.
    """
    try:
        cfg = NodeConfig.from_json(sys.stdin.read())
        state = load(cfg, log=lambda m: print(m, flush=True))
    except (ConfigError, LoadError, probes.ProbeError, OSError) as exc:
        print(f"datapath.loader: {exc}", file=sys.stderr)
        return 1
    print(
        f"loaded: {state.nic} (ifindex {state.nic_ifindex}) mode={state.mode} pins={state.root}", flush=True
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
