"""The node agent's cyclic GC runs between verbs, not inside them (issue 12: ~0.5 ms of every ADD
went to automatic collections that fired mid-verb)."""

from __future__ import annotations

import gc
import threading
import weakref

from node import agent
from tests.harness.waiting import wait_for


class _Cycle:
    pass


def test_collections_run_on_the_agents_schedule_while_verbs_hold_it_off():
    stop = threading.Event()
    slots = agent.RunSlots(1)
    old_slots, agent._SLOTS = agent._SLOTS, slots
    collector = threading.Thread(target=agent.collect_between_verbs, args=(stop, 0.05), daemon=True)
    try:
        collector.start()
        wait_for(lambda: not gc.isenabled(), timeout=5, what="automatic GC turned off")
        with slots.held():  # a verb runs: no collection may happen meanwhile
            a = _Cycle()
            a.self = a
            gone = weakref.ref(a)
            del a
            garbage = [[] for _ in range(20000)]  # far past the automatic threshold (700 allocations)
            del garbage
            stop.wait(0.3)  # several collector periods
            assert gone() is not None, "a collection ran while a verb held the slot"
        wait_for(lambda: gone() is None, timeout=5, what="the cycle collected after the verb")
    finally:
        stop.set()
        collector.join(5)
        agent._SLOTS = old_slots
    assert gc.isenabled()
