"""What the verbs share: where a network's state lives, the per-attachment lock, the node-wide
address claims, and undoing one attachment (each step tolerant of "already gone", and acting
only on what carries this attachment's ownership)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextlib import ExitStack, contextmanager

from datapath import abi
from datapath.endpoints import EndpointTable
from datapath.maps import DatapathNotLoaded
from datapath.rtnl import Rtnl

from .. import node, plumbing
from ..claims import ClaimStore
from ..env import CniEnv
from ..ipam import builtin, delegate
from ..ipam.store import LeaseStore
from ..locking import flocked
from ..netconf import NetConf
from ..pending import PendingDeletes
from ..records import Record, RecordStore, RecordUnreadable


def network_dir(conf: NetConf) -> str:
    return os.path.join(conf.data_dir, conf.name)


def lease_store(conf: NetConf) -> LeaseStore:
    return LeaseStore(os.path.join(network_dir(conf), "ipam"))


def record_store(conf: NetConf) -> RecordStore:
    return RecordStore(network_dir(conf), conf.name)


def claim_store(conf: NetConf) -> ClaimStore:
    return ClaimStore(conf.root)


def warn(msg: str) -> None:
    print(f"xdpcni: warning: {msg}", file=sys.stderr)


ATTACHMENT_LOCKS = 64  # lock files per network (cni/commands/common.py attachment_lock_path)


def attachment_lock_path(conf: NetConf, container_id: str, ifname: str) -> str:
    """The lock file of one (network, container id, ifname) while a verb runs: one of
    ATTACHMENT_LOCKS files per network, chosen by the attachment's host veth name (a digest of
    the three). The files are made once and kept (empty): a file made and removed per verb cost
    two inode operations, ~0.5 ms of an ADD on this machine's ext4 under load. Attachments that
    share a file take turns for the length of a verb; a veth deletion that outlives its DEL (the
    node agent's) holds deletion_lock_path instead, the attachment's own."""
    digest = plumbing.host_ifname_for(container_id, ifname, conf.name)[2:]  # "xc" + 11 hex digits
    return os.path.join(
        network_dir(conf), "locks", f"attachments-{int(digest, 16) % ATTACHMENT_LOCKS:02d}.lock"
    )


def deletion_lock_path(conf: NetConf, container_id: str, ifname: str) -> str:
    """The lock file a deferred veth deletion holds (made by the DEL, removed with the veth)."""
    name = plumbing.host_ifname_for(container_id, ifname, conf.name)
    return os.path.join(network_dir(conf), "locks", f"{name}.deleting.lock")


@contextmanager
def attachment_locked(conf: NetConf, container_id: str, ifname: str):
    """Serialise every verb on one (network, container id, ifname): ADD and DEL of the same
    container never interleave, nor run while the attachment's veth deletion does (a DEL the
    node agent answered before the kernel deleted the veth). The deletion's own lock is waited
    for before the shared lock file is taken, so a slow deletion delays only its attachment."""
    shared = attachment_lock_path(conf, container_id, ifname)
    deleting = deletion_lock_path(conf, container_id, ifname)
    what = f"attachment lock of {container_id}/{ifname} (a lock file shared with other attachments)"
    while True:
        with flocked(shared, what):
            if not os.path.exists(deleting):
                yield
                return
        # A veth deletion is still running (or its holder died): wait for it without holding
        # the shared file, then take that again.
        with flocked(deleting, f"deletion lock of {container_id}/{ifname}'s veth", remove=True):
            pass  # its veth is gone: the deletion released it (or its holder died)


def hold_deletion_lock(conf: NetConf, container_id: str, ifname: str, held: ExitStack) -> None:
    """Take the attachment's deletion lock into `held` (under attachment_locked): whoever closes
    `held` once the veth is gone releases it and removes its file."""
    what = f"deletion lock of {container_id}/{ifname}'s veth"
    held.enter_context(flocked(deletion_lock_path(conf, container_id, ifname), what, remove=True))


def forget_endpoint(root: str, host_ifindex: int | None, ips: list[str], keep_iface: bool = False) -> None:
    """Remove this attachment's map entries: everything on its veth, and address entries that
    point at that veth or at a veth that no longer exists. An entry for one of `ips` that steers
    to another live veth belongs to another pod and stays. keep_iface=True keeps the veth's own
    entries (EndpointTable.remove): for a veth that still exists. A missing datapath is fine."""
    if not node.is_loaded(root):
        return
    try:
        with EndpointTable(root) as table, Rtnl() as nl:
            for ip in ips:
                key = abi.EndpointKey.for_ip(ip)
                info = table.endpoints.get(key)
                if info is None:
                    continue
                if info.ifindex == host_ifindex or nl.get_link(index=info.ifindex) is None:
                    table.endpoints.delete(key)
                else:
                    warn(f"map entry for {ip} steers to ifindex {info.ifindex}, not this pod's: left alone")
            if host_ifindex is not None:
                table.remove(host_ifindex, keep_iface=keep_iface)
    except DatapathNotLoaded:
        pass


def release_ipam(
    conf: NetConf, env: CniEnv, container_id: str, ifname: str, ipam_type: str, ips: list[str] | None = None
) -> list[str]:
    """Give the addresses back: built-in leases (only `ips`' when given: a complete record's),
    or the delegated plugin's DEL."""
    kind = ipam_type or (conf.ipam.type if conf.ipam else "")
    if not kind or kind == "xdpcni":
        return builtin.release(lease_store(conf), container_id, ifname, ips)
    deleg_env = {
        **env.raw,
        "CNI_CONTAINERID": container_id,
        "CNI_IFNAME": ifname,
        "CNI_NETNS": env.netns if container_id == env.container_id else "",
    }
    ipam_raw = conf.ipam.raw if conf.ipam and conf.ipam.type == kind else {"type": kind}
    delegate.call(kind, "DEL", {**conf.raw, "ipam": ipam_raw}, deleg_env, env.path)
    return []


