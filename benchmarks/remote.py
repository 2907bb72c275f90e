"""Throughput of the remote adapter against the simulator agent, next to in-process.

One iteration is the async life of one context with completion control: create, set the
callback, queue (a delete, the cheapest operation), complete (its callback notification
arrives before the answer), read the status, free: six API calls.  The same loop runs
in-process and remotely (stdio, and tcp on loopback) in alternating rounds, so both see
the same machine load.  The headline figures come from the fastest round of each, as
``timeit`` recommends: on a shared machine the slower rounds measure the other load, not
the protocol.  The medians are reported next to them.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import time
from typing import Any

import adapters.simulator
from adapters.api import Adapter
from adapters.remote import create as remote_create
from adapters.remote import pool

CALLS_PER_ITERATION = 6
ITERATIONS = 800
ROUNDS = 9


def _loop(adapter: Adapter, iterations: int) -> float:
    """Seconds per API call."""
    control = adapter.control
    assert control is not None
    hits: list[Any] = []
    def callback(ctx: Any, data: Any) -> None:
        hits.append(data)

    started = time.perf_counter()
    for _ in range(iterations):
        ctx = adapter.create_async_context()
        adapter.set_async_notify_callback(ctx, callback, None)
        adapter.delete_security_context_async(ctx, None)
        control.complete(ctx)
        adapter.get_async_call_status(ctx)
        adapter.free_async_context(ctx)
    elapsed = time.perf_counter() - started
    if len(hits) != iterations:
        raise RuntimeError(f"expected {iterations} callbacks, got {len(hits)}")
    return elapsed / (iterations * CALLS_PER_ITERATION)


def _tcp_agent() -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "adapters.remote.agent", "--listen", "tcp:127.0.0.1:0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=pool._child_env(),
    )
    assert proc.stderr is not None
    match = re.search(rb"tcp:127\.0\.0\.1:(\d+)", proc.stderr.readline())
    if not match:
        proc.kill()
        raise RuntimeError("tcp agent did not start")
    return proc, f"127.0.0.1:{int(match.group(1))}"


def main() -> dict[str, Any]:
    options = {"completion": "deferred"}
    local = adapters.simulator.create(options)
    stdio = remote_create(options)
    proc, address = _tcp_agent()
    try:
        tcp = remote_create({**options, "connect": address})
        for adapter in (local, stdio, tcp):
            _loop(adapter, 200)  # warm up (imports, caches, the agent's first session)
        local_s, stdio_s, tcp_s = [], [], []
        for _ in range(ROUNDS):
            local_s.append(_loop(local, ITERATIONS))
            stdio_s.append(_loop(stdio, ITERATIONS))
            tcp_s.append(_loop(tcp, ITERATIONS))
        tcp.close()
    finally:
        stdio.close()
        local.close()
        pool.drain()
        proc.kill()
        proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()
    best_local, best_stdio, best_tcp = (min(v) for v in (local_s, stdio_s, tcp_s))
    med_stdio, med_tcp = statistics.median(stdio_s), statistics.median(tcp_s)
    return {
        "calls_per_s_stdio": round(1.0 / best_stdio),
        "calls_per_s_tcp": round(1.0 / best_tcp),
        "calls_per_s_inprocess": round(1.0 / best_local),
        # per round, remote and in-process ran back to back: the median of those ratios
        "remote_ratio_vs_inprocess": round(
            statistics.median(r / loc for r, loc in zip(stdio_s, local_s, strict=True)), 1
        ),
        "round_trip_us_stdio": round(best_stdio * 1e6, 1),
        "median_calls_per_s_stdio": round(1.0 / med_stdio),
        "median_calls_per_s_tcp": round(1.0 / med_tcp),
        "rounds": ROUNDS,
        "calls_per_round": ITERATIONS * CALLS_PER_ITERATION,
    }

if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2, sort_keys=True))
