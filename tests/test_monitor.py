"""The contract monitor on the correct simulator, its API, and checks not covered by mutants."""

from __future__ import annotations

import gc
import itertools
import re
import threading
import time
from functools import partial
from typing import Any

import pytest
from section_a_workload import DELIBERATE_MISUSE, Data, implementation_ids, run_workload

from adapters import status as st
from adapters.api import CallOutputs, Handle, SecBuffer, Unsupported
from adapters.async_state import TABLE, Event, Rule, State
from adapters.constants import ISC_REQ, SECBUFFER_TOKEN, SECPKG_CRED_INBOUND, SECPKG_CRED_OUTBOUND
from adapters.simulator import create as create_simulator
from adapters.simulator.adapter import AsyncContext, SimulatorAdapter
from adapters.simulator.mutants import MUTANTS
from conformance.monitor import _LAZY, ContractMonitor, _new_shadow, _Shadow
from conformance.results import TraceEvent, ViolationRecord

OUT = SECPKG_CRED_OUTBOUND


def _noop(actx: Any, data: Any) -> None:
    pass


def _signal(event: threading.Event, actx: Any, data: Any) -> None:
    event.set()


@pytest.fixture
def deferred() -> ContractMonitor:
    return ContractMonitor(SimulatorAdapter(completion="deferred"))


# ---- the correct simulator -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["inline", "deferred", "threaded"])
def test_no_implementation_violation_on_the_reference_simulator(mode: str) -> None:
    sim = SimulatorAdapter(completion=mode, seed=7, max_delay_ms=1.0)
    monitor = ContractMonitor(sim)
    run_workload(monitor)
    sim.close()
    assert implementation_ids(monitor) == set(), [v for v in monitor.violations() if v.party == "implementation"]


def test_deliberate_misuse_is_recorded_as_caller_violations() -> None:
    sim = SimulatorAdapter(completion="deferred")
    monitor = ContractMonitor(sim)
    run_workload(monitor)
    own = {v.requirement for v in monitor.violations() if v.party == "caller" and v.seq is not None}
    assert own == DELIBERATE_MISUSE
    reported = [v for v in monitor.violations() if v.seq is None]
    assert reported and all("reported by the implementation" in v.message for v in reported)
    # the simulator detected the same misuse on its side
    assert DELIBERATE_MISUSE <= {v.requirement for v in reported}


def test_threaded_callers_on_two_threads_stay_clean() -> None:
    sim = SimulatorAdapter(completion="threaded", seed=3, max_delay_ms=0.5, workers=2)
    monitor = ContractMonitor(sim)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(40):
                done = threading.Event()
                ctx = monitor.create_async_context()
                monitor.set_async_notify_callback(ctx, partial(_signal, done), Data(f"{n}-{i}"))
                out = CallOutputs()
                assert monitor.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, out) == st.SEC_E_OK
                assert done.wait(2.0)
                assert monitor.get_async_call_status(ctx) == st.SEC_E_OK
                monitor.reinit_async_context(ctx)
                done.clear()
                monitor.free_credentials_handle_async(ctx, out.credential)
                assert done.wait(2.0)
                monitor.free_async_context(ctx)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    monitor.finish()
    sim.close()
    assert not errors
    assert implementation_ids(monitor) == set()
    assert sum(1 for e in monitor.trace if e.kind == "callback") == 160


# ---- the API the executor uses ---------------------------------------------------------------------


def test_trace_records_calls_callbacks_and_statuses(deferred: ContractMonitor) -> None:
    ctx = deferred.create_async_context()
    deferred.set_async_notify_callback(ctx, _noop, "data")
    out = CallOutputs()
    deferred.acquire_credentials_handle_async(ctx, None, "Sim", OUT, {"user": "alice", "password": "pw"}, out)
    assert deferred.control is not None
    deferred.control.complete(ctx)
    deferred.get_async_call_status(ctx)
    deferred.free_async_context(ctx)
    trace = deferred.trace
    assert all(isinstance(e, TraceEvent) for e in trace)
    assert [e.seq for e in trace] == sorted(e.seq for e in trace)
    kinds = [(e.kind, e.op) for e in trace]
    assert kinds == [
        ("return", "create_async_context"),
        ("return", "set_async_notify_callback"),
        ("call", "acquire_credentials_handle_async"),
        ("complete", "complete"),
        ("callback", "acquire_credentials_handle_async"),
        ("status", "get_async_call_status"),
        ("call", "free_async_context"),
    ]
    assert {e.ctx for e in trace} == {"actx1"}
    call = trace[2]
    assert call.status == st.SEC_E_OK and call.args["package"] == "Sim"
    assert call.args["auth_data"] == {"user": "alice", "password": "***"}  # secrets never reach reports
    callback = trace[4]
    assert callback.thread == threading.get_ident() and callback.status == st.SEC_E_OK
    assert all(b.t >= a.t for a, b in itertools.pairwise(trace))


