"""`xdpcnictl agent` for one simulated node: started in the node's namespace, stopped by PID.
Its log has one line per verb served (`<VERB> <container id> rc=<rc> <ms>ms`)."""

from __future__ import annotations

import os
import re
import subprocess
import time

from . import processes
from .topology import VENV_BIN, Node

LINE = re.compile(r"\b([A-Z]+) (\S+) rc=(-?\d+) ([\d.]+)ms")


class NodeAgent:
    """`xdpcnictl [GLOBAL_ARGS] agent --socket SOCK [ARGS]` in `node`'s namespace.

    `tag` names the log and socket (agent-TAG.log/.sock under the node's data dir; no tag:
    agent.log/.sock) so a test can run several in turn; `wait` (default) returns once the socket
    exists (RuntimeError with the log's tail if it never does)."""

    def __init__(
        self,
        node: Node,
        start_timeout: float = 30.0,
        metrics: str | None = None,
        *,
        args: list[str] = (),
        global_args: list[str] = (),
        tag: str = "",
        socket: str | None = None,
        wait: bool = True,
    ):
        os.makedirs(node.data_dir, exist_ok=True)
        self.node = node
        name = f"agent-{tag}" if tag else "agent"
        self.sock = socket or os.path.join(node.data_dir, f"{name}.sock")
        self.log_path = os.path.join(node.data_dir, f"{name}.log")
        self.log = open(self.log_path, "w+")  # noqa: SIM115 - kept open for the agent's lifetime
        self.proc = subprocess.Popen(
            [
                "nsenter",
                f"--net=/var/run/netns/{node.ns}",
                os.path.join(VENV_BIN, "xdpcnictl"),
                "--root",
                node.pin_root,
                *global_args,
                "agent",
                "--socket",
                self.sock,
                *(["--metrics", metrics] if metrics else []),
                *args,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        if not wait:
            return
        deadline = time.monotonic() + start_timeout
        while not os.path.exists(self.sock) and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.05)
        if not os.path.exists(self.sock):
            self.stop()
            with open(self.log_path) as fh:
                raise RuntimeError(f"xdpcni agent did not come up: {fh.read()[-500:]}")

    def text(self) -> str:
        """The agent's log so far."""
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path) as fh:
            return fh.read()

    def wait_log(self, text: str, count: int = 1, timeout: float = 30.0) -> str:
        """The log once `text` is in it `count` times; AssertionError with its tail after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            content = self.text()
            if content.count(text) >= count:
                return content
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{text!r} x{count} not in {self.node.name}'s agent log:\n{content[-3000:]}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        processes.stop(self.proc)
        self.log.close()

    def served(self) -> list[tuple[str, str, int, float]]:
        """(verb, container id, rc, ms inside the agent) for every request served so far."""
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path) as fh:
            return [(m[1], m[2], int(m[3]), float(m[4])) for m in map(LINE.search, fh) if m]
