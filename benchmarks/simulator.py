"""Simulator throughput, the contract monitor's overhead and memory growth.

A round trip is what a kernel caller does for one async call: create an async context,
register a callback, queue a one-leg operation, let it complete, take the callback, read the
status, free the context.  Operations alternate between AcquireCredentialsHandle on package
"Sim" (auth_data None) and FreeCredentialsHandle of the credential it produced, reusing one
CallOutputs object as a C caller reuses its memory.

Figures (``python -m benchmarks simulator``):

* ``deferred_round_trips_per_s``: completion driven by CompletionControl.complete (target
  >= 100000/s);
* ``threaded_round_trips_per_s``: completion on the simulator's worker threads, the caller
  waiting for the callback on a lock;
* ``monitor_overhead_ratio``: time per deferred round trip through ContractMonitor divided by
  the time without it, measured side by side in this run, interleaved, best of several rounds
  (target <= 2.0).  Measured in CPU time of the benchmark thread (the deferred loop is single
  threaded), so that other processes on a shared machine do not distort it; the wall-clock
  ratio is in ``raw``;
* ``rss_growth_mb_per_1m``: resident memory growth over 1,000,000 deferred round trips
  without the monitor (target < 20).

Set ``SIM_BENCH_SCALE`` (default 1.0) to shrink the iteration counts for a quick look.
"""

from __future__ import annotations

import gc
import os
import resource
import statistics
import threading
import time
from typing import Any

from adapters import status as st
from adapters.api import Adapter, CallOutputs
from adapters.constants import SECPKG_CRED_OUTBOUND
from adapters.simulator.adapter import SimulatorAdapter
from conformance.monitor import ContractMonitor

_SCALE = float(os.environ.get("SIM_BENCH_SCALE", "1.0"))


def _noop(actx: Any, data: Any) -> None:
    """The benchmark's callback: a kernel caller would signal or chain here."""


def deferred_round_trips(adapter: Adapter, pairs: int, clock: Any = time.perf_counter) -> float:
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


def _overhead(pairs: int, rounds: int, clock: Any) -> tuple[float, float, list[float]]:
    """Interleaved plain/monitored runs; returns (plain s/trip, monitored s/trip, ratios)."""
    plain_sim = SimulatorAdapter(completion="deferred")
    monitored_sim = SimulatorAdapter(completion="deferred")
    monitor = ContractMonitor(monitored_sim, trace_limit=10_000)
    plain, monitored, ratios = [], [], []
    deferred_round_trips(plain_sim, pairs // 10)  # warm-up (package default credential cache)
    deferred_round_trips(monitor, pairs // 10)
    for _ in range(rounds):
        a = deferred_round_trips(plain_sim, pairs, clock) / (2 * pairs)
        b = deferred_round_trips(monitor, pairs, clock) / (2 * pairs)
        plain.append(a)
        monitored.append(b)
        ratios.append(b / a)
    monitor.finish(0.0)
    bad = [v for v in monitor.violations() if v.party == "implementation"]
    if bad:
        raise RuntimeError(f"the monitor flagged the reference simulator: {bad[0]}")
    if len(monitor.trace) != 10_000:
        raise RuntimeError("the bounded trace did not keep its last 10000 events")
    plain_sim.close()
    monitored_sim.close()
    return min(plain), min(monitored), ratios


def main() -> dict[str, Any]:
    pairs = max(100, int(20_000 * _SCALE))
    sim = SimulatorAdapter(completion="deferred")
    deferred_round_trips(sim, pairs // 10)
    best = min(deferred_round_trips(sim, pairs) for _ in range(3))
    deferred_rate = 2 * pairs / best
    best_cpu = min(deferred_round_trips(sim, pairs, time.thread_time) for _ in range(3))

    threaded = SimulatorAdapter(completion="threaded", max_delay_ms=0.0, workers=1)
    threaded_pairs = max(50, pairs // 4)
    threaded_s = threaded_round_trips(threaded, threaded_pairs)
    threaded.close()

    plain_trip, monitored_trip, ratios = _overhead(pairs // 2, 5, time.thread_time)
    plain_wall, monitored_wall, wall_ratios = _overhead(pairs // 2, 5, time.perf_counter)

    million_pairs = max(1000, int(500_000 * _SCALE))
    gc.collect()
    before = _rss_mb()
    rss_s = deferred_round_trips(sim, million_pairs)
    gc.collect()
    after = _rss_mb()
    sim.close()
    trips = 2 * million_pairs
    return {
        "deferred_round_trips_per_s": round(deferred_rate),
        "threaded_round_trips_per_s": round(2 * threaded_pairs / threaded_s),
        "monitor_overhead_ratio": round(monitored_trip / plain_trip, 3),
        "rss_growth_mb_per_1m": round((after - before) * 1_000_000 / trips, 3),
        "raw": {
            "deferred_round_trips": 2 * pairs,
            "deferred_best_s": round(best, 4),
            "deferred_us_per_trip": round(best / (2 * pairs) * 1e6, 3),
            # the same loop in CPU time: what the simulator costs when the machine is not shared
            "deferred_round_trips_per_cpu_s": round(2 * pairs / best_cpu),
            "threaded_round_trips": 2 * threaded_pairs,
            "threaded_s": round(threaded_s, 4),
            "plain_cpu_us_per_trip": round(plain_trip * 1e6, 3),
            "monitored_cpu_us_per_trip": round(monitored_trip * 1e6, 3),
            "overhead_ratios_per_round": [round(r, 3) for r in ratios],
            "overhead_ratio_median": round(statistics.median(ratios), 3),
            "plain_wall_us_per_trip": round(plain_wall * 1e6, 3),
            "monitored_wall_us_per_trip": round(monitored_wall * 1e6, 3),
            "overhead_ratio_wall_clock": round(monitored_wall / plain_wall, 3),
            "overhead_ratio_wall_clock_median": round(statistics.median(wall_ratios), 3),
            "rss_round_trips": trips,
            "rss_before_mb": round(before, 2),
            "rss_after_mb": round(after, 2),
            "rss_run_s": round(rss_s, 2),
            "rss_round_trips_per_s": round(trips / rss_s),
        },
    }