def test_server_accounts_and_other_secrets_are_masked_in_the_trace(deferred: ContractMonitor) -> None:
    ctx = deferred.create_async_context()
    deferred.set_async_notify_callback(ctx, _noop, None)
    auth = {"name": "server.test", "accounts": {"alice": "secret", "bob": "hunter2"}, "legs": 2,
            "client_secret": "s3", "PIN": "1234", "nested": {"Passphrase": "p"}}
    deferred.acquire_credentials_handle_async(ctx, None, "Sim", SECPKG_CRED_INBOUND, auth, CallOutputs())
    shown = next(e for e in deferred.trace if e.kind == "call").args["auth_data"]
    assert shown == {"name": "server.test", "accounts": {"alice": "***", "bob": "***"}, "legs": 2,
                     "client_secret": "***", "PIN": "***", "nested": {"Passphrase": "***"}}
    assert "hunter2" not in repr(deferred.trace) and "1234" not in repr(deferred.trace)


def test_inline_callback_is_ordered_between_call_and_return() -> None:
    monitor = ContractMonitor(SimulatorAdapter(completion="inline"))
    ctx = monitor.create_async_context()
    monitor.set_async_notify_callback(ctx, _noop, None)
    monitor.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, CallOutputs())
    kinds = [e.kind for e in monitor.trace if e.op == "acquire_credentials_handle_async"]
    assert kinds == ["call", "callback", "return"]


def test_name_labels_handles_in_trace_and_messages(deferred: ContractMonitor) -> None:
    a = deferred.create_async_context()
    b = deferred.create_async_context()
    deferred.name(b, "server-ctx")
    deferred.free_async_context(a)
    deferred.free_async_context(a)  # double free: the message uses the label
    labels = [e.ctx for e in deferred.trace if e.kind != "violation"]
    assert labels[:2] == ["actx1", "server-ctx"]
    double = [v for v in deferred.violations() if v.seq is not None]
    assert double[0].requirement == "FREE-1" and "actx1" in double[0].message


def test_callback_count_and_finish_flags_lost_callbacks() -> None:
    class Silent(SimulatorAdapter):  # loses every callback
        def _invoke(self, callback: Any, actx: AsyncContext, data: Any) -> None:
            return

    monitor = ContractMonitor(Silent(completion="threaded", max_delay_ms=0.1))
    ctx = monitor.create_async_context()
    monitor.set_async_notify_callback(ctx, _noop, None)
    monitor.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, CallOutputs())
    assert monitor.callback_count(ctx) == 0
    started = time.monotonic()
    monitor.finish(settle_s=0.05)
    assert time.monotonic() - started < 1.0
    lost = [v for v in monitor.violations() if v.requirement == "OQ-13"]
    assert len(lost) == 1 and lost[0].party == "implementation"
    monitor.finish(settle_s=0.0)  # idempotent: flagged once
    assert len([v for v in monitor.violations() if v.requirement == "OQ-13"]) == 1


def test_calls_still_queued_at_finish_are_not_lost(deferred: ContractMonitor) -> None:
    ctx = deferred.create_async_context()
    deferred.set_async_notify_callback(ctx, _noop, None)
    deferred.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, CallOutputs())
    deferred.finish(settle_s=0.0)
    assert not [v for v in deferred.violations() if v.party == "implementation"]
    assert any("still queued" in e.detail for e in deferred.trace)
    assert deferred.control is not None
    deferred.control.complete_all()
    assert deferred.callback_count(ctx) == 1


def test_trace_limit_keeps_the_last_events() -> None:
    monitor = ContractMonitor(SimulatorAdapter(completion="inline"), trace_limit=5)
    for _ in range(20):
        ctx = monitor.create_async_context()
        monitor.free_async_context(ctx)
    trace = monitor.trace
    assert len(trace) == 5
    assert trace[-1].seq == 40 and trace[-1].op == "free_async_context"


def test_violations_merge_implementation_diagnostics(deferred: ContractMonitor) -> None:
    ctx = deferred.create_async_context()
    deferred.free_async_context(ctx)
    deferred.free_async_context(ctx)
    records = deferred.violations()
    assert all(isinstance(v, ViolationRecord) for v in records)
    ours = [v for v in records if v.seq is not None]
    theirs = [v for v in records if v.seq is None]
    assert [v.requirement for v in ours] == ["FREE-1"] and ours[0].party == "caller"
    assert [v.requirement for v in theirs] == ["FREE-1"] and "reported by the implementation" in theirs[0].message
    assert deferred.violations() == records  # nothing lost by reading twice
    deferred.inner.close()


def test_leaks_reported_at_close_are_merged() -> None:
    monitor = ContractMonitor(SimulatorAdapter(completion="deferred"))
    monitor.create_async_context()
    monitor.close()
    assert [v.requirement for v in monitor.violations()] == ["CTX-6"]


def test_unsupported_requires_notify_is_reraised_and_noted(deferred: ContractMonitor) -> None:
    class NoRequiresNotify(SimulatorAdapter):
        def async_context_requires_notify(self, ctx: Handle | None) -> bool:
            raise Unsupported("SspiAsyncContextRequiresNotify (GEN-7)")

    monitor = ContractMonitor(NoRequiresNotify(completion="deferred"))
    ctx = monitor.create_async_context()
    with pytest.raises(Unsupported):
        monitor.async_context_requires_notify(ctx)
    assert any("GEN-7" in e.detail for e in monitor.trace)


