"""Node lifecycle: build or compile the programs, pin them and their maps, attach to the NIC.

Two toolchains, one source (bpf/lib/compat.h): the clang/libbpf objects (datapath/build.py,
datapath/objload.py; CO-RE, the conntrack gate with kfuncs, ~0.2 s to load) are used whenever
they can be built or exist; BCC compiles at load time (~10 s) where clang or libbpf's headers are
missing, or when XDPCNI_TOOLCHAIN=bcc asks for it. BCC cannot call kfuncs, so its conntrack gate
sends every packet to the stack (netfilter: respect then means stack-only).

Runs once per node (and again to upgrade). Maps are pinned, so loading again reuses them: pods
keep their entries, and the NIC and pod programs are replaced atomically (XDP replace, TC
replace-filter), so no packet is lost across a reload. The pod-level code (CNI) never compiles:
it opens the pins this module leaves behind.
"""

from __future__ import annotations

import ctypes as ct
import os
import sys
import time
from pathlib import Path

from pyroute2 import IPRoute

from . import abi, attach, build, libbpf, locks, netfilter, nodeaddrs, objload, probes, sysctl
from .bccsrc import flatten
from .config import ConfigError, NodeConfig, NodeState  # noqa: F401 (NodeState re-exported)
from .endpoints import EndpointSlots, iface_ep_ids
from .maps import PinnedMap
from .pins import PROGRAMS, LoadError, PinLayout, UnsafePath, check_owned, open_program  # noqa: F401 (re-exported)

BPF_DIR = build.BPF_DIR
KFUNC_MISSING = "not found in kernel or module BTFs"  # libbpf's words for an unresolved __ksym

# program name -> (source file, BCC program type name)
PROGRAM_SOURCES = {
    "xdp_nic": ("xdp_nic.c", "XDP"),
    "tc_nic": ("tc_nic.c", "SCHED_CLS"),
    "tc_pod": ("tc_pod.c", "SCHED_CLS"),
    "xdp_pod": ("xdp_pod.c", "XDP"),
}


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


def _ensure_monitor_maps(layout: PinLayout) -> None:
    """The BCC build reports no monitor events and declares none of the monitor maps; create and
    pin them so that every build leaves the same pins (`xdpcnictl monitor` then just hears nothing,
    and a later clang load reuses them)."""
    for name in ("monitor_cfg", "monitor_seq", "monitor_events"):
        path = layout.map(name)
        if os.path.exists(path):
            continue
        key_t, value_t = abi.MAP_LAYOUT[name]
        map_type, entries = abi.MAP_SPECS[name]
        fd = libbpf.map_create(map_type, name, ct.sizeof(key_t), ct.sizeof(value_t), entries)
        try:
            libbpf.obj_pin(fd, path)
        finally:
            os.close(fd)


def _ensure_ep_slots(layout: PinLayout) -> None:
    """The endpoint-id slots (abi.MAP_SPECS "ep_slots", datapath/endpoints.py EndpointSlots): no
    program uses them, so no build declares them; made here, mmapable, for every toolchain. Filled
    from `ifaces` before they are pinned, under the endpoint map lock: a CNI verb that sees the
    pin (PinLayout.is_loaded) never sees them empty while `ifaces` is not."""
    path = layout.map("ep_slots")
    if os.path.exists(path):
        return
    key_t, value_t = abi.MAP_LAYOUT["ep_slots"]
    map_type, entries = abi.MAP_SPECS["ep_slots"]
    with locks.flocked(layout.maps_dir, "endpoint map lock", is_dir=True):
        fd = libbpf.map_create(
            map_type, "ep_slots", ct.sizeof(key_t), ct.sizeof(value_t), entries, abi.MAP_FLAGS["ep_slots"]
        )
        try:
            slots = EndpointSlots(fd)
            try:
                with PinnedMap(layout, "ifaces") as ifaces:
                    slots.fill(iface_ep_ids(ifaces))
            finally:
                slots.close()
            libbpf.obj_pin(fd, path)
        finally:
            os.close(fd)


def compile_programs(layout: PinLayout, log=print) -> tuple[list, dict[str, int]]:
    """Compile and load every program with BCC; returns (BCC objects to keep alive, name -> prog fd)."""
    probes.require_kernel_headers()
    bcc = probes.require_bcc()
    _ensure_devmap(layout)
    _ensure_monitor_maps(layout)
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


class _Fds:
    """Keeps program fds open until they are pinned and attached (what the BCC objects do there)."""

    def __init__(self, fds: dict[str, int]):
        self.fds = fds

    def __del__(self):
        for fd in self.fds.values():
            try:
                os.close(fd)
            except OSError:
                pass


def load_objects(layout: PinLayout, objs_dir: Path, log=print) -> tuple[list, dict[str, int]]:
    """Load the clang objects (no compiler at load time); maps are shared through the pins."""
    t0 = time.monotonic()
    fds = objload.load_programs(str(objs_dir), layout.maps_dir)
    log(f"  loaded {len(fds)} clang/libbpf objects from {objs_dir} ({time.monotonic() - t0:.2f}s)")
    return [_Fds(fds)], fds


