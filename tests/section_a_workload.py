"""A generic Section A workload: every common async-context flow, driven through an adapter.

The mutant catalogue is judged with this one workload rather than with a sequence tailored
to each bug, so that "the monitor catches mutant X" means "the monitor catches X in ordinary
use".  The flows only use the adapter interface (plus ``ContractMonitor.callback_count`` to
wait for callbacks in threaded mode) and tolerate refusals, so they run against any
implementation, correct or not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

from adapters import status as st
from adapters.api import CallOutputs, SecBuffer
from adapters.constants import (
    ASC_REQ,
    ISC_REQ,
    SECBUFFER_EMPTY,
    SECBUFFER_TOKEN,
    SECPKG_CRED_INBOUND,
    SECPKG_CRED_OUTBOUND,
)
from conformance.monitor import ContractMonitor

PENDING = st.SEC_I_ASYNC_CALL_PENDING

# Caller misuse the workload commits on purpose in deferred mode, by requirement.
DELIBERATE_MISUSE = frozenset(
    {"NOTIFY-4", "CTX-4", "OQ-9", "REINIT-4", "CTX-5", "FREE-3", "FREE-1", "REINIT-7", "CALL-20"}
)


class Data:
    """Callback data: a distinct object per registration so swaps are visible."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Data({self.name})"


class Driver:
    """Drives completions according to the adapter's completion mode."""

    def __init__(self, monitor: ContractMonitor, timeout_s: float = 0.5) -> None:
        self.m = monitor
        control = monitor.control
        self.mode = control.mode if control is not None else "threaded"
        self.timeout_s = timeout_s
        self.seen: list[tuple[Any, Any]] = []
        self.crashes: list[tuple[str, Exception]] = []

    def record(self, actx: Any, data: Any) -> None:
        self.seen.append((actx, data))

    def settle(self, ctx: Any, before: int, notified: bool = True) -> None:
        """Let the call queued on ``ctx`` complete (``before``: callbacks seen before queueing)."""
        control = self.m.control
        if self.mode == "deferred":
            assert control is not None
            control.complete(ctx)
            return
        if self.mode == "inline":
            return
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if notified and self.m.callback_count(ctx) > before:
                return
            if not notified and self.m.get_async_call_status(ctx) != PENDING:
                return
            time.sleep(0.0005)

    def queue(self, ctx: Any, submit: Callable[[], int], notified: bool = True) -> int:
        before = self.m.callback_count(ctx)
        result = submit()
        if result == st.SEC_E_OK:
            self.settle(ctx, before, notified)
        return result


def _acquire(m: ContractMonitor, d: Driver, ctx: Any, use: int, auth: dict[str, Any] | None = None,
             package: str = "Sim") -> CallOutputs:
    out = CallOutputs()
    d.queue(ctx, lambda: m.acquire_credentials_handle_async(ctx, None, package, use, auth, out))
    return out


def flow_basic(m: ContractMonitor, d: Driver) -> None:
    """create -> register -> ACH -> status -> reinit -> FreeCredentials (callback kept) -> free."""
    a = m.create_async_context()
    m.name(a, "basic")
    m.get_async_call_status(a)  # idle (OQ-1)
    m.set_async_notify_callback(a, d.record, Data("basic"))
    m.async_context_requires_notify(a)
    out = _acquire(m, d, a, SECPKG_CRED_OUTBOUND)
    m.get_async_call_status(a)
    m.get_async_call_status(a)
    m.reinit_async_context(a)
    m.get_async_call_status(a)  # idle again
    m.async_context_requires_notify(a)  # still registered (NOTIFY-7)
    if out.credential is not None:
        d.queue(a, lambda: m.free_credentials_handle_async(a, out.credential))
        m.get_async_call_status(a)
    m.free_async_context(a)


def flow_failure(m: ContractMonitor, d: Driver) -> None:
    """ACH with an unknown package: a documented failure, read twice (CALL-7, CTX-8)."""
    a = m.create_async_context()
    m.name(a, "failure")
    m.set_async_notify_callback(a, d.record, Data("failure"))
    _acquire(m, d, a, SECPKG_CRED_OUTBOUND, package="NoSuchPackage")
    m.get_async_call_status(a)
    m.get_async_call_status(a)
    m.free_async_context(a)


