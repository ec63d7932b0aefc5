"""datapath/rtnl.py socket_in_netns: the verb's thread enters a pod's network namespace for the one
socket() call and comes straight back (no fork, no helper thread): the socket belongs to the pod's
namespace, the thread (and every other thread) stays in its own, also when entering fails."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid

import pytest

from datapath import rtnl

pytestmark = pytest.mark.kernel


def _here() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


@pytest.fixture
def pod_ns():
    ns = f"xct-sock-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(
        ["ip", "-n", ns, "link", "add", "sockt0", "type", "veth", "peer", "name", "sockt1"], check=True
    )
    fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    try:
        yield ns, fd
    finally:
        os.close(fd)
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_the_socket_is_the_pods_and_the_thread_comes_back(pod_ns):
    ns, fd = pod_ns
    before = _here()
    others: list[int] = []
    stop = threading.Event()

    def watch():  # another thread of the process, looking while the sockets are made
        while not stop.is_set():
            others.append(_here())

    t = threading.Thread(target=watch)
    t.start()
    try:
        for _ in range(50):
            with rtnl.Rtnl(fd) as nl:
                assert nl.get_link("sockt0") is not None  # the pod's link: a socket of its namespace
                assert nl.get_link("lo").index == 1
            assert _here() == before
    finally:
        stop.set()
        t.join()
    assert others and set(others) == {before}
    with rtnl.Rtnl() as nl:
        assert nl.get_link("sockt0") is None  # not in ours


def test_a_namespace_it_cannot_enter_leaves_the_thread_where_it_was(tmp_path):
    before = _here()
    fd = os.open(tmp_path, os.O_RDONLY)  # not a namespace: setns refuses
    try:
        with pytest.raises(OSError):
            rtnl.socket_in_netns(fd)
    finally:
        os.close(fd)
    assert _here() == before