# ---- checks the mutant catalogue does not exercise ---------------------------------------------------


def test_ctx1_create_returning_a_live_context_is_flagged() -> None:
    class Recycles(SimulatorAdapter):
        _last: Handle | None = None

        def create_async_context(self) -> Handle | None:
            if self._last is None:
                self._last = super().create_async_context()
            return self._last

    monitor = ContractMonitor(Recycles(completion="deferred"))
    monitor.create_async_context()
    monitor.create_async_context()
    assert implementation_ids(monitor) == {"CTX-1"}


def test_call20_accepted_reserved_parameters_are_flagged() -> None:
    class IgnoresReserved(SimulatorAdapter):
        def initialize_security_context_async(self, ctx: Any, *args: Any, **kwargs: Any) -> int:
            kwargs.pop("reserved1", None)
            kwargs.pop("reserved2", None)
            return super().initialize_security_context_async(ctx, *args, **kwargs)

    monitor = ContractMonitor(IgnoresReserved(completion="deferred"))
    ctx = monitor.create_async_context()
    monitor.set_async_notify_callback(ctx, _noop, None)
    monitor.initialize_security_context_async(ctx, None, None, "t", 0, None, CallOutputs(), reserved2=7)
    assert implementation_ids(monitor) == {"CALL-20"}
    assert "CALL-20" in {v.requirement for v in monitor.violations() if v.party == "caller"}


def test_call2_queue_on_a_foreign_handle_accepted_is_flagged() -> None:
    class AcceptsAnything(SimulatorAdapter):
        def free_credentials_handle_async(self, ctx: Handle | None, credential: Handle | None) -> int:
            return st.SEC_E_OK if type(ctx) is not AsyncContext else super().free_credentials_handle_async(
                ctx, credential)

    monitor = ContractMonitor(AcceptsAnything(completion="deferred"))
    monitor.free_credentials_handle_async("not-a-context", None)
    assert implementation_ids(monitor) == {"CALL-2"}


def test_reinit_of_null_reporting_success_is_flagged() -> None:
    class ReinitAnything(SimulatorAdapter):
        def reinit_async_context(self, ctx: Handle | None) -> int:
            return st.STATUS_SUCCESS if ctx is None else super().reinit_async_context(ctx)

    monitor = ContractMonitor(ReinitAnything(completion="deferred"))
    monitor.reinit_async_context(None)
    assert implementation_ids(monitor) == {"REINIT-4"}
    assert "REINIT-7" in {v.requirement for v in monitor.violations() if v.party == "caller"}


def test_callback_for_a_context_never_queued_is_flagged() -> None:
    sim = SimulatorAdapter(completion="deferred")
    monitor = ContractMonitor(sim)
    ctx = monitor.create_async_context()
    monitor.set_async_notify_callback(ctx, _noop, None)
    assert type(ctx) is AsyncContext and ctx.callback is not None
    ctx.callback(ctx, None)  # the implementation calls back out of the blue
    assert implementation_ids(monitor) == {"OQ-13"}


def test_final_status_before_callback_allows_reinit_either_way() -> None:
    """Status final but callback not run yet: a reinit is not judged, the callback still owed."""
    gate = threading.Event()

    class SlowCallback(SimulatorAdapter):  # publishes the status, then dawdles before calling back
        def _invoke(self, callback: Any, actx: AsyncContext, data: Any) -> None:
            gate.wait(2.0)
            super()._invoke(callback, actx, data)

    monitor = ContractMonitor(SlowCallback(completion="threaded", max_delay_ms=0.0))
    ctx = monitor.create_async_context()
    seen: list[Any] = []
    arrived = threading.Event()

    def done(actx: Any, data: Any) -> None:
        seen.append(data)
        arrived.set()

    monitor.set_async_notify_callback(ctx, done, "first")
    monitor.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, CallOutputs())
    deadline = time.monotonic() + 2.0
    while monitor.get_async_call_status(ctx) == st.SEC_I_ASYNC_CALL_PENDING and time.monotonic() < deadline:
        time.sleep(0.001)
    assert st.nt_success(monitor.reinit_async_context(ctx))  # the simulator allows it here
    gate.set()
    assert arrived.wait(2.0) and seen == ["first"]
    monitor.finish()
    assert implementation_ids(monitor) == set()
    assert monitor.callback_count(ctx) == 1


# ---- a refusal after a reinit is not, by itself, a lost registration (NOTIFY-7) ---------------------


def _reinit_then(monitor: ContractMonitor, queue: Any) -> int:
    """Register, run one call to completion, reinit, then queue again with ``queue(ctx)``."""
    ctx = monitor.create_async_context()
    monitor.set_async_notify_callback(ctx, _noop, None)
    out = CallOutputs()
    assert monitor.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, out) == st.SEC_E_OK
    assert monitor.control is not None and monitor.control.complete(ctx)
    assert monitor.get_async_call_status(ctx) == st.SEC_E_OK
    assert st.nt_success(monitor.reinit_async_context(ctx))
    result: int = queue(ctx)
    return result


