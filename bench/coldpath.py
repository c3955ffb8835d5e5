"""How much slower this machine runs code it has not run for a while: the decode of one announcement
frame (bridge.feed.codec.decode, the first step of the order path) back to back, and after the thread
slept. On a shared VM the caches are taken by others while the daemon waits for the next announcement,
so every step of its order path pays this, not only the decode: it is why the daemon's internal time
(bridge_order_internal_seconds) is several times what a tight loop over the same code measures."""

from __future__ import annotations

import statistics
import time

from bench.scenarios import frame
from bridge.feed.codec import decode

SAMPLES = 60
PAUSES_S = (0.001, 0.03)  # after 1 ms, and after 30 ms idle (the bench's announcements are ~10-300 ms apart)


def _decode_us(data: bytes) -> float:
    began = time.perf_counter_ns()
    decode(data, max_bytes=1 << 20, received_ns=1, received_mono_ns=1)
    return (time.perf_counter_ns() - began) / 1000


def measure() -> dict[str, float]:
    """Median decode time (µs): "hot" back to back, then after each pause in PAUSES_S."""
    data = frame("COLD", "Binance Will List Cold (COLD)")
    result = {"hot": statistics.median(_decode_us(data) for _ in range(SAMPLES))}
    for pause in PAUSES_S:
        samples = []
        for _ in range(SAMPLES):
            time.sleep(pause)
            samples.append(_decode_us(data))
        result[f"after {pause * 1000:g} ms idle"] = statistics.median(samples)
    return result


def render(figures: dict[str, float]) -> str:
    shown = ", ".join(f"{what} {us:.0f} us" for what, us in figures.items())
    return f"cold path: one frame's decode (p50): {shown} (bench/coldpath.py)"
