"""Simulator throughput, the contract monitor's overhead and memory growth.

A round trip is what a kernel caller does for one async call: create an async context,
register a callback, queue a one-leg operation, let it complete, take the callback, read the
status, free the context.  Operations alternate between AcquireCredentialsHandle on package
"Sim" (auth_data None) and FreeCredentialsHandle of the credential it produced, reusing one
CallOutputs object as a C caller reuses its memory.

Figures (``python -m benchmarks simulator``), all wall-clock:

* ``deferred_round_trips_per_s``: completion driven by CompletionControl.complete (target
  >= 100000/s);
* ``threaded_round_trips_per_s``: completion on the simulator's worker threads, the caller
  waiting for the callback on a lock;
* ``monitor_overhead_ratio``: time per deferred round trip through ContractMonitor divided by
  the time without it (target <= 2.0);
* ``rss_growth_mb_per_1m``: resident memory growth over 1,000,000 deferred round trips
  without the monitor (target < 20).

The machine is shared, so the timed figures come from many short batches, the plain and the
monitored simulator alternating, and the best batch of each is kept (as benchmarks/tls.py
does): a long batch is always preempted somewhere, a short one sometimes is not, so the best
short batch estimates the undisturbed cost.  Every batch is timed on both clocks; the CPU-time
figures (the benchmark thread's own time, which other processes distort less but which still
includes cache and frequency effects of a busy machine) are in ``raw``, with the load average
before and after.

Set ``SIM_BENCH_SCALE`` (default 1.0) to shrink the iteration counts for a quick look.
"""

from __future__ import annotations

import gc
import os
import resource
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from adapters import status as st
from adapters.api import Adapter, CallOutputs
from adapters.constants import SECPKG_CRED_OUTBOUND
from adapters.simulator.adapter import SimulatorAdapter
from conformance.monitor import ContractMonitor

_SCALE = float(os.environ.get("SIM_BENCH_SCALE", "1.0"))
# Round-trip pairs per batch and batches per variant (alternating).
_BATCH_PAIRS = 200
_ROUNDS = max(5, int(120 * _SCALE))
_THREADED_BATCH_PAIRS, _THREADED_ROUNDS = 250, max(3, int(10 * _SCALE))
_TRACE_LIMIT = 10_000


def _noop(actx: Any, data: Any) -> None:
    """The benchmark's callback: a kernel caller would signal or chain here."""


