"""Stopping the helper processes a test or benchmark started, by PID, politely first."""

from __future__ import annotations

import signal
import subprocess


def stop(proc: subprocess.Popen, grace: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Send `sig`, wait up to `grace` seconds, then SIGKILL; a process already gone is fine."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