def flow_free_in_callback(m: ContractMonitor, d: Driver) -> None:
    """The sample's pattern: the callback frees its own context (FREE-6, OQ-3)."""
    a = m.create_async_context()
    m.name(a, "self-freeing")
    creds: list[Any] = []

    def done(actx: Any, data: Any) -> None:
        d.record(actx, data)
        m.free_async_context(actx)

    m.set_async_notify_callback(a, done, Data("self-freeing"))
    out = _acquire(m, d, a, SECPKG_CRED_OUTBOUND)
    creds.append(out.credential)
    b = m.create_async_context()
    m.name(b, "cleanup")
    m.set_async_notify_callback(b, d.record, Data("cleanup"))
    if out.credential is not None:
        d.queue(b, lambda: m.free_credentials_handle_async(b, out.credential))
    m.free_async_context(b)


def flow_handshake(m: ContractMonitor, d: Driver) -> None:
    """A Sim handshake (client ISC / server ASC legs with reinit between), then deletes."""
    c, s = m.create_async_context(), m.create_async_context()
    m.name(c, "client")
    m.name(s, "server")
    m.set_async_notify_callback(c, d.record, Data("client"))
    m.set_async_notify_callback(s, d.record, Data("server"))
    ccred = _acquire(m, d, c, SECPKG_CRED_OUTBOUND).credential
    m.reinit_async_context(c)
    scred = _acquire(m, d, s, SECPKG_CRED_INBOUND).credential
    m.reinit_async_context(s)
    cctx = sctx = None
    token = b""
    for _ in range(4):  # legs=2: ISC, ASC, ISC
        out = CallOutputs(output=[SecBuffer(SECBUFFER_TOKEN, b"", 0)])
        inp = [SecBuffer(SECBUFFER_TOKEN, token), SecBuffer(SECBUFFER_EMPTY)] if token else None
        d.queue(c, partial(m.initialize_security_context_async, c, ccred, cctx, "server.test",
                           ISC_REQ["ALLOCATE_MEMORY"], inp, out))
        status = m.get_async_call_status(c)
        m.reinit_async_context(c)
        cctx = out.new_context or cctx
        if status != st.SEC_I_CONTINUE_NEEDED or not out.output or not out.output[0].data:
            break
        token = out.output[0].data
        sout = CallOutputs(output=[SecBuffer(SECBUFFER_TOKEN, b"", 0)])
        sinp = [SecBuffer(SECBUFFER_TOKEN, token), SecBuffer(SECBUFFER_EMPTY)]
        d.queue(s, partial(m.accept_security_context_async, s, scred, sctx, sinp, ASC_REQ["ALLOCATE_MEMORY"],
                           sout))
        m.get_async_call_status(s)
        m.reinit_async_context(s)
        sctx = sout.new_context or sctx
        token = sout.output[0].data if sout.output else b""
        if not token:
            break
    # Client context: silent delete, status read after completion, then free (NOTIFY-3/5).
    if cctx is not None:
        m.set_async_notify_callback(c, None, None)
        m.async_context_requires_notify(c)
        d.queue(c, lambda: m.delete_security_context_async(c, cctx), notified=False)
        m.get_async_call_status(c)
        m.set_async_notify_callback(c, d.record, Data("client-2"))
        m.reinit_async_context(c)
    # Server context: delete with a callback.
    if sctx is not None:
        d.queue(s, lambda: m.delete_security_context_async(s, sctx))
        m.get_async_call_status(s)
        m.reinit_async_context(s)
    for actx, cred in ((c, ccred), (s, scred)):
        if cred is not None:
            d.queue(actx, partial(m.free_credentials_handle_async, actx, cred))
            m.reinit_async_context(actx)
    m.free_async_context(c)
    m.free_async_context(s)


def flow_silent_free(m: ContractMonitor, d: Driver) -> None:
    """Opt out of the delete notification and free right after queueing (FREE-5, FREE-7)."""
    a = m.create_async_context()
    m.name(a, "silent")
    out = CallOutputs(output=[SecBuffer(SECBUFFER_TOKEN, b"", 0)])
    m.set_async_notify_callback(a, d.record, Data("silent"))
    cred = _acquire(m, d, a, SECPKG_CRED_OUTBOUND).credential
    m.reinit_async_context(a)
    d.queue(a, lambda: m.initialize_security_context_async(a, cred, None, "server.test", 0x100, None, out))
    m.reinit_async_context(a)
    if out.new_context is not None:
        m.set_async_notify_callback(a, None, None)
        m.delete_security_context_async(a, out.new_context)
        m.free_async_context(a)  # delete still in flight: must be tolerated
        if d.mode == "deferred":
            assert m.control is not None
            m.control.complete_all()
    else:
        m.free_async_context(a)
    b = m.create_async_context()
    m.name(b, "silent-cleanup")
    m.set_async_notify_callback(b, d.record, Data("silent-cleanup"))
    if cred is not None:
        d.queue(b, lambda: m.free_credentials_handle_async(b, cred))
    m.free_async_context(b)