def deferred_round_trips(adapter: Adapter, pairs: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds (of ``clock``) for ``2 * pairs`` deferred round trips (ACH then FreeCredentials)."""
    control = adapter.control
    assert control is not None and control.mode == "deferred"
    complete = control.complete
    create, free = adapter.create_async_context, adapter.free_async_context
    register, status = adapter.set_async_notify_callback, adapter.get_async_call_status
    acquire, release = adapter.acquire_credentials_handle_async, adapter.free_credentials_handle_async
    outputs = CallOutputs()
    use = SECPKG_CRED_OUTBOUND
    ok = st.SEC_E_OK
    start = clock()
    for _ in range(pairs):
        ctx = create()
        register(ctx, _noop, None)
        if acquire(ctx, None, "Sim", use, None, outputs) != ok:
            raise RuntimeError("ACH was not queued")
        complete(ctx)
        if status(ctx) != ok:
            raise RuntimeError(f"ACH completed with {st.describe(status(ctx))}")
        free(ctx)
        ctx = create()
        register(ctx, _noop, None)
        if release(ctx, outputs.credential) != ok:
            raise RuntimeError("FreeCredentialsHandle was not queued")
        complete(ctx)
        if status(ctx) != ok:
            raise RuntimeError(f"FreeCredentialsHandle completed with {st.describe(status(ctx))}")
        free(ctx)
    return clock() - start


def _timed_batch(adapter: Adapter, pairs: int) -> tuple[float, float]:
    """(wall, CPU) seconds per round trip for one batch."""
    wall, cpu = time.perf_counter(), time.thread_time()
    deferred_round_trips(adapter, pairs, lambda: 0.0)
    return (time.perf_counter() - wall) / (2 * pairs), (time.thread_time() - cpu) / (2 * pairs)


class _Best:
    """Per-trip times of one variant over many batches."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def add(self, sample: tuple[float, float]) -> None:
        self.wall.append(sample[0])
        self.cpu.append(sample[1])


def _interleaved(variants: dict[str, Adapter], rounds: int, pairs: int) -> dict[str, _Best]:
    """Short batches of every variant, alternating; all samples kept."""
    best = {name: _Best() for name in variants}
    for adapter in variants.values():
        deferred_round_trips(adapter, pairs)  # warm-up (package default credential cache, code paths)
    for _ in range(rounds):
        for name, adapter in variants.items():
            best[name].add(_timed_batch(adapter, pairs))
    return best


def threaded_round_trips(adapter: Adapter, pairs: int) -> float:
    """Seconds for ``2 * pairs`` round trips completed on worker threads."""
    done = threading.Lock()
    done.acquire()

    def signal(actx: Any, data: Any) -> None:
        done.release()

    create, free = adapter.create_async_context, adapter.free_async_context
    register, status = adapter.set_async_notify_callback, adapter.get_async_call_status
    acquire, release = adapter.acquire_credentials_handle_async, adapter.free_credentials_handle_async
    outputs = CallOutputs()
    wait = done.acquire
    start = time.perf_counter()
    for _ in range(pairs):
        ctx = create()
        register(ctx, signal, None)
        acquire(ctx, None, "Sim", SECPKG_CRED_OUTBOUND, None, outputs)
        if not wait(timeout=5.0):
            raise RuntimeError("no callback within 5 s")
        status(ctx)
        free(ctx)
        ctx = create()
        register(ctx, signal, None)
        release(ctx, outputs.credential)
        if not wait(timeout=5.0):
            raise RuntimeError("no callback within 5 s")
        status(ctx)
        free(ctx)
    return time.perf_counter() - start


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _check_monitor(monitor: ContractMonitor) -> None:
    """The monitored runs must be clean and the bounded trace must hold its last events."""
    monitor.finish(0.0)
    bad = [v for v in monitor.violations() if v.party == "implementation"]
    if bad:
        raise RuntimeError(f"the monitor flagged the reference simulator: {bad[0]}")
    if len(monitor.trace) != _TRACE_LIMIT:
        raise RuntimeError(f"the bounded trace did not keep its last {_TRACE_LIMIT} events")


def _us(seconds: float) -> float:
    return round(seconds * 1e6, 3)


def main() -> dict[str, Any]:
    load_before = os.getloadavg()
    plain = SimulatorAdapter(completion="deferred")
    monitored_sim = SimulatorAdapter(completion="deferred")
    monitor = ContractMonitor(monitored_sim, trace_limit=_TRACE_LIMIT)
    samples = _interleaved({"plain": plain, "monitored": monitor}, _ROUNDS, _BATCH_PAIRS)
    _check_monitor(monitor)
    monitored_sim.close()
    p, m = samples["plain"], samples["monitored"]
    plain_wall, monitored_wall = min(p.wall), min(m.wall)
    plain_cpu, monitored_cpu = min(p.cpu), min(m.cpu)
    batch_ratios = [b / a for a, b in zip(p.wall, m.wall, strict=True)]

    threaded = SimulatorAdapter(completion="threaded", max_delay_ms=0.0, workers=1)
    threaded_round_trips(threaded, _THREADED_BATCH_PAIRS // 5)  # warm-up (starts the workers)
    threaded_s = min(threaded_round_trips(threaded, _THREADED_BATCH_PAIRS) for _ in range(_THREADED_ROUNDS))
    threaded.close()

    million_pairs = max(1000, int(500_000 * _SCALE))
    gc.collect()
    before = _rss_mb()
    rss_s = deferred_round_trips(plain, million_pairs)
    gc.collect()
    after = _rss_mb()
    plain.close()
    trips = 2 * million_pairs
    load_after = os.getloadavg()
    return {
        "deferred_round_trips_per_s": round(1.0 / plain_wall),
        "threaded_round_trips_per_s": round(2 * _THREADED_BATCH_PAIRS / threaded_s),
        "monitor_overhead_ratio": round(monitored_wall / plain_wall, 3),
        "rss_growth_mb_per_1m": round((after - before) * 1_000_000 / trips, 3),
        "raw": {
            "method": f"best of {_ROUNDS} batches of {2 * _BATCH_PAIRS} round trips per variant, plain and "
            "monitored alternating; wall clock (perf_counter) and CPU time of the thread (thread_time)",
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
            "plain_wall_us_per_trip": _us(plain_wall),
            "monitored_wall_us_per_trip": _us(monitored_wall),
            "overhead_ratio_wall_batch_median": round(statistics.median(batch_ratios), 3),
            "plain_cpu_us_per_trip": _us(plain_cpu),
            "monitored_cpu_us_per_trip": _us(monitored_cpu),
            "overhead_ratio_cpu": round(monitored_cpu / plain_cpu, 3),
            "deferred_round_trips_per_cpu_s": round(1.0 / plain_cpu),
            "threaded_round_trips_per_batch": 2 * _THREADED_BATCH_PAIRS,
            "threaded_best_batch_s": round(threaded_s, 4),
            "rss_round_trips": trips,
            "rss_before_mb": round(before, 2),
            "rss_after_mb": round(after, 2),
            "rss_run_s": round(rss_s, 2),
            "rss_round_trips_per_s": round(trips / rss_s),
        },
    }