@pytest.mark.parametrize("reserved", [{"reserved1": 1}, {"reserved2": 1}])
def test_reserved_parameters_refused_after_reinit_are_not_a_lost_callback(
    deferred: ContractMonitor, reserved: dict[str, int]
) -> None:
    """CALL-20: refusing a non-zero Reserved1/Reserved2 is right, whatever the context went through."""
    result = _reinit_then(deferred, lambda ctx: deferred.initialize_security_context_async(
        ctx, None, None, "server.test", 0, None, CallOutputs(), **reserved))
    assert result == st.SEC_E_INVALID_PARAMETER
    assert implementation_ids(deferred) == set()
    assert "CALL-20" in {v.requirement for v in deferred.violations() if v.party == "caller"}


class _RefusesUnknownTargets(SimulatorAdapter):
    """A correct implementation with a parameter check the monitor does not model."""

    def initialize_security_context_async(self, ctx: Any, credential: Any, context: Any, target: Any,
                                          *args: Any, **kwargs: Any) -> int:
        if target == "unknown.test":
            return st.SEC_E_INVALID_PARAMETER
        return super().initialize_security_context_async(ctx, credential, context, target, *args, **kwargs)


def test_unmodelled_parameter_refusal_after_reinit_is_not_a_lost_callback() -> None:
    monitor = ContractMonitor(_RefusesUnknownTargets(completion="deferred"))
    result = _reinit_then(monitor, lambda ctx: monitor.initialize_security_context_async(
        ctx, None, None, "unknown.test", 0, None, CallOutputs()))
    assert result == st.SEC_E_INVALID_PARAMETER
    assert implementation_ids(monitor) == set()
    assert any("probe" in e.detail for e in monitor.trace)  # RequiresNotify was asked, said True


class _DropsCallbackOnReinit(SimulatorAdapter):
    def reinit_async_context(self, ctx: Handle | None) -> int:
        result = super().reinit_async_context(ctx)
        if type(ctx) is AsyncContext:
            ctx.callback = ctx.data = None
        return result


class _DropsCallbackNoRequiresNotify(_DropsCallbackOnReinit):
    def async_context_requires_notify(self, ctx: Handle | None) -> bool:
        raise Unsupported("SspiAsyncContextRequiresNotify (GEN-7)")


@pytest.mark.parametrize("cls", [_DropsCallbackOnReinit, _DropsCallbackNoRequiresNotify])
def test_a_lost_registration_is_still_flagged(cls: type[SimulatorAdapter]) -> None:
    """The same refusal from an implementation that did lose the registration: NOTIFY-7, confirmed
    by RequiresNotify when it exists, on the refusal alone when it does not."""
    monitor = ContractMonitor(cls(completion="deferred"))
    result = _reinit_then(monitor, lambda ctx: monitor.initialize_security_context_async(
        ctx, None, None, "server.test", 0, None, CallOutputs()))
    assert result == st.SEC_E_INVALID_PARAMETER
    assert implementation_ids(monitor) == {"NOTIFY-7"}


def test_trimmed_trace_keeps_event_numbers_and_violation_references() -> None:
    """A bounded trace drops old events in bulk; numbers stay absolute, so a violation still
    points at its event, and every queue call event carries the status it returned."""
    monitor = ContractMonitor(SimulatorAdapter(completion="deferred"), trace_limit=20)
    assert monitor.control is not None
    for _ in range(30):
        ctx = monitor.create_async_context()
        monitor.set_async_notify_callback(ctx, _noop, "d")
        monitor.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, CallOutputs())
        monitor.control.complete(ctx)
        monitor.get_async_call_status(ctx)
        monitor.free_async_context(ctx)
    monitor.free_async_context(ctx)  # double free: a caller violation with an event number
    trace = monitor.trace
    assert len(trace) == 20
    assert [e.seq for e in trace] == list(range(trace[0].seq, trace[0].seq + 20))
    assert trace[-1].seq == 30 * 7 + 2  # seven events per round trip, then the double free and its flag
    double = [v for v in monitor.violations() if v.seq is not None]
    assert [v.requirement for v in double] == ["FREE-1"]
    assert double[0].seq is not None
    flagged = {e.seq: e for e in trace}[double[0].seq]
    assert (flagged.kind, flagged.op) == ("call", "free_async_context")
    calls = [e for e in trace if e.kind == "call" and e.op == "acquire_credentials_handle_async"]
    assert calls and all(e.status == st.SEC_E_OK and e.args["package"] == "Sim" for e in calls)
    registrations = [e for e in trace if e.op == "set_async_notify_callback"]
    assert registrations and all(e.args == {"callback": "_noop", "data": "d"} for e in registrations)


# ---- the hot paths (see ContractMonitor's "Cost" notes) ------------------------------------------------


class _GeneralOnly(ContractMonitor):
    """Every context leaves the usual case as soon as it is created: only the general paths run."""

    def create_async_context(self) -> Handle | None:
        handle = super().create_async_context()
        sh = self._peek(handle)
        if sh is not None:
            sh.leave_usual()
        return handle


def _normal(value: Any) -> Any:
    """Handle serials and addresses differ between two runs; nothing else may."""
    return re.sub(r"#\d+|0x[0-9a-f]+", "#", value) if isinstance(value, str) else value


