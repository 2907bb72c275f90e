"""Completion modes of the simulator: inline, deferred (caller-chosen order), threaded."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from adapters import status as st
from adapters.api import CallOutputs
from adapters.constants import SECPKG_CRED_OUTBOUND
from adapters.simulator.adapter import SimulatorAdapter
from adapters.simulator.scheduler import Scheduler
from conformance.monitor import ContractMonitor

OUT = SECPKG_CRED_OUTBOUND


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, Any, int]] = []
        self.threads: set[int] = set()
        self.lock = threading.Lock()
        self.sim: SimulatorAdapter | None = None

    def __call__(self, actx: Any, data: Any) -> None:
        status = self.sim.get_async_call_status(actx) if self.sim else -1
        with self.lock:
            self.calls.append((actx, data, status))
            self.threads.add(threading.get_ident())


def _queue_ach(sim: SimulatorAdapter, rec: Recorder, data: Any) -> Any:
    ctx = sim.create_async_context()
    sim.set_async_notify_callback(ctx, rec, data)
    assert sim.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, CallOutputs()) == st.SEC_E_OK
    return ctx


def _wait(pred: Any, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.001)
    return pred()


# ---- inline ------------------------------------------------------------------------------------------


def test_inline_callback_runs_before_the_queue_call_returns() -> None:
    sim = SimulatorAdapter(completion="inline")
    rec = Recorder()
    rec.sim = sim
    ctx = _queue_ach(sim, rec, "x")
    # already called back, on this thread, with the final status visible inside (NOTIFY-8)
    assert rec.calls == [(ctx, "x", st.SEC_E_OK)]
    assert rec.threads == {threading.get_ident()}
    assert sim.control.pending() == []


def test_inline_scheduler_completes_on_submit() -> None:
    done: list[Any] = []
    sched = Scheduler(done.append, "inline")
    sched.submit("a")
    assert done == ["a"] and sched.pending() == []


# ---- deferred ----------------------------------------------------------------------------------------


def test_deferred_completes_only_when_asked() -> None:
    sim = SimulatorAdapter(completion="deferred")
    rec = Recorder()
    a, b, c = (_queue_ach(sim, rec, name) for name in "abc")
    time.sleep(0.01)
    assert rec.calls == []
    assert sim.control.pending() == [a, b, c]  # queue order
    assert all(sim.get_async_call_status(x) == st.SEC_I_ASYNC_CALL_PENDING for x in (a, b, c))
    assert sim.control.complete(b) is True
    assert [d for _, d, _ in rec.calls] == ["b"]
    assert sim.control.complete(b) is False  # nothing queued on it any more
    assert sim.control.complete("not a context") is False
    assert sim.control.complete_all() == 2
    assert [d for _, d, _ in rec.calls] == ["b", "a", "c"]
    assert sim.control.complete_all() == 0


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 2, 1, 0), (2, 0, 3, 1)])
def test_deferred_chosen_completion_order(order: tuple[int, ...]) -> None:
    sim = SimulatorAdapter(completion="deferred")
    rec = Recorder()
    ctxs = [_queue_ach(sim, rec, i) for i in range(4)]
    for i in order:
        sim.control.complete(ctxs[i])
    assert [d for _, d, _ in rec.calls] == list(order)
    assert [a for a, _, _ in rec.calls] == [ctxs[i] for i in order]


def test_deferred_completion_chained_from_a_callback() -> None:
    """A callback may reinit and queue the next call on its own context (OQ-11)."""
    sim = SimulatorAdapter(completion="deferred")
    monitor = ContractMonitor(sim)
    out = CallOutputs()
    seen: list[int] = []

    def chain(actx: Any, data: Any) -> None:
        seen.append(monitor.get_async_call_status(actx))
        if len(seen) == 1:
            monitor.reinit_async_context(actx)
            monitor.free_credentials_handle_async(actx, out.credential)

    ctx = monitor.create_async_context()
    monitor.set_async_notify_callback(ctx, chain, None)
    monitor.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, out)
    assert monitor.control is not None
    assert monitor.control.complete_all() == 2  # the chained call completes in the same sweep
    assert seen == [st.SEC_E_OK, st.SEC_E_OK]
    monitor.free_async_context(ctx)
    monitor.finish()
    assert not [v for v in monitor.violations() if v.party == "implementation"]


def test_switching_mode_keeps_deferred_calls_pending() -> None:
    sim = SimulatorAdapter(completion="deferred")
    rec = Recorder()
    a = _queue_ach(sim, rec, "a")
    sim.control.set_mode("inline")
    assert sim.control.mode == "inline"
    b = _queue_ach(sim, rec, "b")
    assert [d for _, d, _ in rec.calls] == ["b"]
    assert sim.control.pending() == [a]
    sim.control.complete_all()
    assert [x for x, _, _ in rec.calls] == [b, a]
    with pytest.raises(ValueError):
        sim.control.set_mode("eventually")


# ---- threaded ------------------------------------------------------------------------------------------


def test_threaded_completes_on_worker_threads_concurrently() -> None:
    sim = SimulatorAdapter(completion="threaded", max_delay_ms=1.0, workers=2, seed=11)
    rec = Recorder()
    ctxs = [_queue_ach(sim, rec, i) for i in range(50)]
    assert _wait(lambda: len(rec.calls) == 50)
    assert threading.get_ident() not in rec.threads
    workers = list(sim._scheduler._threads)  # the process-wide completion pool
    assert len(workers) >= 2 and rec.threads <= {t.ident for t in workers}
    assert sorted(d for _, d, _ in rec.calls) == list(range(50))
    assert all(sim.get_async_call_status(c) == st.SEC_E_OK for c in ctxs)
    for c in ctxs:
        sim.free_async_context(c)
    sim.close()


def test_threaded_calls_of_a_closed_simulator_never_complete() -> None:
    """Closing drops the calls still waiting in the shared pool: no callback after close."""
    sim = SimulatorAdapter(completion="threaded", max_delay_ms=200.0, seed=3)
    rec = Recorder()
    ctxs = [_queue_ach(sim, rec, i) for i in range(5)]
    sim.close()
    time.sleep(0.3)
    assert rec.calls == []
    assert all(sim.get_async_call_status(c) == st.SEC_I_ASYNC_CALL_PENDING for c in ctxs)


def _seeded_delays(seed: int) -> list[float]:
    """The delay each submitted call gets: its due time minus the moment it was submitted."""
    sched = Scheduler(lambda actx: None, "threaded", seed=seed, max_delay_ms=1000.0, workers=1)
    submitted = []
    for i in range(6):
        submitted.append(time.monotonic())
        sched.submit(i)
    with sched._lock:
        heap = sorted(sched._heap, key=lambda entry: entry[1])  # by submission sequence
    sched.stop()
    assert len(heap) == 6, "calls due within a second cannot have completed already"
    return [due - t for (due, _, _), t in zip(heap, submitted, strict=True)]


def test_threaded_delays_are_reproducible_from_the_seed() -> None:
    first = _seeded_delays(5)
    again = _seeded_delays(5)
    assert all(abs(x - y) < 0.02 for x, y in zip(first, again, strict=True)), (first, again)
    assert all(0.0 <= d <= 1.02 for d in first)
    other = _seeded_delays(6)
    assert any(abs(x - y) > 0.05 for x, y in zip(first, other, strict=True)), (first, other)


def test_threaded_status_reads_pending_until_completion() -> None:
    gate = threading.Event()
    sim = SimulatorAdapter(completion="threaded", max_delay_ms=0.0)
    rec = Recorder()

    def slow(actx: Any, data: Any) -> None:
        rec(actx, data)

    ctx = sim.create_async_context()
    sim.set_async_notify_callback(ctx, slow, None)
    original = sim._do_acquire

    def blocked(*args: Any) -> int:
        gate.wait(2.0)
        return original(*args)

    sim._do_acquire = blocked  # type: ignore[method-assign,assignment]
    sim.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, CallOutputs())
    time.sleep(0.01)
    assert sim.get_async_call_status(ctx) == st.SEC_I_ASYNC_CALL_PENDING  # CTX-7
    gate.set()
    assert _wait(lambda: rec.calls)
    assert sim.get_async_call_status(ctx) == st.SEC_E_OK
    sim.close()


def test_scheduler_rejects_unknown_mode_and_drains() -> None:
    with pytest.raises(ValueError, match="completion mode"):
        Scheduler(lambda actx: None, "sometimes")
    done: list[Any] = []
    sched = Scheduler(done.append, "threaded", max_delay_ms=0.5, workers=1)
    for i in range(5):
        sched.submit(i)
    assert sched.drain(2.0)
    assert _wait(lambda: len(done) == 5)
    sched.stop()
