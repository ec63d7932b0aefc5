"""Simulated cluster: a wire namespace with a bridge (the switch, and the "wire host" on it) and
N node namespaces whose NIC is a veth plugged into that bridge; pods hang off nodes.

Addresses exist only inside these namespaces (RFC 2544 benchmark range and the IPv6
documentation prefix); nodes have no default route. Every object is named with a per-run
prefix and removed by Cluster.teardown(), which fixtures call also when a test fails.

Routes between nodes are the product's: the cluster writes a peers file (conf/peers.example.yaml
format: every node's name, NIC addresses and pod CIDRs) and each node syncs its routes from it
with `xdpcnictl routes --peers FILE` (node/routes.py, the code `xdpcnictl agent --peers` runs).
Only the wire host, standing in for the outside world's router, has hand-written routes to the
pod CIDRs.
"""

from __future__ import annotations

import contextlib
import glob
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

import yaml
from pyroute2 import IPRoute, netns

from cni import plumbing
from datapath import pod as pod_dp
from datapath.endpoints import Endpoint, EndpointTable
from datapath.netns import entered
from datapath.pins import LOCK_DIR, RUN_DIR, PinLayout
from datapath.rtnl import Rtnl

TEST_PIN_BASE = "/sys/fs/bpf/xdpcni-test"
TEST_DATA_BASE = "/run/xdpcni-test"  # CNI dataDir (leases, attachment records) per node
WIRE_V4 = ipaddress.ip_network("198.18.0.0/24")
WIRE_V6 = ipaddress.ip_network("2001:db8::/64")
WIRE_HOST_V4 = "198.18.0.1"
WIRE_HOST_V6 = "2001:db8::1"
VENV_BIN = os.path.dirname(sys.executable)
# Simulated nodes start with no netfilter state, so `auto` gives them the fast path until a test
# (or chained portmap) adds rules; the product's default is `respect` (datapath/netfilter.py).
SIM_NETFILTER = "auto"


def pod_cidrs(node_index: int) -> tuple[ipaddress.IPv4Network, ipaddress.IPv6Network]:
    return (
        ipaddress.ip_network(f"198.19.{node_index}.0/24"),
        ipaddress.ip_network(f"2001:db8:1:{node_index}::/64"),
    )


