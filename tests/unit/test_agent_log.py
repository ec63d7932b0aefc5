"""The node agent's log (node/agent.py log_line) keeps every line whole while many threads log
at once: verbs on their connections' threads, the netfilter watcher, the Kubernetes watches.
Operators read it (`kubectl logs`), and the CNI benchmark reads the verbs back from it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The agent's own verb line (node/agent.py) as sim/agent.py parses it.
VERB = re.compile(r"^xdpcni-agent: (ADD|DEL) c(\d+)-(\d+) rc=0 3\.1ms \(waited 0\.1ms for its turn\)$")
THREADS, LINES = 8, 2000

CODE = f"""
import sys, threading
sys.path.insert(0, {str(ROOT)!r})
from node.agent import log_line
def w(t):
    for i in range({LINES}):
        log_line(f"DEL c{{t}}-{{i}} rc=0 3.1ms (waited 0.1ms for its turn)")
ts = [threading.Thread(target=w, args=(t,)) for t in range({THREADS})]
for t in ts: t.start()
for t in ts: t.join()
"""


def test_lines_logged_from_many_threads_come_out_whole(tmp_path):
    out = tmp_path / "agent.log"
    with open(out, "w") as fh:  # a file, as the DaemonSet's container runtime and sim/agent.py give it
        subprocess.run([sys.executable, "-c", CODE], stdout=fh, check=True, timeout=120)
    lines = out.read_text().split("\n")
    assert lines[-1] == ""  # ends with a newline
    lines = lines[:-1]
    glued = [ln for ln in lines if not VERB.match(ln)]
    assert glued == [], f"{len(glued)} lines not whole, e.g. {glued[:2]}"
    assert len(lines) == THREADS * LINES
    assert len({ln for ln in lines}) == THREADS * LINES  # none lost, none twice
