"""Shared timing helper for the benchmarks: interleaved repeats, median, one process."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_time(fn: Callable[[], object], repeats: int = 7, warmup: int = 2) -> float:
    """Median wall time of `fn()` in seconds over `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def ratio(fn_a: Callable[[], object], fn_b: Callable[[], object], repeats: int = 7, rounds: int = 3) -> float:
    """time(fn_a) / time(fn_b), measured in alternating rounds so drift hits both alike."""
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(median_time(fn_a, repeats))
        tb.append(median_time(fn_b, repeats))
    return statistics.median(ta) / statistics.median(tb)