def load_programs(layout: PinLayout, log=print) -> tuple[list, dict[str, int], str]:
    """(objects to keep alive, name -> prog fd, toolchain) with the best toolchain available."""
    forced = os.environ.get("XDPCNI_TOOLCHAIN", "")
    if forced not in ("", "clang", "bcc"):
        raise LoadError(f"XDPCNI_TOOLCHAIN={forced!r}: use clang or bcc")
    if forced != "bcc":
        try:
            objs = build.ensure_objects()
        except build.BuildError as exc:
            raise LoadError(str(exc)) from exc
        if objs is not None:
            try:
                keep, fds = load_objects(layout, build.OBJ_DIR, log)
                return keep, fds, "clang"
            except objload.LoadError as exc:
                if KFUNC_MISSING not in str(exc) or forced == "clang":
                    raise LoadError(str(exc)) from exc
                log(
                    "  the conntrack kfuncs are not in this kernel's BTF (nf_conntrack not loaded? "
                    "kernel < 6.0?): BCC build, whose conntrack gate sends every packet to the stack"
                )
        elif forced == "clang":
            raise LoadError(f"XDPCNI_TOOLCHAIN=clang, but {build.can_build()}")
        else:
            log(f"  {build.can_build()}: BCC build, whose conntrack gate sends every packet to the stack")
    keep, fds = compile_programs(layout, log)
    return keep, fds, "bcc"


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
    """Compile, pin and attach; the first load on a node that fails removes everything it made,
    a failed reload leaves the running datapath as it was (programs are replaced only at the end).

    Raises LoadError (or ProbeError for a missing prerequisite) with what to do.
    """
    probes.require_loader()
    layout = PinLayout(cfg.bpffs_root)
    fresh = not os.path.exists(layout.root)
    made: dict = {}
    try:
        return _load(cfg, layout, log, made)
    except BaseException:
        if fresh:
            _undo_first_load(layout, made.get("nic_ifindex"))
        else:  # a failed upgrade: the old maps go back where the running programs' users find them
            for old in made.get("set_aside", []):
                os.replace(old, old[: -len(ASIDE)])
        raise


ASIDE = "_old"  # suffix of a pin set aside during an upgrade (bpffs names cannot have dots)


def _set_aside_other_layouts(layout: PinLayout, log) -> list[str]:
    """Pinned maps of another layout (an older or newer xdpcni: other key/value size, type or
    size) cannot be reused by the new programs. Rename them aside so the new programs create maps
    of their own layout, which restore() then fills from the live pods; the running (old)
    programs keep using the old maps until the new ones replace them, so traffic never stops, and
    the old pins go once the new programs are attached. Returns the set-aside pin paths."""
    aside = []
    version = _pinned_abi_version(layout)
    if version not in (None, abi.ABI_VERSION):
        log(f"  pinned maps are ABI version {version}, this loader writes {abi.ABI_VERSION}")
    for name, (key_t, value_t) in abi.MAP_LAYOUT.items():
        path = layout.map(name)
        if not os.path.exists(path):
            continue
        fd = libbpf.obj_get(path)
        try:
            info = libbpf.map_info(fd)
        finally:
            os.close(fd)
        want = (abi.MAP_SPECS[name][0], ct.sizeof(key_t), ct.sizeof(value_t), abi.MAP_SPECS[name][1])
        have = (info.type, info.key_size, info.value_size, info.max_entries)
        if name in abi.MAP_FLAGS:  # e.g. ep_slots must be mmapable
            want += (abi.MAP_FLAGS[name],)
            have += (info.map_flags & abi.MAP_FLAGS[name],)
        if have == want and version in (None, abi.ABI_VERSION):
            continue
        if os.path.exists(path + ASIDE):
            os.unlink(path + ASIDE)  # left by an interrupted upgrade
        os.replace(path, path + ASIDE)
        aside.append(path + ASIDE)
        log(
            f"  map {name} has another layout (type, key, value, entries{', flags' if name in abi.MAP_FLAGS else ''}"
            f" = {have}, this version {want}): "
            "migrating (new map, endpoints restored from the live pods; counters start at zero)"
        )
    return aside


def _pinned_abi_version(layout: PinLayout) -> int | None:
    """The ABI version the pinned node_cfg was written with (None: nothing pinned yet; 0: by a
    loader from before versions, or a layout too different to tell)."""
    if not os.path.exists(layout.map("node_cfg")):
        return None
    fd = libbpf.obj_get(layout.map("node_cfg"))
    try:
        if libbpf.map_info(fd).value_size != ct.sizeof(abi.NodeConfig):
            return 0
        cfg = abi.NodeConfig()
        return cfg.abi_version if libbpf.map_lookup(fd, ct.c_uint32(0), cfg) else 0
    finally:
        os.close(fd)