def flow_concurrent(m: ContractMonitor, d: Driver) -> None:
    """Three contexts in flight at once, completed in reverse order (deferred)."""
    ctxs = [m.create_async_context() for _ in range(3)]
    outs = [CallOutputs() for _ in ctxs]
    for i, ctx in enumerate(ctxs):
        m.name(ctx, f"many{i}")
        m.set_async_notify_callback(ctx, d.record, Data(f"many{i}"))
    befores = [m.callback_count(ctx) for ctx in ctxs]
    for ctx, out in zip(ctxs, outs, strict=True):
        m.acquire_credentials_handle_async(ctx, None, "Sim", SECPKG_CRED_OUTBOUND, None, out)
    for ctx, before in reversed(list(zip(ctxs, befores, strict=True))):
        d.settle(ctx, before)
        for other in ctxs:  # the others are still pending (deferred) or done
            m.get_async_call_status(other)
    for ctx, out in zip(ctxs, outs, strict=True):
        m.reinit_async_context(ctx)
        if out.credential is not None:
            d.queue(ctx, partial(m.free_credentials_handle_async, ctx, out.credential))
        m.free_async_context(ctx)


def flow_queue_failure(m: ContractMonitor, d: Driver) -> None:
    """A queue call that fails (injected out-of-memory): no callback, context reusable (OQ-5)."""
    control = m.control
    if control is None or "fault-injection" not in m.capabilities().features:
        return
    a = m.create_async_context()
    m.name(a, "oom")
    m.set_async_notify_callback(a, d.record, Data("oom"))
    m.get_async_call_status(a)
    control.inject_fault("queue-oom")
    out = CallOutputs()
    m.acquire_credentials_handle_async(a, None, "Sim", SECPKG_CRED_OUTBOUND, None, out)
    m.get_async_call_status(a)
    if d.mode == "deferred":
        control.complete_all()
    m.free_async_context(a)


def flow_misuse(m: ContractMonitor, d: Driver) -> None:
    """Caller misuse the implementation must refuse or tolerate (deferred mode only: the
    pending-state cases need the call to stay pending)."""
    if d.mode != "deferred":
        return
    control = m.control
    assert control is not None
    out = CallOutputs()
    a = m.create_async_context()
    m.name(a, "misuse")
    m.acquire_credentials_handle_async(a, None, "Sim", SECPKG_CRED_OUTBOUND, None, out)  # no callback
    m.set_async_notify_callback(a, d.record, Data("misuse"))
    m.async_context_requires_notify(a)
    m.acquire_credentials_handle_async(a, None, "Sim", SECPKG_CRED_OUTBOUND, None, out)
    m.get_async_call_status(a)  # PENDING
    m.acquire_credentials_handle_async(a, None, "Sim", SECPKG_CRED_OUTBOUND, None, out)  # CTX-4
    m.set_async_notify_callback(a, d.record, Data("misuse-2"))  # OQ-9
    m.reinit_async_context(a)  # REINIT-4
    m.async_context_requires_notify(a)
    control.complete(a)
    m.get_async_call_status(a)
    cred = out.credential
    if cred is not None:  # reuse without reinit (CTX-5)
        m.free_credentials_handle_async(a, cred)
        m.get_async_call_status(a)  # PENDING again
        control.complete(a)
        m.get_async_call_status(a)
    m.free_async_context(a)
    m.free_async_context(a)  # double free (FREE-1)
    m.get_async_call_status(a)  # use after free (FREE-1)
    m.free_async_context(None)  # FREE-2: a no-op
    m.reinit_async_context(None)  # REINIT-7

    b = m.create_async_context()  # freed while its notified call is pending (FREE-3, OQ-12)
    m.name(b, "abandoned")
    m.set_async_notify_callback(b, d.record, Data("abandoned"))
    out2 = CallOutputs()
    m.acquire_credentials_handle_async(b, None, "Sim", SECPKG_CRED_OUTBOUND, None, out2)
    m.free_async_context(b)
    m.free_async_context(b)  # and freed again while its destruction is deferred (FREE-1)
    control.complete_all()

    c = m.create_async_context()  # CALL-20: reserved parameters
    m.name(c, "reserved")
    m.set_async_notify_callback(c, d.record, Data("reserved"))
    m.initialize_security_context_async(c, None, None, "x", 0, None, CallOutputs(), reserved1=1)
    m.free_async_context(c)