def _observed(monitor: ContractMonitor) -> tuple[list[Any], list[Any]]:
    found = [(v.requirement, v.party, v.call, v.seq, _normal(v.message)) for v in monitor.violations()]
    # (what the simulator reports itself comes in the order of its own set of contexts)
    violations = [v for v in found if v[3] is not None] + sorted(v for v in found if v[3] is None)
    trace = [(e.seq, e.kind, e.op, _normal(e.ctx), e.status, _normal(e.detail),
              {k: _normal(repr(v)) for k, v in e.args.items()}) for e in monitor.trace]
    return violations, trace


@pytest.mark.parametrize("mode", ["deferred", "inline"])
@pytest.mark.parametrize("mutant", [None, *sorted(MUTANTS)])
def test_hot_paths_judge_exactly_as_the_general_paths(mode: str, mutant: str | None) -> None:
    """The same workload, on the reference simulator and on every faulty one, gives the same
    violations and the same trace whether the hot paths take the usual cases or not."""
    runs = []
    for cls in (ContractMonitor, _GeneralOnly):
        options = {"completion": mode} | ({"mutant": mutant} if mutant else {})
        sim = create_simulator(options)
        monitor = cls(sim)
        try:
            run_workload(monitor, settle_s=0.0)
        finally:
            sim.close()
        runs.append(_observed(monitor))
    assert runs[0][0] == runs[1][0]
    assert runs[0][1] == runs[1][1]


def test_the_hot_path_of_create_makes_the_same_shadow_as_the_general_one() -> None:
    """The hot path of create sets fewer fields (see _LAZY); once a general path takes the context,
    every field is set and holds what a shadow made in full would."""
    monitor = ContractMonitor(SimulatorAdapter(completion="deferred"))
    ctx = monitor.create_async_context()
    fast = monitor._peek(ctx)
    assert fast is not None and fast.usual
    assert all(not hasattr(fast, name) for name in _LAZY)
    full = _new_shadow(ctx, fast.number, monitor)
    fast.leave_usual()
    full.leave_usual()
    assert {name: getattr(fast, name) for name in _Shadow.__slots__} == {
        name: getattr(full, name) for name in _Shadow.__slots__}


def test_a_usual_context_reads_its_callback_count_without_leaving_the_hot_paths(
        deferred: ContractMonitor) -> None:
    ctx = deferred.create_async_context()
    deferred.set_async_notify_callback(ctx, _noop, None)
    deferred.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, CallOutputs())
    assert deferred.callback_count(ctx) == 0
    assert deferred.control is not None and deferred.control.complete(ctx)
    assert deferred.callback_count(ctx) == 1
    shadow = deferred._peek(ctx)
    assert shadow is not None and shadow.usual
    deferred.free_async_context(ctx)
    assert deferred.callback_count(ctx) == 1  # freed, remembered


def test_a_refused_registration_on_the_hot_path_keeps_the_callback_in_force() -> None:
    class RefusesSecondRegistration(SimulatorAdapter):
        registrations = 0

        def set_async_notify_callback(self, ctx: Handle | None, callback: Any, data: Any = None) -> int:
            self.registrations += 1
            if self.registrations == 2:
                return st.SEC_E_INSUFFICIENT_MEMORY
            return super().set_async_notify_callback(ctx, callback, data)

    monitor = ContractMonitor(RefusesSecondRegistration(completion="deferred"))
    first: list[Any] = []
    ctx = monitor.create_async_context()
    monitor.set_async_notify_callback(ctx, lambda actx, data: first.append(data), "first")
    assert monitor.set_async_notify_callback(ctx, _noop, "second") == st.SEC_E_INSUFFICIENT_MEMORY
    monitor.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, CallOutputs())
    assert monitor.control is not None and monitor.control.complete(ctx)
    assert first == ["first"]
    assert implementation_ids(monitor) == {"NOTIFY-9"}  # a registration the table accepts was refused


@pytest.mark.parametrize("offset", range(7))
def test_trimmed_trace_decodes_callbacks_whose_call_was_dropped(offset: int) -> None:
    """Old events go in chunks; wherever the cut falls, every event kept decodes to what it was
    (a callback's event is its call record appended again, even once the call's event is gone)."""
    limit = 70 + offset
    monitor = ContractMonitor(SimulatorAdapter(completion="deferred"), trace_limit=limit)
    assert monitor.control is not None
    trips = 150  # 7 events each: the trace is trimmed more than once
    for _ in range(trips):
        ctx = monitor.create_async_context()
        monitor.set_async_notify_callback(ctx, _noop, None)
        monitor.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, CallOutputs())
        monitor.control.complete(ctx)
        monitor.get_async_call_status(ctx)
        monitor.free_async_context(ctx)
    assert len(monitor._raw) < limit + 600  # (bounded: trimmed in chunks)
    trace = monitor.trace
    assert len(trace) == limit and trace[-1].seq == trips * 7
    cycle = [("return", "create_async_context"), ("return", "set_async_notify_callback"),
             ("call", "acquire_credentials_handle_async"), ("complete", "complete"),
             ("callback", "acquire_credentials_handle_async"), ("status", "get_async_call_status"),
             ("call", "free_async_context")]
    for event in trace:
        assert (event.kind, event.op) == cycle[(event.seq - 1) % 7]
        assert event.ctx == f"actx{(event.seq - 1) // 7 + 1}"
        if event.kind in ("callback", "status"):
            assert event.status == st.SEC_E_OK
    assert all(b.t >= a.t for a, b in itertools.pairwise(trace))


