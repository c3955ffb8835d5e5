"""The garbage collector's full passes stay off the event loop's tail (issue 15): `bridge run` settles
the warm heap once (a full pass, then gc.freeze) and keeps freshly swapped markets out too; a process
that did not opt in (the test suite) is left alone. Run in a child process: freezing is process-wide."""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import gc, time
from bridge.aio import keep_heap_settled, settle_heap
warm = [{"symbol": f"C{i}/USDT", "info": {"i": i}} for i in range(200_000)]  # ~3,000 markets' worth
keep_heap_settled()
assert gc.get_freeze_count() == 0, "nothing frozen without opting in"
began = time.perf_counter(); gc.collect(); unsettled = time.perf_counter() - began
settle_heap()
frozen = gc.get_freeze_count()
began = time.perf_counter(); gc.collect(); settled = time.perf_counter() - began
more = [{"n": i} for i in range(10_000)]
keep_heap_settled()
assert gc.get_freeze_count() > frozen
print(f"{unsettled * 1000:.1f} {settled * 1000:.1f}")
"""


def test_a_settled_heap_makes_full_passes_cheap() -> None:
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    unsettled_ms, settled_ms = map(float, done.stdout.split())
    # a full pass over 400,000 objects costs tens of ms; once frozen it walks almost nothing
    assert settled_ms < unsettled_ms / 5, (unsettled_ms, settled_ms)
