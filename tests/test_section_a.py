"""Section A of the contract, one test per requirement ID, against the reference simulator.

Each test names its requirement.  Some requirements are documentation facts or defects;
for those the test checks what our code makes of them (constants, accepted inputs).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from adapters import status as st
from adapters.api import CallOutputs, SecBuffer
from adapters.async_state import COMPLETION_STATUSES
from adapters.constants import (
    ASC_REQ,
    ASC_RET,
    ISC_REQ,
    ISC_RET,
    SECBUFFER_EMPTY,
    SECBUFFER_EXTRA,
    SECBUFFER_MISSING,
    SECBUFFER_TOKEN,
    SECPKG_CRED_INBOUND,
    SECPKG_CRED_OUTBOUND,
)
from adapters.simulator.adapter import SimulatorAdapter
from conformance.monitor import ContractMonitor

OK, PENDING, INVALID = st.SEC_E_OK, st.SEC_I_ASYNC_CALL_PENDING, st.SEC_E_INVALID_PARAMETER
IN, OUT = SECPKG_CRED_INBOUND, SECPKG_CRED_OUTBOUND
ALLOC_I, ALLOC_A = ISC_REQ["ALLOCATE_MEMORY"], ASC_REQ["ALLOCATE_MEMORY"]


class H:
    """A deferred simulator with helpers; every callback records the status it can read."""

    def __init__(self, mode: str = "deferred") -> None:
        self.sim = SimulatorAdapter(completion=mode)
        self.seen: list[tuple[Any, Any, int]] = []

    def cb(self, actx: Any, data: Any) -> None:
        self.seen.append((actx, data, self.sim.get_async_call_status(actx)))

    def ctx(self, data: Any = None, callback: bool = True) -> Any:
        ctx = self.sim.create_async_context()
        if callback:
            assert self.sim.set_async_notify_callback(ctx, self.cb, data) == OK
        return ctx

    def run(self, ctx: Any, submit: Callable[[], int]) -> int:
        """Queue, complete, read the completion status; reinit so the context can be reused."""
        assert submit() == OK
        self.sim.control.complete(ctx)
        status = self.sim.get_async_call_status(ctx)
        assert st.nt_success(self.sim.reinit_async_context(ctx))
        return status

    def ach(self, use: int = OUT, auth: Any = None, package: str = "Sim", principal: str | None = None,
            ctx: Any = None) -> tuple[int, CallOutputs]:
        ctx = ctx if ctx is not None else self.ctx()
        out = CallOutputs()
        status = self.run(ctx, lambda: self.sim.acquire_credentials_handle_async(ctx, principal, package, use, auth,
                                                                                 out))
        return status, out

    def isc(self, cred: Any, context: Any, token: bytes | None, *, target: str = "server.test", req: int = ALLOC_I,
            ctx: Any = None, out_size: int = 0) -> tuple[int, CallOutputs, list[SecBuffer] | None]:
        ctx = ctx if ctx is not None else self.ctx()
        inp = [SecBuffer(SECBUFFER_TOKEN, token), SecBuffer(SECBUFFER_EMPTY)] if token is not None else None
        out = CallOutputs(output=[SecBuffer(SECBUFFER_TOKEN, b"", out_size)])
        status = self.run(ctx, lambda: self.sim.initialize_security_context_async(
            ctx, cred, context, target, req, inp, out))
        return status, out, inp

    def asc(self, cred: Any, context: Any, token: bytes, *, req: int = ALLOC_A,
            ctx: Any = None) -> tuple[int, CallOutputs, list[SecBuffer]]:
        ctx = ctx if ctx is not None else self.ctx()
        inp = [SecBuffer(SECBUFFER_TOKEN, token), SecBuffer(SECBUFFER_EMPTY)]
        out = CallOutputs(output=[SecBuffer(SECBUFFER_TOKEN, b"", 0)])
        status = self.run(ctx, lambda: self.sim.accept_security_context_async(ctx, cred, context, inp, req, out))
        return status, out, inp

    def creds(self, client: Any = None, server: Any = None) -> tuple[Any, Any]:
        c_status, c_out = self.ach(OUT, client)
        s_status, s_out = self.ach(IN, server)
        assert c_status == OK and s_status == OK
        return c_out.credential, s_out.credential

    def delete(self, context: Any) -> int:
        ctx = self.ctx()
        return self.run(ctx, lambda: self.sim.delete_security_context_async(ctx, context))

    def caller(self) -> set[str]:
        return {v.requirement for v in self.sim.diagnostics() if v.party == "caller"}


def _token(out: CallOutputs) -> bytes:
    assert out.output is not None
    return out.output[0].data


@pytest.fixture
def h() -> H:
    return H()


def _handshake(h: H, client: Any = None, server: Any = None) -> tuple[list[int], Any, Any, Any, Any]:
    ccred, scred = h.creds(client, server)
    statuses = []
    s1, o1, _ = h.isc(ccred, None, None)
    statuses.append(s1)
    cctx = o1.new_context
    s2, o2, _ = h.asc(scred, None, _token(o1))
    statuses.append(s2)
    sctx = o2.new_context
    if s2 in (OK, st.SEC_I_CONTINUE_NEEDED) and _token(o2):
        s3, o3, _ = h.isc(ccred, cctx, _token(o2))
        statuses.append(s3)
        if s3 in (OK, st.SEC_I_CONTINUE_NEEDED) and _token(o3):  # the client sent the last leg
            s4, _o4, _ = h.asc(scred, sctx, _token(o3))
            statuses.append(s4)
    return statuses, cctx, sctx, ccred, scred


# ---- A.2 async context object (CTX) --------------------------------------------------------------------


def test_ctx_1_create_returns_new_initialised_contexts(h: H) -> None:
    """CTX-1: create returns new initialised contexts."""
    a, b = h.sim.create_async_context(), h.sim.create_async_context()
    assert a is not None and b is not None and a is not b and a != b
    assert h.sim.get_async_call_status(a) == OK and not h.sim.async_context_requires_notify(a)


def test_ctx_2_null_return_means_out_of_memory(h: H) -> None:
    """CTX-2: null return means out of memory."""
    h.sim.control.inject_fault("create-oom")
    assert h.sim.create_async_context() is None
    assert h.sim.create_async_context() is not None  # one-shot


def test_ctx_3_handles_are_opaque_and_cannot_be_forged(h: H) -> None:
    """CTX-3: handles are opaque and cannot be forged."""
    real = h.ctx()
    assert not hasattr(real, "__dict__")  # no layout to poke at
    assert {real: 1}[real] == 1  # hashable, usable as a key
    forged = object()
    assert h.sim.acquire_credentials_handle_async(forged, None, "Sim", OUT, None, CallOutputs()) == INVALID
    assert "CALL-2" in h.caller()


def test_ctx_4_one_context_tracks_one_operation(h: H) -> None:
    """CTX-4: one context tracks one operation."""
    ctx = h.ctx()
    assert h.sim.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, CallOutputs()) == OK
    assert h.sim.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, CallOutputs()) == INVALID
    assert "CTX-4" in h.caller()
    h.sim.control.complete_all()
    assert len(h.seen) == 1


def test_ctx_5_reuse_needs_reinit(h: H) -> None:
    """CTX-5: reuse needs reinit."""
    ctx = h.ctx()
    out = CallOutputs()
    assert h.sim.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, out) == OK
    h.sim.control.complete(ctx)
    assert h.sim.free_credentials_handle_async(ctx, out.credential) == OK  # accepted (OQ-7) ...
    assert "CTX-5" in h.caller()  # ... but diagnosed
    h.sim.control.complete(ctx)
    h.sim.reinit_async_context(ctx)
    h.ach(ctx=ctx)
    assert "CTX-5" not in h.caller()


def test_ctx_6_unreleased_contexts_are_reported_at_close(h: H) -> None:
    """CTX-6: unreleased contexts are reported at close."""
    h.ctx()
    freed = h.ctx()
    h.sim.free_async_context(freed)
    h.sim.close()
    leaks = [v for v in h.sim.diagnostics() if v.requirement == "CTX-6"]
    assert len(leaks) == 1 and leaks[0].party == "caller"


def test_ctx_7_status_pending_until_completion(h: H) -> None:
    """CTX-7: status pending until completion."""
    ctx = h.ctx()
    h.sim.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, CallOutputs())
    assert h.sim.get_async_call_status(ctx) == PENDING
    assert h.sim.get_async_call_status(ctx) == PENDING
    h.sim.control.complete(ctx)
    assert h.sim.get_async_call_status(ctx) != PENDING


def test_ctx_8_status_after_completion_is_the_operation_result(h: H) -> None:
    """CTX-8: status after completion is the operation result."""
    assert h.ach()[0] == OK
    ctx = h.ctx()
    h.sim.acquire_credentials_handle_async(ctx, None, "NoSuchPackage", OUT, None, CallOutputs())
    h.sim.control.complete(ctx)
    assert [h.sim.get_async_call_status(ctx) for _ in range(3)] == [st.SEC_E_SECPKG_NOT_FOUND] * 3


def test_ctx_9_requires_notify_is_a_boolean(h: H) -> None:
    """CTX-9: requires notify is a boolean."""
    with_cb, without = h.ctx(), h.ctx(callback=False)
    assert h.sim.async_context_requires_notify(with_cb) is True
    assert h.sim.async_context_requires_notify(without) is False


def test_ctx_10_callback_gets_the_queued_context(h: H) -> None:
    """CTX-10: callback gets the queued context."""
    ctxs = [h.ctx(i) for i in range(3)]
    for ctx in ctxs:
        h.sim.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, CallOutputs())
    h.sim.control.complete_all()
    assert [(a, d) for a, d, _ in h.seen] == [(c, i) for i, c in enumerate(ctxs)]


# ---- A.3 notification callback (NOTIFY) -----------------------------------------------------------------


def test_notify_1_callback_signature_and_raising_callbacks() -> None:
    """NOTIFY-1: callback signature and raising callbacks."""
    sim = SimulatorAdapter(completion="threaded", max_delay_ms=0.0)
    got: list[tuple[Any, Any]] = []

    def bad(actx: Any, data: Any) -> None:
        got.append((actx, data))
        raise RuntimeError("caller bug")

    ctx = sim.create_async_context()
    sim.set_async_notify_callback(ctx, bad, "d")
    sim.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, CallOutputs())
    deadline = time.monotonic() + 2
    while not got and time.monotonic() < deadline:
        time.sleep(0.001)
    assert got == [(ctx, "d")]
    # the worker survived: a second call still completes
    sim.reinit_async_context(ctx)
    sim.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, CallOutputs())
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert len(got) == 2
    sim.close()
    assert "NOTIFY-1" in {v.requirement for v in sim.diagnostics()}


def test_notify_2_callback_data_delivered_unchanged(h: H) -> None:
    """NOTIFY-2: callback data delivered unchanged."""
    data = object()
    ctx = h.ctx(data)
    h.ach(ctx=ctx)
    assert h.seen[0][1] is data


def test_notify_3_null_callback_and_data_accepted(h: H) -> None:
    """NOTIFY-3: null callback and data accepted."""
    ctx = h.ctx()
    assert h.sim.set_async_notify_callback(ctx, None, None) == OK
    assert h.sim.async_context_requires_notify(ctx) is False


def test_notify_4_only_delete_may_run_without_callback(h: H) -> None:
    """NOTIFY-4: only delete may run without callback."""
    ctx = h.ctx(callback=False)
    assert h.sim.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, CallOutputs()) == INVALID
    assert h.sim.free_credentials_handle_async(ctx, None) == INVALID
    assert "NOTIFY-4" in h.caller()
    assert h.sim.get_async_call_status(ctx) == OK  # nothing changed
    assert h.sim.delete_security_context_async(ctx, None) == OK


def test_notify_5_opting_out_of_the_delete_notification(h: H) -> None:
    """NOTIFY-5: opting out of the delete notification."""
    _, cctx, _sctx, _, _ = _handshake(h)
    seen_before = len(h.seen)
    ctx = h.ctx("opt-out")
    assert h.sim.set_async_notify_callback(ctx, None, None) == OK
    assert h.sim.delete_security_context_async(ctx, cctx) == OK
    h.sim.control.complete(ctx)
    assert len(h.seen) == seen_before  # no callback
    assert h.sim.get_async_call_status(ctx) == OK


def test_notify_6_typical_flow_through_the_monitor() -> None:
    """NOTIFY-6: typical flow through the monitor."""
    monitor = ContractMonitor(SimulatorAdapter(completion="deferred"))
    results: list[int] = []
    ctx = monitor.create_async_context()
    assert monitor.set_async_notify_callback(ctx, lambda a, d: results.append(monitor.get_async_call_status(a)),
                                             None) == OK
    assert monitor.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, CallOutputs()) == OK
    assert monitor.control is not None
    monitor.control.complete(ctx)
    monitor.free_async_context(ctx)
    monitor.finish()
    assert results == [OK] and monitor.violations() == []


def test_notify_7_callback_survives_reinit(h: H) -> None:
    """NOTIFY-7: callback survives reinit."""
    data = object()
    ctx = h.ctx(data)
    _, out = h.ach(ctx=ctx)  # h.run reinitialises
    assert h.sim.async_context_requires_notify(ctx)
    h.run(ctx, lambda: h.sim.free_credentials_handle_async(ctx, out.credential))
    assert [d for _, d, _ in h.seen] == [data, data]


@pytest.mark.parametrize("mode", ["inline", "deferred", "threaded"])
def test_notify_8_status_is_final_inside_the_callback(mode: str) -> None:
    """NOTIFY-8: status is final inside the callback."""
    h = H(mode)
    ctx = h.ctx()
    h.sim.acquire_credentials_handle_async(ctx, None, "NoSuchPackage", OUT, None, CallOutputs())
    h.sim.control.complete_all()
    h.sim._scheduler.drain(2.0)
    deadline = time.monotonic() + 2
    while not h.seen and time.monotonic() < deadline:
        time.sleep(0.001)
    assert [s for _, _, s in h.seen] == [st.SEC_E_SECPKG_NOT_FOUND]
    h.sim.close()


def test_notify_9_set_callback_status_values(h: H) -> None:
    """NOTIFY-9: set callback status values."""
    ctx = h.sim.create_async_context()
    assert h.sim.set_async_notify_callback(ctx, h.cb, None) == OK
    assert h.sim.set_async_notify_callback(None, h.cb, None) == INVALID
    assert "OQ-9" in h.caller()


def test_notify_10_null_callback_accepted_despite_header_annotation(h: H) -> None:
    """NOTIFY-10: null callback accepted despite header annotation."""
    ctx = h.ctx(callback=False)
    assert h.sim.set_async_notify_callback(ctx, None, None) == OK
    assert h.sim.delete_security_context_async(ctx, None) == OK
    h.sim.control.complete(ctx)
    assert h.sim.get_async_call_status(ctx) == st.SEC_E_INVALID_HANDLE


# ---- A.4 queueing calls (CALL) ---------------------------------------------------------------------------


def test_call_1_queue_status_is_not_the_result(h: H) -> None:
    """CALL-1: queue status is not the result."""
    ctx = h.ctx()
    assert h.sim.acquire_credentials_handle_async(ctx, None, "NoSuchPackage", OUT, None, CallOutputs()) == OK
    h.sim.control.complete(ctx)
    assert h.sim.get_async_call_status(ctx) == st.SEC_E_SECPKG_NOT_FOUND


def test_call_2_queue_errors_come_back_from_the_queue_call(h: H) -> None:
    """CALL-2: queue errors come back from the queue call."""
    ctx = h.ctx()
    h.sim.control.inject_fault("queue-oom")
    assert h.sim.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, CallOutputs()) == \
        st.SEC_E_INSUFFICIENT_MEMORY
    h.sim.control.complete_all()
    assert h.seen == [] and h.sim.get_async_call_status(ctx) == OK  # OQ-5: no callback, not pending
    assert h.sim.acquire_credentials_handle_async(None, None, "Sim", OUT, None, CallOutputs()) == INVALID


def test_call_3_after_queueing_the_call_may_be_pending_or_done() -> None:
    """CALL-3: after queueing the call may be pending or done."""
    for mode, expected in (("deferred", PENDING), ("inline", OK)):
        h = H(mode)
        ctx = h.ctx()
        h.sim.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, CallOutputs())
        assert h.sim.get_async_call_status(ctx) == expected


def test_call_4_result_only_on_the_same_context(h: H) -> None:
    """CALL-4: result only on the same context."""
    a, b = h.ctx(), h.ctx()
    h.sim.acquire_credentials_handle_async(a, None, "NoSuchPackage", OUT, None, CallOutputs())
    h.sim.control.complete(a)
    assert h.sim.get_async_call_status(a) == st.SEC_E_SECPKG_NOT_FOUND
    assert h.sim.get_async_call_status(b) == OK


def test_call_5_handshake_loop_with_reinit_until_ok(h: H) -> None:
    """CALL-5: handshake loop with reinit until ok."""
    statuses, cctx, sctx, _, _ = _handshake(h)
    assert statuses == [st.SEC_I_CONTINUE_NEEDED, OK, OK]
    assert cctx is not None and sctx is not None


def test_call_6_one_outstanding_call_per_ctxthandle(h: H) -> None:
    """CALL-6: one outstanding call per ctxthandle."""
    ccred, _ = h.creds()
    _, o1, _ = h.isc(ccred, None, None)
    cctx = o1.new_context
    a, b = h.ctx(), h.ctx()
    tok = [SecBuffer(SECBUFFER_TOKEN, b"x")]
    assert h.sim.initialize_security_context_async(a, None, cctx, "t", 0, tok, CallOutputs()) == OK
    assert h.sim.initialize_security_context_async(b, None, cctx, "t", 0, tok, CallOutputs()) == INVALID
    assert "CALL-6" in h.caller()


def test_call_7_ach_completion_statuses(h: H) -> None:
    """CALL-7: ach completion statuses."""
    allowed = COMPLETION_STATUSES["acquire_credentials_handle_async"][1]
    cases = {
        OK: h.ach()[0],
        st.SEC_E_SECPKG_NOT_FOUND: h.ach(package="Nope")[0],
        st.SEC_E_UNKNOWN_CREDENTIALS: h.ach(auth={"colour": "blue"})[0],
        st.SEC_E_NOT_OWNER: h.ach(principal="mallory")[0],
        st.SEC_E_NO_CREDENTIALS: h.ach(use=0)[0],
    }
    for expected, got in cases.items():
        assert got == expected and got in allowed


def test_call_8_credential_direction_matters(h: H) -> None:
    """CALL-8: credential direction matters."""
    _, inbound = h.ach(IN)
    _, outbound = h.ach(OUT)
    assert h.isc(inbound.credential, None, None)[0] == st.SEC_E_NO_CREDENTIALS
    assert h.asc(outbound.credential, None, b"SIM1")[0] == st.SEC_E_NO_CREDENTIALS


def test_call_9_unreachable_authority(h: H) -> None:
    """CALL-9: unreachable authority."""
    statuses, *_ = _handshake(h, server={"authority": "unreachable"})
    assert statuses[-1] == st.SEC_E_NO_AUTHENTICATING_AUTHORITY


def test_call_10_no_logon_id_needed(h: H) -> None:
    """CALL-10: pvLogonId has no place in our interface: ACH works with no principal and no logon id."""
    assert h.ach(principal=None)[0] == OK


def test_call_11_no_get_key_function_needed(h: H) -> None:
    """CALL-11: pGetKeyFn is NULL in our interface: ACH works with no auth data at all."""
    assert h.ach(auth=None)[0] == OK


def test_call_12_expiry_written(h: H) -> None:
    """CALL-12: expiry written."""
    status, out = h.ach()
    assert status == OK and out.expiry is not None and out.written


def test_call_13_credentials_released_with_free_credentials(h: H) -> None:
    """CALL-13: credentials released with free credentials."""
    _, out = h.ach()
    ctx = h.ctx()
    assert h.run(ctx, lambda: h.sim.free_credentials_handle_async(ctx, out.credential)) == OK
    assert h.run(ctx, lambda: h.sim.free_credentials_handle_async(ctx, out.credential)) == st.SEC_E_INVALID_HANDLE
    assert "CALL-13" in h.caller()
    h.ach()  # leaked
    h.sim.close()
    assert "CALL-13" in {v.requirement for v in h.sim.diagnostics()}


def test_call_14_new_context_written_then_reused(h: H) -> None:
    """CALL-14: new context written then reused."""
    ccred, scred = h.creds()
    s1, o1, _ = h.isc(ccred, None, None)
    assert s1 == st.SEC_I_CONTINUE_NEEDED and o1.new_context is not None
    _s2, o2, _ = h.asc(scred, None, _token(o1))
    assert o2.new_context is not None
    _s3, o3, _ = h.isc(ccred, o1.new_context, _token(o2))
    assert o3.new_context is o1.new_context


def test_call_15_asc_input_token_and_empty_extra(h: H) -> None:
    """CALL-15: asc input token and empty extra."""
    ccred, scred = h.creds(server={"stream": True})
    _, o1, _ = h.isc(ccred, None, None)
    status, _, inp = h.asc(scred, None, _token(o1) + b"surplus")
    assert status == OK
    assert inp[1].type == SECBUFFER_EXTRA and inp[1].cb == len(b"surplus")


def test_call_16_asc_output_token_with_ok(h: H) -> None:
    """CALL-16: asc output token with ok."""
    ccred, scred = h.creds()
    _, o1, _ = h.isc(ccred, None, None)
    status, o2, _ = h.asc(scred, None, _token(o1))
    assert status == OK and _token(o2)  # the final token must still be sent


def test_call_17_asc_completion_statuses(h: H) -> None:
    """CALL-17: asc completion statuses."""
    allowed = COMPLETION_STATUSES["accept_security_context_async"][1]
    ccred, scred = h.creds()
    _, o1, _ = h.isc(ccred, None, None)
    results = [
        h.asc(scred, None, _token(o1), req=ASC_REQ["DELEGATE"])[0],
        h.asc(scred, None, b"garbage-token")[0],
        _handshake(h, client={"password": "wrong"})[0][-1],
        h.asc(scred, None, _token(o1))[0],
    ]
    assert results == [st.SEC_E_UNSUPPORTED_FUNCTION, st.SEC_E_INVALID_TOKEN, st.SEC_E_LOGON_DENIED, OK]
    assert all(r in allowed for r in results)


def test_call_18_failed_contexts_must_still_be_deleted() -> None:
    """CALL-18: failed contexts must still be deleted."""
    for delete in (False, True):
        h = H()
        statuses, _cctx, sctx, _, _ = _handshake(h, client={"password": "wrong", "legs": 3}, server={"legs": 3})
        assert statuses[-1] == st.SEC_E_LOGON_DENIED and sctx is not None  # a partial server context exists
        if delete:
            assert h.delete(sctx) == OK
        h.sim.close()
        leaked = [v.message for v in h.sim.diagnostics() if v.requirement == "CALL-26"]
        assert any(repr(sctx) in m for m in leaked) is not delete


def test_call_19_asc_attributes_and_expiry(h: H) -> None:
    """CALL-19: asc attributes and expiry."""
    ccred, scred = h.creds()
    _, o1, _ = h.isc(ccred, None, None)
    status, o2, _ = h.asc(scred, None, _token(o1), req=ALLOC_A)
    assert status == OK
    assert o2.context_attr & ASC_RET["ALLOCATED_MEMORY"] and o2.expiry is not None


def test_call_20_reserved_parameters_must_be_zero(h: H) -> None:
    """CALL-20: reserved parameters must be zero."""
    ctx = h.ctx()
    assert h.sim.initialize_security_context_async(ctx, None, None, "t", 0, None, CallOutputs(), reserved1=1) \
        == INVALID
    assert "CALL-20" in h.caller()
    assert h.sim.get_async_call_status(ctx) == OK


def test_call_21_target_name_checked_with_mutual_auth(h: H) -> None:
    """CALL-21: target name checked with mutual auth."""
    ccred, scred = h.creds()
    req = ALLOC_I | ISC_REQ["MUTUAL_AUTH"]
    _, o1, _ = h.isc(ccred, None, None, target="impostor.test", req=req)
    _, o2, _ = h.asc(scred, None, _token(o1))
    assert h.isc(ccred, o1.new_context, _token(o2), target="impostor.test", req=req)[0] == st.SEC_E_WRONG_PRINCIPAL


def test_call_22_isc_completion_statuses(h: H) -> None:
    """CALL-22: isc completion statuses."""
    allowed = COMPLETION_STATUSES["initialize_security_context_async"][1]
    ccred, _ = h.creds()
    results = [
        h.isc(ccred, None, None)[0],
        h.isc(ccred, None, None, target="  ")[0],
        h.isc(ccred, None, None, req=ISC_REQ["DELEGATE"])[0],
        h.isc(None, None, None)[0],
    ]
    assert results == [st.SEC_I_CONTINUE_NEEDED, st.SEC_E_TARGET_UNKNOWN, st.SEC_E_UNSUPPORTED_FUNCTION,
                       st.SEC_E_NO_CREDENTIALS]
    assert all(r in allowed for r in results)


def test_call_23_missing_count_is_a_hint(h: H) -> None:
    """CALL-23: missing count is a hint."""
    ccred, scred = h.creds(client={"stream": True})
    _, o1, _ = h.isc(ccred, None, None)
    _, o2, _ = h.asc(scred, None, _token(o1))
    status, _, inp = h.isc(ccred, o1.new_context, _token(o2)[:10])
    assert status == st.SEC_E_INCOMPLETE_MESSAGE
    assert inp is not None and inp[1].type == SECBUFFER_MISSING and inp[1].cb > 0


def test_call_24_isc_inherits_buffer_rules(h: H) -> None:
    """CALL-24: isc inherits buffer rules."""
    ccred, _ = h.creds()
    status, out, _ = h.isc(ccred, None, None, req=ALLOC_I)
    assert status == st.SEC_I_CONTINUE_NEEDED and out.context_attr & ISC_RET["ALLOCATED_MEMORY"]
    assert h.isc(ccred, None, None, req=0, out_size=4)[0] == st.SEC_E_INSUFFICIENT_MEMORY


def test_call_25_delete_completion_statuses(h: H) -> None:
    """CALL-25: delete completion statuses."""
    allowed = COMPLETION_STATUSES["delete_security_context_async"][1]
    _, cctx, _, _, _ = _handshake(h)
    assert h.delete(cctx) == OK
    assert h.delete("not a context") == st.SEC_E_INVALID_HANDLE
    assert {OK, st.SEC_E_INVALID_HANDLE} <= allowed


def test_call_26_deleted_handles_are_invalid(h: H) -> None:
    """CALL-26: deleted handles are invalid."""
    _, cctx, sctx, ccred, _ = _handshake(h)
    assert h.delete(cctx) == OK
    assert h.isc(ccred, cctx, b"SIM1")[0] == st.SEC_E_INVALID_HANDLE
    assert "CALL-26" in h.caller()
    h.sim.close()  # sctx never deleted
    assert any(repr(sctx) in v.message for v in h.sim.diagnostics() if v.requirement == "CALL-26")


def test_call_27_free_credentials_completion_statuses(h: H) -> None:
    """CALL-27: free credentials completion statuses."""
    allowed = COMPLETION_STATUSES["free_credentials_handle_async"][1]
    _, out = h.ach()
    ctx = h.ctx()
    assert h.run(ctx, lambda: h.sim.free_credentials_handle_async(ctx, out.credential)) == OK
    assert h.run(ctx, lambda: h.sim.free_credentials_handle_async(ctx, "junk")) == st.SEC_E_INVALID_HANDLE
    assert {OK, st.SEC_E_INVALID_HANDLE} <= allowed


def test_call_28_free_credentials_after_contexts(h: H) -> None:
    """CALL-28: free credentials after contexts."""
    _, cctx, _sctx, ccred, _ = _handshake(h)
    ctx = h.ctx()
    h.run(ctx, lambda: h.sim.free_credentials_handle_async(ctx, ccred))
    assert "CALL-28" in h.caller()
    assert cctx is not None


def test_call_29_invalid_handle_uses_the_header_value() -> None:
    """CALL-29: invalid handle uses the header value."""
    assert st.SEC_E_INVALID_HANDLE == 0x80090301
    assert st.describe(st.SEC_E_INVALID_HANDLE) == "SEC_E_INVALID_HANDLE (0x80090301)"
    assert "0x80100003" not in st.describe(st.SEC_E_INVALID_HANDLE)
    assert st.name_of(0x80100003) == "SCARD_E_INVALID_HANDLE"


def test_call_30_incomplete_message_is_a_failure_code() -> None:
    """CALL-30: incomplete message is a failure code."""
    assert st.failed(st.SEC_E_INCOMPLETE_MESSAGE)
    assert st.SEC_E_INCOMPLETE_MESSAGE in COMPLETION_STATUSES["accept_security_context_async"][1]


def test_call_31_asc_bit_0x40_is_session_ticket() -> None:
    """CALL-31: asc bit 0x40 is session ticket."""
    assert ASC_REQ["SESSION_TICKET"] == 0x40
    assert "PROMPT_FOR_CREDS" not in ASC_REQ
    assert ISC_REQ["PROMPT_FOR_CREDS"] == 0x40  # the ISC flag the page confused it with


# ---- A.5 reinitialisation (REINIT) -----------------------------------------------------------------------


def test_reinit_1_reinit_makes_a_completed_context_reusable(h: H) -> None:
    """REINIT-1: reinit makes a completed context reusable."""
    ctx = h.ctx()
    h.sim.acquire_credentials_handle_async(ctx, None, "Nope", OUT, None, CallOutputs())
    h.sim.control.complete(ctx)
    assert h.sim.reinit_async_context(ctx) == st.STATUS_SUCCESS
    assert h.sim.get_async_call_status(ctx) == OK  # idle again (OQ-1)
    h.ach(ctx=ctx)
    assert "CTX-5" not in h.caller()


def test_reinit_2_only_the_call_state_is_reset(h: H) -> None:
    """REINIT-2: only the call state is reset."""
    data = object()
    ctx = h.ctx(data)
    h.ach(ctx=ctx)
    assert h.sim.async_context_requires_notify(ctx)
    h.ach(ctx=ctx)
    assert [d for _, d, _ in h.seen] == [data, data]


def test_reinit_3_returns_an_ntstatus(h: H) -> None:
    """REINIT-3: returns an ntstatus."""
    ctx = h.ctx()
    assert st.nt_success(h.sim.reinit_async_context(ctx))
    h.sim.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, CallOutputs())
    failure = h.sim.reinit_async_context(ctx)
    assert not st.nt_success(failure) and failure & 0xC0000000 == 0xC0000000  # NTSTATUS error severity
    assert st.name_of(failure).startswith("STATUS_")


def test_reinit_4_fails_while_pending_and_changes_nothing(h: H) -> None:
    """REINIT-4: fails while pending and changes nothing."""
    ctx = h.ctx("d")
    h.sim.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, CallOutputs())
    assert h.sim.reinit_async_context(ctx) == st.STATUS_INVALID_DEVICE_STATE
    assert "REINIT-4" in h.caller()
    assert h.sim.get_async_call_status(ctx) == PENDING
    h.sim.control.complete(ctx)
    assert [d for _, d, _ in h.seen] == ["d"]


def test_reinit_5_reuse_only_after_completion(h: H) -> None:
    """REINIT-5: reuse only after completion."""
    ctx = h.ctx()
    h.sim.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, CallOutputs())
    assert h.sim.reinit_async_context(ctx) != st.STATUS_SUCCESS
    assert h.sim.free_credentials_handle_async(ctx, None) == INVALID
    h.sim.control.complete(ctx)
    assert h.sim.reinit_async_context(ctx) == st.STATUS_SUCCESS
    assert h.sim.free_credentials_handle_async(ctx, None) == OK


def test_reinit_6_re_registering_after_reinit_is_optional(h: H) -> None:
    """REINIT-6: re registering after reinit is optional."""
    ctx = h.ctx("old")
    h.ach(ctx=ctx)
    h.ach(ctx=ctx)  # not re-registered: old data
    assert h.sim.set_async_notify_callback(ctx, h.cb, "new") == OK
    h.ach(ctx=ctx)
    assert [d for _, d, _ in h.seen] == ["old", "old", "new"]


def test_reinit_7_null_context_is_rejected(h: H) -> None:
    """REINIT-7: null context is rejected."""
    assert h.sim.reinit_async_context(None) == st.STATUS_INVALID_PARAMETER
    assert "REINIT-7" in h.caller()


# ---- A.6 release (FREE) ------------------------------------------------------------------------------------


def test_free_1_free_releases_and_double_free_is_diagnosed(h: H) -> None:
    """FREE-1: free releases and double free is diagnosed."""
    ctx = h.ctx()
    h.sim.free_async_context(ctx)
    h.sim.free_async_context(ctx)
    assert h.sim.get_async_call_status(ctx) == INVALID
    assert h.caller() == {"FREE-1"}
    h.sim.close()
    assert not [v for v in h.sim.diagnostics() if v.requirement == "CTX-6"]


def test_free_2_null_is_a_no_op(h: H) -> None:
    """FREE-2: null is a no op."""
    h.sim.free_async_context(None)
    assert h.sim.diagnostics() == []


def test_free_3_freeing_a_pending_notified_context(h: H) -> None:
    """FREE-3: freeing a pending notified context."""
    ctx = h.ctx()
    h.sim.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, CallOutputs())
    h.sim.free_async_context(ctx)
    assert "FREE-3" in h.caller()
    h.sim.control.complete_all()
    assert h.seen == []  # OQ-12: destruction deferred, no callback
    h.sim.close()
    assert not [v for v in h.sim.diagnostics() if v.requirement == "CTX-6"]


def test_free_4_completion_recognised_by_status() -> None:
    """FREE-4: completion recognised by status."""
    h = H("threaded")
    ctx = h.ctx()
    h.sim.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, CallOutputs())
    deadline = time.monotonic() + 2
    while h.sim.get_async_call_status(ctx) == PENDING and time.monotonic() < deadline:
        time.sleep(0.0005)
    while not h.seen and time.monotonic() < deadline:
        time.sleep(0.0005)
    h.sim.free_async_context(ctx)
    h.sim.close()
    assert not [v for v in h.sim.diagnostics() if v.requirement in ("FREE-3", "CTX-6")]


def test_free_5_free_right_after_a_silent_delete(h: H) -> None:
    """FREE-5: free right after a silent delete."""
    _, cctx, sctx, _, _ = _handshake(h)
    ctx = h.ctx(callback=False)
    assert h.sim.delete_security_context_async(ctx, cctx) == OK
    h.sim.free_async_context(ctx)  # delete still in flight
    assert h.caller() == set()
    h.sim.control.complete_all()
    h.delete(sctx)
    h.sim.close()
    found = h.sim.diagnostics()
    assert not [v for v in found if v.requirement in ("CALL-26", "FREE-3")]
    assert not [v for v in found if v.requirement == "CTX-6" and f"#{ctx.serial} " in v.message]


@pytest.mark.parametrize("mode", ["inline", "deferred", "threaded"])
def test_free_6_free_inside_the_callback(mode: str) -> None:
    """FREE-6: free inside the callback."""
    sim = SimulatorAdapter(completion=mode, max_delay_ms=0.2)
    monitor = ContractMonitor(sim)
    freed: list[Any] = []

    def done(actx: Any, data: Any) -> None:
        monitor.free_async_context(actx)
        freed.append(actx)

    ctx = monitor.create_async_context()
    monitor.set_async_notify_callback(ctx, done, None)
    out = CallOutputs()
    monitor.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, out)
    if mode == "inline":
        assert freed == [ctx]  # before the queue call returned
    if monitor.control is not None and mode == "deferred":
        monitor.control.complete_all()
    monitor.finish(1.0)
    sim.close()
    assert freed == [ctx]
    assert [v.requirement for v in monitor.violations()] == ["CALL-13"]  # only the credential leak


def test_free_7_msquic_release_patterns(h: H) -> None:
    """FREE-7: msquic release patterns."""
    unused = h.ctx()
    h.sim.free_async_context(unused)  # never queued
    failed = h.ctx()
    h.sim.control.inject_fault("queue-oom")
    assert h.sim.acquire_credentials_handle_async(failed, None, "Sim", OUT, None, CallOutputs()) != OK
    h.sim.free_async_context(failed)  # after a failed queue
    _, cctx, sctx, _, _ = _handshake(h)
    silent = h.ctx(callback=False)
    h.sim.delete_security_context_async(silent, cctx)
    h.sim.free_async_context(silent)  # right after a silent delete
    assert h.caller() == set()
    h.sim.control.complete_all()
    assert sctx is not None


def test_every_section_a_requirement_has_a_test() -> None:
    """Meta: CTX-1..10, NOTIFY-1..10, CALL-1..31, REINIT-1..7, FREE-1..7 each name a test here."""
    wanted = {f"{group}-{n}" for group, count in (("CTX", 10), ("NOTIFY", 10), ("CALL", 31), ("REINIT", 7),
                                                  ("FREE", 7)) for n in range(1, count + 1)}
    documented = set()
    for name, fn in globals().items():
        if name.startswith("test_") and fn.__doc__:
            documented |= set(re.findall(r"\b(?:CTX|NOTIFY|CALL|REINIT|FREE)-\d+", fn.__doc__.split(":")[0]))
    assert wanted <= documented, sorted(wanted - documented)


def _pending(h: H) -> Any:
    ctx = h.ctx()
    h.sim.acquire_credentials_handle_async(ctx, None, "Sim", OUT, None, CallOutputs())
    return ctx


def _freed(h: H) -> Any:
    ctx = h.ctx()
    h.sim.free_async_context(ctx)
    h.sim.diagnostics()
    return ctx


MISUSE: list[tuple[str, Callable[[H], object]]] = [
    ("NOTIFY-4", lambda h: h.sim.acquire_credentials_handle_async(h.ctx(callback=False), None, "Sim", OUT, None,
                                                                  CallOutputs())),
    ("CTX-4", lambda h: h.sim.free_credentials_handle_async(_pending(h), None)),
    ("OQ-9", lambda h: h.sim.set_async_notify_callback(_pending(h), h.cb, None)),
    ("REINIT-4", lambda h: h.sim.reinit_async_context(_pending(h))),
    ("FREE-3", lambda h: h.sim.free_async_context(_pending(h))),
    ("FREE-1", lambda h: h.sim.free_async_context(_freed(h))),
    ("FREE-1", lambda h: h.sim.get_async_call_status(_freed(h))),
    ("REINIT-7", lambda h: h.sim.reinit_async_context(None)),
    ("CALL-2", lambda h: h.sim.delete_security_context_async("not an async context", None)),
    ("CALL-20", lambda h: h.sim.initialize_security_context_async(h.ctx(), None, None, "t", 0, None, CallOutputs(),
                                                                  reserved2=1)),
]


@pytest.mark.parametrize(("requirement", "misuse"), MISUSE, ids=[f"{r}-{i}" for i, (r, _) in enumerate(MISUSE)])
def test_simulator_reports_each_misuse_with_its_requirement(requirement: str, misuse: Callable[[H], object]) -> None:
    """Misuse detection: each misuse yields exactly one caller violation, with the right ID."""
    h = H()
    misuse(h)
    found = h.sim.diagnostics()
    assert [(v.requirement, v.party) for v in found] == [(requirement, "caller")], found