def test_long_runs_leave_the_garbage_collector_idle() -> None:
    """With a trace limit the monitor frees old events and freed contexts as it makes new ones,
    so the collector's count of new containers does not build up (it used to trigger a collection
    every couple of hundred round trips)."""
    monitor = ContractMonitor(SimulatorAdapter(completion="deferred"), trace_limit=2000)
    assert monitor.control is not None
    complete = monitor.control.complete
    outputs = CallOutputs()

    def trips(n: int) -> None:  # acquire a credential, then free it (the simulator keeps nothing)
        for _ in range(n):
            for queue in (lambda ctx: monitor.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, outputs),
                          lambda ctx: monitor.free_credentials_handle_async(ctx, outputs.credential)):
                ctx = monitor.create_async_context()
                monitor.set_async_notify_callback(ctx, _noop, None)
                queue(ctx)
                complete(ctx)
                monitor.get_async_call_status(ctx)
                monitor.free_async_context(ctx)

    trips(1500)  # fills the trace and the freed-context memory
    gc.collect()
    before = gc.get_stats()[0]["collections"]
    trips(2500)
    assert gc.get_stats()[0]["collections"] - before <= 3
    assert not monitor.implementation_violations()


def test_freed_contexts_are_remembered_for_a_thousand_frees() -> None:
    monitor = ContractMonitor(SimulatorAdapter(completion="deferred"))
    first = monitor.create_async_context()
    monitor.free_async_context(first)
    for _ in range(1023):
        monitor.free_async_context(monitor.create_async_context())
    monitor.free_async_context(first)  # still known: a double free of actx1
    for _ in range(2 * 1024):
        monitor.free_async_context(monitor.create_async_context())
    monitor.free_async_context(first)  # forgotten by now: just not an async context
    messages = [v.message for v in monitor.violations() if v.seq is not None]
    assert len(messages) == 2
    assert "double free" in messages[0] and "actx1" in messages[0]
    assert "not an async context" in messages[1]


def test_hot_paths_follow_the_table() -> None:
    """The hot paths take a few rules of adapters/async_state.TABLE for granted (the differential
    test above shows they judge alike today); this pins those rules, so that a change to the
    table cannot leave them behind."""
    idle, pending, completed, freed = State.IDLE, State.PENDING_NOTIFY, State.COMPLETED, State.FREED

    def plain(rule: Rule, next_state: State) -> bool:
        return rule.accept and rule.next is next_state and rule.requirement is None

    assert plain(TABLE[idle, Event.SET_CALLBACK], idle) and plain(TABLE[completed, Event.SET_CALLBACK], completed)
    assert plain(TABLE[idle, Event.QUEUE], pending)
    assert plain(TABLE[pending, Event.COMPLETE], completed)
    assert plain(TABLE[completed, Event.READ], completed)
    assert plain(TABLE[idle, Event.FREE], freed) and plain(TABLE[completed, Event.FREE], freed)
    assert not TABLE[pending, Event.SET_CALLBACK].accept  # (the hot path of register skips pending)
    assert TABLE[pending, Event.FREE].requirement == "FREE-3"  # (the hot path of free skips pending)


# ---- the scenario runner's pattern on the hot paths: inline callbacks, reinit, reuse ------------------

# What the callback of _runner_pattern does besides reading the status (as the runner's does),
# each one sending the context down another path.
_IN_CALLBACK = ("plain", "read", "count", "reinit", "register", "free", "requires", "queue")