def _attach_nic(
    ipr: IPRoute, nic: str, nic_ifindex: int, mode: str, fds: dict, log
) -> tuple[str, str | None]:
    """Attach the NIC program for `mode`, new program first, then remove the other mode's: never a
    moment without a fast path. Native XDP that the NIC refuses (a veth whose peer's MTU is above
    3506 needs multi-buffer programs, which this build does not make) falls back to TC, saying why.
    Returns (mode attached, fallback reason or None)."""
    fallback = None
    if mode == "xdp":
        try:
            attach.attach_xdp(ipr, nic_ifindex, fds["xdp_nic"], attach.XDP_FLAGS_DRV_MODE)
            attach.detach_tc_ingress(ipr, nic_ifindex)
            return "xdp", None
        except Exception as exc:
            mtu = ipr.get_links(nic_ifindex)[0].get_attr("IFLA_MTU")
            fallback = (
                f"native XDP on {nic} (MTU {mtu}) was refused: {exc}; using TC instead "
                "(a veth NIC takes native XDP only with MTU <= 3506 on its peer)"
            )
            log(f"  {fallback}")
    attach.attach_tc_ingress(ipr, nic_ifindex, fds["tc_nic"], attach.TC_NIC_FILTER)
    attach.detach_xdp(ipr, nic_ifindex)
    return "tc", fallback


def _load(cfg: NodeConfig, layout: PinLayout, log, made: dict) -> NodeState:
    for d in (layout.maps_dir, layout.progs_dir):
        try:
            check_owned(d)
        except UnsafePath as exc:
            raise LoadError(str(exc)) from exc
    for d in (layout.root, layout.maps_dir, layout.progs_dir):
        os.makedirs(d, mode=0o700, exist_ok=True)
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=cfg.nic)
        if not found:
            raise LoadError(f"NIC {cfg.nic!r} not found in this network namespace")
        nic_ifindex = found[0]
        nic_mac = ipr.get_links(nic_ifindex)[0].get_attr("IFLA_ADDRESS")
        mode = resolve_mode(ipr, nic_ifindex, cfg.mode)

        made["set_aside"] = _set_aside_other_layouts(layout, log)
        keep, fds, toolchain = load_programs(layout, log)
        _ensure_ep_slots(layout)
        for m in os.listdir(layout.maps_dir):
            os.chmod(layout.map(m), 0o600)

        conntrack_check = netfilter.wants_conntrack(cfg.netfilter)
        with PinnedMap(layout, "node_cfg") as node_cfg:
            node_cfg.put(
                0,
                abi.NodeConfig(
                    nic_ifindex=nic_ifindex,
                    nic_mac=abi.mac_to_bytes(nic_mac),
                    vlan_id=cfg.vlan,
                    flags=abi.NODE_F_CONNTRACK if conntrack_check else 0,
                    abi_version=abi.ABI_VERSION,
                ),
            )
        sysctl.enable_forwarding(cfg.nic)
        nodeaddrs.sync(layout.root)

        made["nic_ifindex"] = nic_ifindex
        mode, fallback = _attach_nic(ipr, cfg.nic, nic_ifindex, mode, fds, log)

        for name in PROGRAMS:
            _pin_program(layout, name, fds[name])

        # Upgrade: point existing pods' host veths at the new pod program (atomic replace).
        upgraded = 0
        with PinnedMap(layout, "ifaces") as ifaces:
            for key in ifaces:
                if _link_exists(ipr, key.value):
                    attach.attach_tc_ingress(ipr, key.value, fds["tc_pod"], attach.TC_POD_FILTER)
                    upgraded += 1
        if upgraded:
            log(f"  re-attached the pod program on {upgraded} existing endpoint(s)")
        from .restore import restore  # (pod.py imports this module)

        restored = restore(layout.root, log).summary()
        for old in made.pop("set_aside"):  # the new programs are attached: the old maps may go
            os.unlink(old)

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
        netfilter=cfg.netfilter,
        toolchain=toolchain,
        conntrack_check=conntrack_check,
        fallback=fallback,
        restore=restored,
    )
    state.save(layout)
    return state


def _undo_first_load(layout: PinLayout, nic_ifindex: int | None) -> None:
    with IPRoute() as ipr:
        if nic_ifindex is not None and _link_exists(ipr, nic_ifindex):
            attach.detach_xdp(ipr, nic_ifindex)
            attach.detach_tc_ingress(ipr, nic_ifindex)
    _remove_pins(layout)


def _remove_pins(layout: PinLayout) -> bool:
    if not os.path.isdir(layout.root):
        return False
    for sub in (layout.progs_dir, layout.maps_dir):
        if os.path.isdir(sub):
            for f in os.listdir(sub):
                os.unlink(os.path.join(sub, f))
            os.rmdir(sub)
    os.rmdir(layout.root)
    return True


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
    did |= _remove_pins(layout)
    try:
        os.unlink(layout.state_file)
    except FileNotFoundError:
        pass
    try:
        os.rmdir(layout.claims_dir)  # only when empty: a claim of a pod still there stays
    except OSError:
        pass
    if did:
        log(f"unloaded xdpcni datapath under {root}")
    return did


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
