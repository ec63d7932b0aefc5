"""node/agent.py _Acceptors: connections are served by threads waiting in accept(), with no thread
started per connection while one waits, and never a connection left waiting for a thread."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from node import agent


@pytest.fixture
def server(tmp_path, monkeypatch):
    served: list[tuple[int, bytes]] = []
    gates: dict[bytes, threading.Event] = {}

    def connection(conn, own_netns, log):
        with conn:
            data = conn.recv(64)
            served.append((threading.get_ident(), data))
            gate = gates.get(data)
            if gate is not None:
                gate.wait(30)
            conn.sendall(b"ok")

    monkeypatch.setattr(agent, "_connection", connection)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(tmp_path / "a.sock"))
    srv.listen(64)
    stopping = threading.Event()
    acceptors = agent._Acceptors(srv, 0, print, stopping)
    acceptors.start()
    try:
        yield str(tmp_path / "a.sock"), served, gates, acceptors
    finally:
        for gate in gates.values():
            gate.set()
        stopping.set()
        srv.shutdown(socket.SHUT_RDWR)
        srv.close()


def _ask(path: str, what: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.settimeout(10)
        c.connect(path)
        c.sendall(what)
        return c.recv(64)


def test_one_after_another_reuses_its_threads(server):
    path, served, _, _ = server
    for i in range(20):
        assert _ask(path, f"v{i}".encode()) == b"ok"
    assert len(served) == 20
    # A thread per connection would be 20; the waiting thread and its spare, plus one when a
    # reply and the next connection cross, serve them all.
    assert len({ident for ident, _ in served}) <= 3


def test_a_held_connection_never_holds_up_the_next(server):
    path, served, gates, acceptors = server
    held = []
    for i in range(6):  # six verbs stuck (as on a lock), each keeping its thread
        name = f"held{i}".encode()
        gates[name] = threading.Event()
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(10)
        c.connect(path)
        c.sendall(name)
        held.append(c)
    try:
        assert _ask(path, b"free") == b"ok"  # served while all six wait
        assert {data for _, data in served} >= {b"free"}
        for gate in gates.values():
            gate.set()
        assert all(c.recv(64) == b"ok" for c in held)
        assert len({ident for ident, _ in served}) == len(served)  # one thread each while held
    finally:
        for c in held:
            c.close()
    # Eight threads existed (six held, one served "free", one waited); once all are back, the
    # ones beyond IDLE_MAX waiting end.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
        acceptors.idle != agent._Acceptors.IDLE_MAX
        or sum(t.name == "xdpcni-agent-conn" for t in threading.enumerate()) != agent._Acceptors.IDLE_MAX
    ):
        time.sleep(0.05)
    assert acceptors.idle == agent._Acceptors.IDLE_MAX
    assert sum(t.name == "xdpcni-agent-conn" for t in threading.enumerate()) == agent._Acceptors.IDLE_MAX