def _runner_pattern(monitor: ContractMonitor, in_callback: str) -> list[Any]:
    """The scenario runner's usual run (create, name, register, queue, callback, reinit, reuse,
    free), with several calls on one context and reinits of completed and idle contexts, whatever
    the callback does (see _IN_CALLBACK).  Returns what the calls returned, in order, so that two
    monitors can be compared; an exception from a call (a mutant may raise) is recorded too."""
    control = monitor.control
    assert control is not None
    deferred = control.mode == "deferred"
    inner = monitor.inner
    seen: list[Any] = []
    out = CallOutputs()
    callbacks = 0

    def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:  # what an implementation may do: recorded, then carry on
            result = type(exc).__name__
        seen.append(result)
        return result

    def callback(actx: Any, data: Any) -> None:
        nonlocal callbacks
        callbacks += 1
        seen.append(("callback", data, call(inner.get_async_call_status, actx)))
        if in_callback == "read":
            call(monitor.get_async_call_status, actx)
        elif in_callback == "count":
            call(monitor.callback_count, actx)
        elif in_callback == "reinit":
            call(monitor.reinit_async_context, actx)
        elif in_callback == "register":
            call(monitor.set_async_notify_callback, actx, callback, f"again{callbacks}")
        elif in_callback == "free" and callbacks == 3:
            call(monitor.free_async_context, actx)
        elif in_callback == "requires":
            call(monitor.async_context_requires_notify, actx)
        elif in_callback == "queue" and callbacks == 1:
            call(monitor.reinit_async_context, actx)
            call(monitor.free_credentials_handle_async, actx, out.credential)

    def queued(result: Any, ctx: Any) -> None:
        if deferred and result == st.SEC_E_OK:
            call(control.complete, ctx)

    ctx = monitor.create_async_context()
    monitor.name(ctx, "a1")
    call(monitor.set_async_notify_callback, ctx, callback, "a1")
    for _ in range(2):
        queued(call(monitor.acquire_credentials_handle_async, ctx, None, "Sim", OUT,
                    {"user": "alice", "password": "secret"}, out), ctx)
        call(monitor.get_async_call_status, ctx)
        call(monitor.callback_count, ctx)
        call(monitor.reinit_async_context, ctx)
        call(monitor.reinit_async_context, ctx)  # (idle: also a hot path)
        isc = CallOutputs(output=[SecBuffer(SECBUFFER_TOKEN, b"", 0)])
        queued(call(monitor.initialize_security_context_async, ctx, out.credential, None, "server.test",
                    ISC_REQ["ALLOCATE_MEMORY"], None, isc), ctx)
        call(monitor.reinit_async_context, ctx)
        if isc.new_context is not None:
            queued(call(monitor.delete_security_context_async, ctx, isc.new_context), ctx)
            call(monitor.reinit_async_context, ctx)
        queued(call(monitor.free_credentials_handle_async, ctx, out.credential), ctx)
        call(monitor.get_async_call_status, ctx)
        call(monitor.reinit_async_context, ctx)
        call(monitor.set_async_notify_callback, ctx, callback, "a1-next")  # (after a reinit)
    call(monitor.callback_count, ctx)
    call(monitor.async_context_requires_notify, ctx)
    call(monitor.free_async_context, ctx)
    call(monitor.callback_count, ctx)
    monitor.finish(0.0)
    return seen


@pytest.mark.parametrize("mode", ["deferred", "inline"])
@pytest.mark.parametrize("mutant", [None, *sorted(MUTANTS)])
def test_the_runner_pattern_is_judged_exactly_as_on_the_general_paths(mode: str, mutant: str | None) -> None:
    """Inline callbacks, reinits of completed and idle contexts, reuse after reinit and frees after
    reinit take hot paths; on the reference simulator and on every faulty one, whatever the callback
    does, they give the same results, violations and trace as the general paths."""
    for in_callback in _IN_CALLBACK:
        runs = []
        for cls in (ContractMonitor, _GeneralOnly):
            sim = create_simulator({"completion": mode} | ({"mutant": mutant} if mutant else {}))
            monitor = cls(sim)
            try:
                seen = _runner_pattern(monitor, in_callback)
            finally:
                sim.close()
            runs.append(([_normal(repr(item)) for item in seen], *_observed(monitor)))
        assert runs[0] == runs[1], in_callback


class _HotOnly(ContractMonitor):
    """Fails if a general path judges anything (the usual case must not need one)."""

    def _general(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a general path ran")

    _judge_queue = _fire_general = _on_callback = _judge_reinit = _judge_registration = _general
    _free_general = _status_slow = _create_slow = _completed_by_control = _general


@pytest.mark.parametrize("mode", ["deferred", "inline"])
def test_the_runner_pattern_takes_only_hot_paths(mode: str) -> None:
    """On a correct implementation the scenario runner's run never needs a general path (so the
    test above compares the hot paths with the general ones, not the general paths with
    themselves), and the context stays usual until freed."""
    monitor = _HotOnly(SimulatorAdapter(completion=mode))
    control = monitor.control
    assert control is not None
    statuses: list[int] = []
    ctx = monitor.create_async_context()
    monitor.name(ctx, "a1")

    def callback(actx: Any, data: Any) -> None:
        statuses.append(monitor.inner.get_async_call_status(actx))
        statuses.append(monitor.get_async_call_status(actx))  # (the final status, read again)

    assert monitor.set_async_notify_callback(ctx, callback, "a1") == st.SEC_E_OK
    out = CallOutputs()
    for i in range(3):
        assert monitor.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, out) == st.SEC_E_OK
        if mode == "deferred":
            assert control.complete(ctx)
        assert monitor.get_async_call_status(ctx) == st.SEC_E_OK
        assert st.nt_success(monitor.reinit_async_context(ctx))
        assert monitor.set_async_notify_callback(ctx, callback, f"a1-{i}") == st.SEC_E_OK
        assert monitor.free_credentials_handle_async(ctx, out.credential) == st.SEC_E_OK
        if mode == "deferred":
            assert control.complete(ctx)
        assert st.nt_success(monitor.reinit_async_context(ctx))
        assert st.nt_success(monitor.reinit_async_context(ctx))
        assert monitor.callback_count(ctx) == 2 * (i + 1)
    shadow = monitor._peek(ctx)
    assert shadow is not None and shadow.usual
    monitor.free_async_context(ctx)
    monitor.finish(0.0)
    assert statuses == [st.SEC_E_OK] * 12
    assert monitor.callback_count(ctx) == 6
    assert monitor.violations() == []
    kinds = [(e.kind, e.op) for e in monitor.trace if e.op == "acquire_credentials_handle_async"]
    queue = [("call", "acquire_credentials_handle_async"), ("callback", "acquire_credentials_handle_async")]
    assert kinds == ([*queue, ("return", "acquire_credentials_handle_async")] if mode == "inline" else queue) * 3
    assert sum(1 for e in monitor.trace if (e.kind, e.op) == ("return", "reinit_async_context")) == 9


