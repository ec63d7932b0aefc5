"""The ctypes mirror matches the loaded maps; unload and teardown
leave no pin, attachment or namespace behind."""

import ctypes
import os

import pytest
from pyroute2 import IPRoute

from datapath import abi, attach
from datapath.maps import PinnedMap
from datapath.netns import entered
from datapath.pins import MAPS, PROGRAMS, PinLayout
from sim.topology import Cluster

pytestmark = pytest.mark.kernel


def test_ctypes_mirror_matches_the_loaded_maps(node_env):
    node = node_env.nodes[0]
    layout = PinLayout(node.pin_root)
    assert set(abi.MAP_LAYOUT) == set(MAPS)
    for name, (key_t, val_t) in abi.MAP_LAYOUT.items():
        with PinnedMap(layout, name) as m:
            info = m.info()
        assert info.key_size == ctypes.sizeof(key_t), name
        assert info.value_size == ctypes.sizeof(val_t), name
    with PinnedMap(layout, "counters") as m:
        assert m.info().max_entries == abi.MAX_ENDPOINTS * abi.REASON_MAX


def test_unload_removes_every_pin_and_attachment(mode):
    with Cluster(1) as c:
        node = c.nodes[0]
        node.load(mode)
        pod = node.add_pod()
        layout = PinLayout(node.pin_root)
        assert all(os.path.exists(layout.prog(p)) for p in PROGRAMS)
        with entered(node.ns), IPRoute() as ipr:
            nic = ipr.link_lookup(ifname=node.nic)[0]
            attached = (
                attach.xdp_prog_id(ipr, nic) if mode == "xdp" else attach.tc_ingress_prog_names(ipr, nic)
            )
            assert attached
            assert attach.tc_ingress_prog_names(ipr, pod.link.host_ifindex)
        node.unload()
        assert not os.path.exists(node.pin_root)
        assert not os.path.exists(layout.state_file)
        with entered(node.ns), IPRoute() as ipr:
            assert attach.xdp_prog_id(ipr, nic) == 0
            assert attach.tc_ingress_prog_names(ipr, nic) == []
            assert attach.tc_ingress_prog_names(ipr, pod.link.host_ifindex) == []
        # Unload twice is fine and says so.
        assert "nothing loaded" in node.ctl("unload").stdout
        prefix = c.prefix
    with open("/proc/mounts") as fh:
        assert "xdpcni" not in fh.read()
    assert not [n for n in os.listdir("/var/run/netns") if n.startswith(prefix)]