# Set by a long-running server (the node agent) to take over the slow end of DEL: called as
# DEFER(finish, held) where `finish` deletes the pod's veth and `held` (an ExitStack) holds the
# attachment's lock until closed; it must run finish() and then close `held`, off the verb's
# thread. None (a CNI process of its own): DEL does everything before it answers.
DEFER: Callable[[Callable[[], None], ExitStack], None] | None = None


def teardown_locked(conf: NetConf, env: CniEnv, container_id: str, ifname: str) -> None:
    """teardown() under the attachment's lock (DEL, GC). In the node agent (DEFER set) the veth's
    deletion is handed to DEFER together with the attachment's deletion lock, which it releases
    once the veth is gone (an ADD or DEL of the same attachment waits for it; the others that
    share its lock file do not)."""
    defer = DEFER
    with ExitStack() as held:
        with attachment_locked(conf, container_id, ifname):
            finish = teardown(conf, env, container_id, ifname, deferrable=defer is not None)
            if finish is not None and defer is not None:
                hold_deletion_lock(conf, container_id, ifname, held)
        if finish is not None and defer is not None:
            defer(finish, held.pop_all())


def teardown(
    conf: NetConf, env: CniEnv, container_id: str, ifname: str, deferrable: bool = False
) -> Callable[[], None] | None:
    """Undo an attachment in reverse ADD order: map entries, veth (takes routes/neighbours/TC
    filters and the pod end with it), addresses, claims, record. Names and the ownership mark
    derive from the key; an unreadable record is replaced by what the key and leases tell.

    deferrable=True (the node agent): the veth's deletion, which waits out the kernel's RCU grace
    periods (rcu_barrier in netdev_run_todo, ~35-40 ms here), is returned as a function for the
    caller to run after answering, noted first in cni/pending.py so that it is finished even if
    the caller dies. Everything else is done before this returns: the address entries first (the
    fast path no longer steers to the pod, and tc_pod drops the old veth's packets with a
    routable source: the veth's own entries stay until it is gone), then addresses, claims and
    record. An address given to a
    new pod while the old veth still exists is safe: its host route is replaced (the old veth's
    deletion only removes routes through the old veth), neighbour entries are per device, and
    the map entries are already gone. None when nothing is left to do."""
    records = record_store(conf)
    try:
        rec = records.get(container_id, ifname)
    except RecordUnreadable as exc:
        warn(f"{exc.msg}: tearing down by its key instead")
        rec = None
    rec = rec or Record(container_id, ifname, network=conf.name)
    rec.network = conf.name
    builtin_ipam = (rec.ipam_type or (conf.ipam.type if conf.ipam else "")) in ("", "xdpcni")
    leased = lease_store(conf).owned_by(
        container_id,
        ifname,
        hint=list(rec.ips) if rec.complete and builtin_ipam else None,  # checked, never trusted
        expected=len(conf.ipam.range_sets) if conf.ipam and conf.ipam.builtin else 0,
    )
    ips = sorted(set(rec.ips) | set(leased))
    later = None
    with Rtnl() as nl:
        host_ifindex = plumbing.find_host_link(nl, rec.host_ifname, rec.mark)
        if host_ifindex is None and nl.get_link(rec.host_ifname) is not None:
            warn(f"link {rec.host_ifname} does not carry this attachment's mark: left alone")
        forget_endpoint(conf.root, host_ifindex, ips, keep_iface=deferrable)
        if host_ifindex is not None:
            if deferrable:
                pending = PendingDeletes(conf.root)
                note = pending.add(host_ifindex, rec.host_ifname, rec.mark)
                # The namespace this DEL runs in (the node's): `later` deletes there, whichever
                # thread runs it.
                here = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)

                def later() -> None:
                    try:
                        # By ifindex, in the node's namespace, a few ms after the lookup above:
                        # the kernel hands ifindexes out cyclically, so it names this link or
                        # none (ENODEV, when the runtime removed the pod's namespace first).
                        with Rtnl(here) as nl:
                            plumbing.delete_link_index(nl, host_ifindex)
                        forget_endpoint(conf.root, host_ifindex, [])  # its own entries, last
                    except BaseException:
                        PendingDeletes.disown(note)  # retried by the agent or the next DEL
                        raise
                    finally:
                        os.close(here)
                    PendingDeletes.done(note)

            else:
                plumbing.delete_link_index(nl, host_ifindex)  # the peer goes too, wherever it is
    release_ipam(conf, env, container_id, ifname, rec.ipam_type, leased if builtin_ipam else None)
    claim_store(conf).release(ips, (conf.name, container_id, ifname))
    records.remove(container_id, ifname)
    return later