def flow_chained(m: ContractMonitor, d: Driver) -> None:
    """The handshake-loop pattern: the callback reinitialises and queues the next call on its own
    context, and the last callback frees it (OQ-11, CALL-5, FREE-6)."""
    a = m.create_async_context()
    m.name(a, "chained")
    out = CallOutputs()
    steps: list[int] = []

    def next_step(actx: Any, data: Any) -> None:
        d.record(actx, data)
        steps.append(m.get_async_call_status(actx))
        if len(steps) == 1 and out.credential is not None:
            m.reinit_async_context(actx)
            if m.free_credentials_handle_async(actx, out.credential) == st.SEC_E_OK:
                return
        m.free_async_context(actx)

    m.set_async_notify_callback(a, next_step, Data("chained"))
    if m.acquire_credentials_handle_async(a, None, "Sim", SECPKG_CRED_OUTBOUND, None, out) != st.SEC_E_OK:
        m.free_async_context(a)
        return
    if d.mode == "deferred":
        assert m.control is not None
        m.control.complete_all()  # completes the chained call in the same sweep
    elif d.mode == "threaded":
        deadline = time.monotonic() + d.timeout_s
        while len(steps) < 2 and time.monotonic() < deadline:
            time.sleep(0.0005)


def flow_reinit_in_callback(m: ContractMonitor, d: Driver) -> None:
    """The completion handler reinitialises the context; the next call is queued later, from the
    caller's loop, relying on the registration kept by the reinit (NOTIFY-7, REINIT-2)."""
    a = m.create_async_context()
    m.name(a, "reinit-in-callback")

    def done(actx: Any, data: Any) -> None:
        d.record(actx, data)
        m.reinit_async_context(actx)

    m.set_async_notify_callback(a, done, Data("reinit-in-callback"))
    m.async_context_requires_notify(a)
    out = _acquire(m, d, a, SECPKG_CRED_OUTBOUND)
    m.async_context_requires_notify(a)
    if out.credential is not None:
        d.queue(a, lambda: m.free_credentials_handle_async(a, out.credential))
    m.free_async_context(a)


def flow_reregister(m: ContractMonitor, d: Driver) -> None:
    """Reinit, then register new data before the next call: the new data must arrive (REINIT-6)."""
    a = m.create_async_context()
    m.name(a, "reregister")
    m.set_async_notify_callback(a, d.record, Data("first"))
    out = _acquire(m, d, a, SECPKG_CRED_OUTBOUND)
    m.reinit_async_context(a)
    m.set_async_notify_callback(a, d.record, Data("second"))
    if out.credential is not None:
        d.queue(a, lambda: m.free_credentials_handle_async(a, out.credential))
    m.free_async_context(a)


def flow_mode_switch(m: ContractMonitor, d: Driver) -> None:
    """A call left waiting in deferred mode survives switching modes and back."""
    control = m.control
    if control is None or d.mode == "threaded":
        return
    a, b = m.create_async_context(), m.create_async_context()
    m.name(a, "switch-a")
    m.name(b, "switch-b")
    m.set_async_notify_callback(a, d.record, Data("switch-a"))
    m.set_async_notify_callback(b, d.record, Data("switch-b"))
    outs = [CallOutputs(), CallOutputs()]
    control.set_mode("deferred")
    m.acquire_credentials_handle_async(a, None, "Sim", SECPKG_CRED_OUTBOUND, None, outs[0])
    control.set_mode("inline")
    m.acquire_credentials_handle_async(b, None, "Sim", SECPKG_CRED_OUTBOUND, None, outs[1])
    control.set_mode("deferred")
    control.complete_all()
    control.set_mode(d.mode)
    for ctx, out in ((a, outs[0]), (b, outs[1])):
        m.get_async_call_status(ctx)
        m.reinit_async_context(ctx)
        if out.credential is not None:
            d.queue(ctx, partial(m.free_credentials_handle_async, ctx, out.credential))
        m.free_async_context(ctx)


FLOWS: tuple[Callable[[ContractMonitor, Driver], None], ...] = (
    flow_basic,
    flow_failure,
    flow_free_in_callback,
    flow_handshake,
    flow_silent_free,
    flow_concurrent,
    flow_queue_failure,
    flow_chained,
    flow_reinit_in_callback,
    flow_reregister,
    flow_mode_switch,
    flow_misuse,
)


def run_workload(monitor: ContractMonitor, settle_s: float = 0.2) -> Driver:
    """Run every flow through ``monitor`` and finish it (lost-callback checks).

    An exception from the implementation ends that flow only (a harness would report a crash);
    they are kept in ``driver.crashes``.
    """
    driver = Driver(monitor)
    for flow in FLOWS:
        try:
            flow(monitor, driver)
        except Exception as exc:
            driver.crashes.append((flow.__name__, exc))
    monitor.finish(settle_s)
    return driver


def implementation_ids(monitor: ContractMonitor) -> set[str]:
    return {v.requirement for v in monitor.violations() if v.party == "implementation"}