def run_in(ns: str, *cmd: str, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    """Run a command in a namespace's network (not mount) namespace, so bpffs pins stay visible."""
    return subprocess.run(
        ["nsenter", f"--net=/var/run/netns/{ns}", *cmd],
        check=check,
        timeout=timeout,
        text=True,
        capture_output=True,
        **kw,
    )


def sysctl(ns: str, key: str, value: str) -> None:
    """Write a sysctl of namespace `ns` (net.* keys are per namespace)."""
    with entered(ns), open("/proc/sys/" + key.replace(".", "/"), "w") as fh:
        fh.write(value)


def _remove_run_state(pin_root: str) -> None:
    """What a node's datapath and CNI keep in /run/xdpcni (state file, address claims, any lock
    file), named by the pin root's key: gone with the simulated node."""
    key = PinLayout(pin_root).key
    for path in glob.glob(os.path.join(RUN_DIR, key + "*")) + glob.glob(os.path.join(LOCK_DIR, key + "*")):
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def _no_dad(ns: str) -> None:
    """No IPv6 duplicate address detection on the simulator's links: every address (link-local
    included) is usable the moment its link is up. With DAD, neighbour discovery in the first
    second or two after a node is made raced the link-local address's tentative phase and the
    first IPv6 exchange of a test could fail (seen once the datapath loaded in 0.3 s instead of
    10 s); the simulated links cannot have duplicates anyway."""
    for scope in ("all", "default"):
        sysctl(ns, f"net.ipv6.conf.{scope}.accept_dad", "0")


def loopback_up(ns: str) -> None:
    """lo up in a pod's network namespace, as every runtime does before it runs a CNI plugin
    (containerd runs the loopback plugin, CRI-O and podman set it up themselves): plugins, the
    reference ones and xdpcni alike, configure only the interface they are given."""
    fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with Rtnl(fd) as nl:
            nl.set_up(plumbing.LOOPBACK_IFINDEX)
            nl.flush()
    finally:
        os.close(fd)


@dataclass
class Pod:
    name: str
    ns: str
    node: Node
    ips: list[str]
    link: plumbing.PodLink | None = None
    ep: Endpoint | None = None

    @property
    def ip4(self) -> str | None:
        return next((a for a in self.ips if ":" not in a), None)

    @property
    def ip6(self) -> str | None:
        return next((a for a in self.ips if ":" in a), None)


@dataclass
class Node:
    cluster: Cluster
    index: int
    ns: str
    nic: str
    nic_ip4: str
    nic_ip6: str
    nic_mac: str
    wire_port: str
    pin_root: str
    pods: list[Pod] = field(default_factory=list)
    loaded_mode: str | None = None

    @property
    def data_dir(self) -> str:
        return f"{TEST_DATA_BASE}/{self.ns}"

    @property
    def name(self) -> str:
        """The node's name in the peers file (as a Kubernetes Node name)."""
        return f"n{self.index}"

    def peer_entry(self) -> dict:
        """This node as an entry of the peers file."""
        return {
            "name": self.name,
            "addresses": [self.nic_ip4, self.nic_ip6],
            "podCIDRs": [str(self.cidr4), str(self.cidr6)],
        }

    def routes_cmd(self, peers_file: str | None = None) -> list[str]:
        """The command that syncs this node's routes to the other nodes from the peers file."""
        self.cluster.route_roots.add(self.pin_root)  # its record in /run goes at teardown
        return [
            "nsenter",
            f"--net=/var/run/netns/{self.ns}",
            os.path.join(VENV_BIN, "xdpcnictl"),
            "--root",
            self.pin_root,
            "routes",
            "--peers",
            peers_file or self.cluster.peers_file,
            "--node-name",
            self.name,
            "--json",
        ]

    def sync_routes(self, peers_file: str | None = None) -> dict:
        """Sync this node's routes from the peers file once; the result as `xdpcnictl routes
        --json` prints it (added/changed/removed/kept/problems)."""
        res = subprocess.run(self.routes_cmd(peers_file), text=True, capture_output=True, timeout=60)
        if res.returncode != 0:
            raise RuntimeError(f"route sync on {self.name} failed: {res.stderr.strip()}")
        return json.loads(res.stdout)

    @property
    def cidr4(self):
        return pod_cidrs(self.index)[0]

    @property
    def cidr6(self):
        return pod_cidrs(self.index)[1]

    def ctl(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return run_in(
            self.ns,
            os.path.join(VENV_BIN, "xdpcnictl"),
            "--root",
            self.pin_root,
            *args,
            check=check,
            timeout=timeout,
        )

    def load(self, mode: str = "tc", netfilter: str = SIM_NETFILTER) -> subprocess.CompletedProcess:
        res = self.ctl("load", "--nic", self.nic, "--mode", mode, "--netfilter", netfilter)
        self.loaded_mode = mode
        return res

    def unload(self) -> None:
        self.ctl("unload", check=False)
        self.loaded_mode = None

    def add_pod(self, name: str | None = None, n: int | None = None, mtu: int = 1500) -> Pod:
        """A pod plumbed and programmed directly through the datapath API (no CNI binary)."""
        n = len(self.pods) + 2 if n is None else n
        name = name or f"p{n}"
        ns = f"{self.ns}-{name}"
        netns.create(ns)
        self.cluster.namespaces.append(ns)
        _no_dad(ns)
        ips = [str(self.cidr4[n]), str(self.cidr6[n])]
        pod = Pod(name, ns, self, ips)
        with entered(self.ns), IPRoute() as ipr:
            host_if = plumbing.host_ifname_for(ns, "eth0")
            link = plumbing.create_veth(
                ipr,
                f"/var/run/netns/{ns}",
                host_if,
                "eth0",
                mtu,
                mark=plumbing.owner_mark("sim", ns, "eth0", pod=f"sim/{name}"),
            )
            plumbing.configure_pod_side(f"/var/run/netns/{ns}", link, ips)
            plumbing.configure_host_side(ipr, link, ips)
            nsfd = plumbing.open_netns(f"/var/run/netns/{ns}")
            try:
                with Rtnl(nsfd) as pod_nl:
                    pod_dp.attach_pod_side_nl(pod_nl, link.pod_ifname)
            finally:
                os.close(nsfd)
            pod_dp.attach_host_side(ipr, self.pin_root, link.host_ifindex)
            with EndpointTable(self.pin_root) as table:
                pod.ep = table.add(Endpoint(link.host_ifindex, link.pod_mac, link.host_mac, ips))
        pod.link = link
        self.pods.append(pod)
        return pod


class Cluster:
    """`routes=True` (default): with two or more nodes, every node's routes to the others come
    from the route controller fed by the cluster's peers file (write_peers + sync_routes)."""

    def __init__(self, n_nodes: int = 1, prefix: str | None = None, routes: bool = True):
        self.prefix = prefix or "xc" + secrets.token_hex(3)
        self.wire = f"{self.prefix}-wire"
        self.namespaces: list[str] = []
        self.nodes: list[Node] = []
        self.peers_file = f"{TEST_DATA_BASE}/{self.prefix}-peers.yaml"
        self.route_roots: set[str] = set()  # pin roots the route syncs recorded their status under
        try:
            self._make_wire()
            for i in range(n_nodes):
                self._make_node(i)
            if routes and n_nodes > 1:
                self.write_peers()
                self.sync_routes()
        except BaseException:
            self.teardown()
            raise

    def write_peers(self, entries: list[dict] | None = None, path: str | None = None) -> str:
        """Write the peers file (default: every node of the cluster) atomically, so an agent that
        polls it never reads half a file. Returns its path."""
        path = path or self.peers_file
        entries = [n.peer_entry() for n in self.nodes] if entries is None else entries
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as fh:
            yaml.safe_dump({"peers": entries}, fh, sort_keys=False)
        os.replace(tmp, path)
        return path

    def sync_routes(self, nodes: list[Node] | None = None, peers_file: str | None = None) -> dict[str, dict]:
        """Every node (or `nodes`) syncs its routes from the peers file, all at once; results by
        node name. Raises if a sync failed or reported a problem."""
        nodes = self.nodes if nodes is None else nodes
        procs = {
            n.name: subprocess.Popen(
                n.routes_cmd(peers_file), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            for n in nodes
        }
        out, errors = {}, []
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=60)
            if proc.returncode != 0:
                errors.append(f"{name}: {stderr.strip()}")
                continue
            out[name] = json.loads(stdout)
            errors += [f"{name}: {p}" for p in out[name]["problems"]]
        if errors:
            raise RuntimeError("route sync: " + "; ".join(errors))
        return out

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.teardown()

    def _make_wire(self) -> None:
        netns.create(self.wire)
        self.namespaces.append(self.wire)
        _no_dad(self.wire)
        with IPRoute(netns=f"/var/run/netns/{self.wire}") as w:
            w.link("set", index=w.link_lookup(ifname="lo")[0], state="up")
            w.link("add", ifname="br0", kind="bridge")
            br = w.link_lookup(ifname="br0")[0]
            w.link("set", index=br, state="up")
            w.addr("add", index=br, address=WIRE_HOST_V4, prefixlen=24)
            w.addr("add", index=br, address=WIRE_HOST_V6, prefixlen=64, flags=plumbing.IFA_F_NODAD)
        # Frames from the wire host's own sockets must carry finished checksums: an XDP NIC turns
        # skbs into xdp_frames, which carry no checksum state (docs/design.md "Checksums").
        run_in(self.wire, "ethtool", "-K", "br0", "tx", "off", check=False)

    def _make_node(self, i: int) -> Node:
        ns = f"{self.prefix}-n{i}"
        netns.create(ns)
        self.namespaces.append(ns)
        _no_dad(ns)
        port = f"n{i}"
        nic_ip4, nic_ip6 = str(WIRE_V4[10 + i]), str(WIRE_V6[10 + i])
        with IPRoute(netns=f"/var/run/netns/{self.wire}") as w:
            w.link("add", ifname=port, kind="veth", peer={"ifname": "nic0"})
            peer = w.link_lookup(ifname="nic0")[0]
            fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
            try:
                w.link("set", index=peer, net_ns_fd=fd)
            finally:
                os.close(fd)
            p = w.link_lookup(ifname=port)[0]
            w.link("set", index=p, master=w.link_lookup(ifname="br0")[0], state="up")
            c4, c6 = pod_cidrs(i)
            w.route("replace", dst=str(c4), gateway=nic_ip4)
            w.route("replace", dst=str(c6), gateway=nic_ip6, family=10)
        run_in(self.wire, "ethtool", "-K", port, "tx", "off", check=False)
        # A bridge port needs no IPv6 of its own; left on, it sends router solicitations and MLD
        # reports into the node's NIC for many seconds, noise in counters tests read exactly.
        sysctl(self.wire, f"net.ipv6.conf.{port}.disable_ipv6", "1")
        with IPRoute(netns=f"/var/run/netns/{ns}") as n:
            n.link("set", index=n.link_lookup(ifname="lo")[0], state="up")
            nic = n.link_lookup(ifname="nic0")[0]
            n.addr("add", index=nic, address=nic_ip4, prefixlen=24)
            n.addr("add", index=nic, address=nic_ip6, prefixlen=64, flags=plumbing.IFA_F_NODAD)
            n.link("set", index=nic, state="up")
            mac = n.get_links(nic)[0].get_attr("IFLA_ADDRESS")
        sysctl(ns, "net.ipv6.conf.nic0.accept_ra", "0")
        node = Node(self, i, ns, "nic0", nic_ip4, nic_ip6, mac, port, f"{TEST_PIN_BASE}/{ns}")
        self.nodes.append(node)
        return node

    @property
    def wire_mac(self) -> str:
        with IPRoute(netns=f"/var/run/netns/{self.wire}") as w:
            return w.get_links(w.link_lookup(ifname="br0")[0])[0].get_attr("IFLA_ADDRESS")

    def teardown(self) -> None:
        """Remove everything, in an order that cannot leave pins or attachments behind."""
        from datapath.loader import unload

        for node in self.nodes:
            try:
                if os.path.exists(f"/var/run/netns/{node.ns}"):
                    with entered(node.ns):
                        unload(node.pin_root, log=lambda m: None)
                else:
                    unload(node.pin_root, log=lambda m: None)
            except Exception as exc:  # keep going: the namespaces must go regardless
                print(f"teardown: unload {node.ns}: {exc}", file=sys.stderr)
            shutil.rmtree(node.pin_root, ignore_errors=True)
            shutil.rmtree(node.data_dir, ignore_errors=True)
            _remove_run_state(node.pin_root)
        for root in self.route_roots:  # a caller may have moved a node's pin root since
            _remove_run_state(root)
        for path in (self.peers_file, self.peers_file + ".tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        for ns in reversed(self.namespaces):
            try:
                netns.remove(ns)
            except Exception:
                pass
        self.namespaces.clear()
        for base in (TEST_PIN_BASE, TEST_DATA_BASE):
            try:
                os.rmdir(base)
            except OSError:
                pass