# Call record fields compared between the hot and the general paths: the bookkeeping up to the
# returned status (not the outputs object, one per run, nor the trace fields the hot paths leave
# out: time, thread and the status kept for the callback's event).
_STATE_FIELDS = [i for i in range(13) if i != 1]


def _state(sh: _Shadow) -> dict[str, Any]:
    def record(call: Any) -> Any:
        return None if call is None else [call[i] for i in _STATE_FIELDS]

    # (the callbacks are the same function in both runs only in some tests: their data is compared)
    fields = {name: getattr(sh, name) for name in _Shadow.__slots__
              if name not in ("handle", "mon", "call", "tentative", "older", "reg", "user")}
    fields.update(call=record(sh.call), tentative=record(sh.tentative), older=[record(c) for c in sh.older],
                  reg=None if sh.reg is None else (sh.reg[1], sh.reg[3]), user=sh.user is not None)
    return fields


def _round_trips(monitor: ContractMonitor, callback: Any) -> list[Any]:
    """Two round trips with reinits in between, one step per item (see the test below)."""
    control = monitor.control
    assert control is not None
    out = CallOutputs()
    ctx = monitor.create_async_context()
    complete = (lambda: control.complete(ctx)) if control.mode == "deferred" else (lambda: None)
    return [
        ctx,
        lambda: monitor.set_async_notify_callback(ctx, callback, "one"),
        lambda: monitor.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, out),
        complete,
        lambda: monitor.reinit_async_context(ctx),
        lambda: monitor.reinit_async_context(ctx),
        lambda: monitor.free_credentials_handle_async(ctx, out.credential),
        complete,
        lambda: monitor.reinit_async_context(ctx),
        lambda: monitor.set_async_notify_callback(ctx, callback, "two"),
    ]


@pytest.mark.parametrize("mode", ["deferred", "inline"])
@pytest.mark.parametrize("stop", range(10))
def test_leaving_the_usual_case_after_reinits_gives_the_general_paths_shadow(mode: str, stop: int) -> None:
    """Wherever a usual context leaves the hot paths (here after the first ``stop`` steps of two
    round trips with reinits), leave_usual gives every field the value the general paths gave it:
    the callbacks of calls before a reinit counted, the registration kept across reinits with
    reinit_since_reg set, and cleared by a new registration."""
    shadows = []
    for cls in (ContractMonitor, _GeneralOnly):
        monitor = cls(SimulatorAdapter(completion=mode))
        ctx, *steps = _round_trips(monitor, _noop)
        for step in steps[:stop]:
            step()
        sh = monitor._peek(ctx)
        assert sh is not None and sh.usual == (cls is ContractMonitor)
        if cls is ContractMonitor:
            assert monitor.callback_count(ctx) == sh.callback_count()
        sh.leave_usual()
        shadows.append(_state(sh))
    assert shadows[0] == shadows[1]
    callbacks = [0, 0, 1, 1, 1, 1, 2, 2, 2, 2] if mode == "inline" else [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    assert shadows[0]["callbacks"] == callbacks[stop]
    assert shadows[0]["reinit_since_reg"] == (stop in (4, 5, 6, 7, 8))


@pytest.mark.parametrize("mode", ["deferred", "inline"])
@pytest.mark.parametrize("at", [1, 2])
def test_leaving_the_usual_case_inside_a_callback_gives_the_general_paths_shadow(mode: str, at: int) -> None:
    """The same inside the callback of the ``at``-th call: in inline mode the call is still being
    queued there (completed, its record still tentative)."""
    shadows = []
    for cls in (ContractMonitor, _GeneralOnly):
        monitor = cls(SimulatorAdapter(completion=mode))
        seen: list[dict[str, Any]] = []

        def callback(actx: Any, data: Any, monitor: ContractMonitor = monitor, seen: list[Any] = seen) -> None:
            sh = monitor._peek(actx)
            assert sh is not None
            if sh.callback_count() == at:
                assert sh.usual == (monitor.__class__ is ContractMonitor)
                sh.leave_usual()
                seen.append(_state(sh))

        ctx, *steps = _round_trips(monitor, callback)
        for step in steps:
            step()
        assert len(seen) == 1
        shadows.append(seen[0])
        shadows.append(_state(monitor._peek(ctx)))  # type: ignore[arg-type]  # (and what followed)
    assert shadows[0] == shadows[2] and shadows[1] == shadows[3]
    assert shadows[0]["in_callback"] is not None
    assert (shadows[0]["tentative"] is not None) == (mode == "inline")
