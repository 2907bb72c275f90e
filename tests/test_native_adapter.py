"""Native adapter against sspi-rs' libsspi, in process: the async contract over the real
synchronous ABI, buffer guards, handle accounting, and the library's own answers.

Tests marked ``xfail(strict=True)`` assert what the contract requires where libsspi is
known to diverge (each is a FINDING in docs/native.md); if the library is fixed they
XPASS and fail, so the finding gets re-checked.  Calls that crash or hang the library
live in test_native_misuse.py, each in its own child process.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("sspilib", reason="sspilib (which ships sspi-rs' libsspi) is not installed")

from adapters import status as st
from adapters.api import CallOutputs, SecBuffer, Violation
from adapters.async_state import COMPLETION_STATUSES, Event, State, rule
from adapters.constants import (
    ISC_REQ,
    SECBUFFER_DATA,
    SECBUFFER_TOKEN,
    SECPKG_ATTR_SIZES,
    SECPKG_ATTR_STREAM_SIZES,
    SECPKG_CRED_INBOUND,
    SECPKG_CRED_OUTBOUND,
)
from adapters.native import create_inprocess, ffi
from adapters.native.adapter import NativeAdapter
from adapters.native.driver import (
    accept,
    acquire,
    delete,
    free,
    handshake,
    initialize,
    token,
    token_outputs,
    wait_call,
)
from adapters.native.handles import ZERO_HANDLE, NativeContext, NativeCredential

AUTH = {"username": "user", "domain": "DOMAIN", "password": "Password01"}
ISC_STATUSES = COMPLETION_STATUSES["initialize_security_context_async"][1]
ASC_STATUSES = COMPLETION_STATUSES["accept_security_context_async"][1]


@pytest.fixture
def adapter() -> Iterator[NativeAdapter]:
    native = create_inprocess({"workers": "2"})
    assert isinstance(native, NativeAdapter)
    yield native
    native.close()


def _requirements(violations: list[Violation], party: str | None = None) -> list[str]:
    return [v.requirement for v in violations if party is None or v.party == party]


def _client(adapter: NativeAdapter) -> Any:
    status, cred = acquire(adapter, "NTLM", SECPKG_CRED_OUTBOUND, AUTH)
    assert status == st.SEC_E_OK
    return cred


def _server(adapter: NativeAdapter, auth: dict[str, str] = AUTH) -> Any:
    status, cred = acquire(adapter, "NTLM", SECPKG_CRED_INBOUND, auth)
    assert status == st.SEC_E_OK
    return cred


class Gate:
    """Wraps one library entry point so its call blocks until released: a test-controlled
    'still pending' window on a real library call."""

    def __init__(self, adapter: NativeAdapter, name: str) -> None:
        self.real = adapter.lib.functions[name]
        self.entered = threading.Event()
        self.release = threading.Event()
        adapter.lib.functions[name] = self

    def __call__(self, *args: Any) -> int:
        self.entered.set()
        self.release.wait(10)
        assert self.real is not None
        return int(self.real(*args))


# ---- the handshake ------------------------------------------------------------------------
def test_ntlm_handshake_client_and_server_through_async_calls(adapter: NativeAdapter) -> None:
    result = handshake(adapter, AUTH, AUTH)
    assert result.statuses[:3] == (st.SEC_I_CONTINUE_NEEDED, st.SEC_I_CONTINUE_NEEDED, st.SEC_E_OK)
    # sspi-rs' NTLM server ends with SEC_I_COMPLETE_NEEDED (allowed by CALL-17; Windows
    # answers SEC_E_OK) and checks the password in CompleteAuthToken.
    assert result.statuses[3] == st.SEC_I_COMPLETE_NEEDED
    assert adapter.complete_auth_token(result.server_ctx, [SecBuffer(SECBUFFER_TOKEN)]) == st.SEC_E_OK

    # Message protection with the negotiated keys (NTLM: TOKEN + DATA buffers).
    status, sizes = adapter.query_context_attributes(result.client_ctx, SECPKG_ATTR_SIZES)
    assert status == st.SEC_E_OK and sizes.security_trailer > 0
    message = [SecBuffer(SECBUFFER_TOKEN, size=sizes.security_trailer), SecBuffer(SECBUFFER_DATA, b"hello")]
    assert adapter.encrypt_message(result.client_ctx, 0, message) == st.SEC_E_OK
    assert message[1].data != b"hello"
    status, _qop = adapter.decrypt_message(result.server_ctx, message)
    assert status == st.SEC_E_OK
    assert message[1].data == b"hello"

    result.release(adapter)
    adapter.close()
    assert adapter.diagnostics() == []


def test_client_context_handle_is_stable_across_legs(adapter: NativeAdapter) -> None:
    cred, scred = _client(adapter), _server(adapter)
    status, first = initialize(adapter, cred, None, None)
    assert status == st.SEC_I_CONTINUE_NEEDED and first.written and first.new_context is not None
    status, challenge = accept(adapter, scred, None, token(first))
    status, second = initialize(adapter, cred, first.new_context, token(challenge))
    assert status == st.SEC_E_OK
    assert second.new_context is first.new_context  # CALL-14: phNewContext == phContext later
    for ctxt in (first.new_context, challenge.new_context):
        assert delete(adapter, ctxt) == st.SEC_E_OK
    for c in (cred, scred):
        assert free(adapter, c) == st.SEC_E_OK
    assert adapter.diagnostics() == []


def test_wrong_password_is_denied_only_by_complete_auth_token(adapter: NativeAdapter) -> None:
    result = handshake(adapter, dict(AUTH, password="wrong"), AUTH)
    assert result.statuses[-1] == st.SEC_I_COMPLETE_NEEDED  # FINDING F-4: ASC itself does not deny
    denied = adapter.complete_auth_token(result.server_ctx, [SecBuffer(SECBUFFER_TOKEN)])
    assert denied == st.SEC_E_LOGON_DENIED
    result.release(adapter)


@pytest.mark.xfail(strict=True, reason="FINDING F-4: sspi-rs NTLM ASC returns SEC_I_COMPLETE_NEEDED for a bad password")
def test_wrong_password_fails_the_final_accept(adapter: NativeAdapter) -> None:
    result = handshake(adapter, dict(AUTH, password="wrong"), AUTH)
    try:
        assert result.statuses[-1] == st.SEC_E_LOGON_DENIED
    finally:
        result.release(adapter)


@pytest.mark.xfail(strict=True, reason="FINDING F-9: sspi-rs Negotiate server fails its last leg")
def test_negotiate_handshake_completes(adapter: NativeAdapter) -> None:
    result = handshake(adapter, AUTH, AUTH, package="Negotiate")
    try:
        assert not any(st.failed(s) for s in result.statuses)
    finally:
        result.release(adapter)


# ---- the async-context contract (implemented by the adapter) -------------------------------
def test_callback_runs_once_after_the_status_is_final(adapter: NativeAdapter) -> None:
    seen: list[tuple[Any, Any, int]] = []
    done = threading.Event()
    ctx = adapter.create_async_context()

    def callback(handle: Any, data: Any) -> None:
        seen.append((handle, data, adapter.get_async_call_status(handle)))
        done.set()

    assert adapter.set_async_notify_callback(ctx, callback, "cookie") == st.SEC_E_OK
    assert adapter.get_async_call_status(ctx) == st.SEC_E_OK  # OQ-1: idle is not pending
    outputs = CallOutputs()
    assert adapter.acquire_credentials_handle_async(ctx, None, "NTLM", SECPKG_CRED_OUTBOUND, AUTH, outputs) == 0
    assert done.wait(5)
    assert seen == [(ctx, "cookie", st.SEC_E_OK)]  # CTX-8/CTX-10/NOTIFY-2
    assert outputs.written and outputs.credential is not None
    assert adapter.async_context_requires_notify(ctx) is True  # OQ-4
    adapter.free_async_context(ctx)
    assert free(adapter, outputs.credential) == st.SEC_E_OK
    assert len(seen) == 1


def test_queue_without_callback_is_refused_and_changes_nothing(adapter: NativeAdapter) -> None:
    ctx = adapter.create_async_context()
    outputs = CallOutputs()
    refused = adapter.acquire_credentials_handle_async(ctx, None, "NTLM", SECPKG_CRED_OUTBOUND, AUTH, outputs)
    assert refused == st.SEC_E_INVALID_PARAMETER  # OQ-6
    assert not outputs.written
    assert adapter.get_async_call_status(ctx) == st.SEC_E_OK
    assert _requirements(adapter.diagnostics(), "caller") == [rule(State.IDLE, Event.QUEUE_SILENT).requirement]
    adapter.free_async_context(ctx)


def test_pending_context_refuses_queue_reinit_and_callback_change(adapter: NativeAdapter) -> None:
    gate = Gate(adapter, "AcquireCredentialsHandleW")
    done = threading.Event()
    ctx = adapter.create_async_context()
    adapter.set_async_notify_callback(ctx, lambda c, d: done.set())
    outputs = CallOutputs()
    assert adapter.acquire_credentials_handle_async(ctx, None, "NTLM", SECPKG_CRED_OUTBOUND, AUTH, outputs) == 0
    assert gate.entered.wait(5)
    assert adapter.get_async_call_status(ctx) == st.SEC_I_ASYNC_CALL_PENDING  # CTX-7
    assert not outputs.written  # GEN-10: nothing is written before completion
    again = adapter.acquire_credentials_handle_async(ctx, None, "NTLM", SECPKG_CRED_OUTBOUND, AUTH, CallOutputs())
    assert again == st.SEC_E_INVALID_PARAMETER
    assert adapter.reinit_async_context(ctx) == st.STATUS_INVALID_DEVICE_STATE
    assert adapter.set_async_notify_callback(ctx, None) == st.SEC_E_INVALID_PARAMETER
    expected = [rule(State.PENDING_NOTIFY, e).requirement for e in (Event.QUEUE, Event.REINIT, Event.CLEAR_CALLBACK)]
    assert _requirements(adapter.diagnostics(), "caller") == expected
    gate.release.set()
    assert done.wait(5)
    assert adapter.get_async_call_status(ctx) == st.SEC_E_OK
    assert adapter.reinit_async_context(ctx) == st.STATUS_SUCCESS
    adapter.free_async_context(ctx)
    assert free(adapter, outputs.credential) == st.SEC_E_OK


def test_free_while_pending_defers_destruction_without_callback(adapter: NativeAdapter) -> None:
    gate = Gate(adapter, "AcquireCredentialsHandleW")
    called = threading.Event()
    ctx = adapter.create_async_context()
    adapter.set_async_notify_callback(ctx, lambda c, d: called.set())
    outputs = CallOutputs()
    adapter.acquire_credentials_handle_async(ctx, None, "NTLM", SECPKG_CRED_OUTBOUND, AUTH, outputs)
    assert gate.entered.wait(5)
    adapter.free_async_context(ctx)  # FREE-3 misuse; OQ-12: zombie until completion
    gate.release.set()
    assert adapter._engine.drain(5)
    assert not called.is_set()
    assert outputs.written  # the caller's memory still receives the outputs
    assert adapter.get_async_call_status(ctx) == st.SEC_E_INVALID_PARAMETER  # freed now
    expected = [rule(State.PENDING_NOTIFY, Event.FREE).requirement, rule(State.FREED, Event.READ).requirement]
    assert _requirements(adapter.diagnostics(), "caller") == expected
    assert free(adapter, outputs.credential) == st.SEC_E_OK


def test_silent_delete_may_be_freed_in_flight(adapter: NativeAdapter) -> None:
    cred = _client(adapter)
    _, out = initialize(adapter, cred, None, None)
    ctx = adapter.create_async_context()  # no callback: NOTIFY-4 allows it for delete only
    assert adapter.delete_security_context_async(ctx, out.new_context) == st.SEC_E_OK
    assert adapter.async_context_requires_notify(ctx) is False
    adapter.free_async_context(ctx)  # FREE-5: legal
    assert adapter._engine.drain(5)
    assert free(adapter, cred) == st.SEC_E_OK
    adapter.close()
    assert adapter.diagnostics() == []


def test_reinit_keeps_the_callback_and_reuse_without_reinit_is_diagnosed(adapter: NativeAdapter) -> None:
    calls: list[int] = []
    done = threading.Semaphore(0)
    ctx = adapter.create_async_context()

    def callback(_ctx: Any, _data: Any) -> None:
        calls.append(1)
        done.release()

    adapter.set_async_notify_callback(ctx, callback)
    creds = []
    for reinit in (False, True, False):
        if reinit:
            assert adapter.reinit_async_context(ctx) == st.STATUS_SUCCESS  # REINIT-1/2
            assert adapter.get_async_call_status(ctx) == st.SEC_E_OK
        outputs = CallOutputs()
        assert adapter.acquire_credentials_handle_async(ctx, None, "NTLM", SECPKG_CRED_OUTBOUND, AUTH, outputs) == 0
        assert done.acquire(timeout=5)
        creds.append(outputs.credential)
    assert len(calls) == 3
    adapter.free_async_context(ctx)
    reuse = rule(State.COMPLETED, Event.QUEUE).requirement
    assert reuse is not None
    assert _requirements(adapter.diagnostics(), "caller") == [reuse]  # only the 3rd queue skipped reinit
    for cred in creds:
        assert free(adapter, cred) == st.SEC_E_OK


def test_foreign_and_null_async_contexts_are_refused(adapter: NativeAdapter) -> None:
    assert adapter.get_async_call_status(None) == st.SEC_E_INVALID_PARAMETER
    assert adapter.reinit_async_context(None) == st.STATUS_INVALID_PARAMETER
    assert adapter.set_async_notify_callback(None, lambda c, d: None) == st.SEC_E_INVALID_PARAMETER
    adapter.free_async_context(None)  # FREE-2: no-op
    assert adapter.delete_security_context_async("not a context", None) == st.SEC_E_INVALID_PARAMETER
    assert _requirements(adapter.diagnostics(), "caller") == ["FREE-1"]


def test_leaks_are_reported_at_close(adapter: NativeAdapter) -> None:
    cred = _client(adapter)
    _, out = initialize(adapter, cred, None, None)
    adapter.create_async_context()
    adapter.close()
    assert sorted(_requirements(adapter.diagnostics(), "caller")) == ["CALL-13", "CALL-26", "CTX-6"]
    assert isinstance(out.new_context, NativeContext) and isinstance(cred, NativeCredential)
    assert out.new_context.deleted and cred.freed  # released by close so the heap does not grow


def test_freeing_credentials_under_live_contexts_is_diagnosed(adapter: NativeAdapter) -> None:
    cred = _client(adapter)
    _, out = initialize(adapter, cred, None, None)
    assert free(adapter, cred) == st.SEC_E_OK
    assert _requirements(adapter.diagnostics(), "caller") == ["CALL-28"]
    assert delete(adapter, out.new_context) == st.SEC_E_OK


# ---- what the library answers ----------------------------------------------------------------
def test_unknown_package_is_secpkg_not_found(adapter: NativeAdapter) -> None:
    for name in ("bogus", "", "Schannel"):
        status, cred = acquire(adapter, name, SECPKG_CRED_OUTBOUND, AUTH)
        assert (status, cred) == (st.SEC_E_SECPKG_NOT_FOUND, None)  # CALL-7, OQ-16


@pytest.mark.xfail(strict=True, reason="FINDING F-5: sspi-rs compares package names case-sensitively")
@pytest.mark.parametrize("name", ["ntlm", "NEGOTIATE"])
def test_package_names_are_case_insensitive(adapter: NativeAdapter, name: str) -> None:
    status, cred = acquire(adapter, name, SECPKG_CRED_OUTBOUND, AUTH)
    if cred is not None:
        free(adapter, cred)
    assert status == st.SEC_E_OK


def test_null_auth_data_is_refused(adapter: NativeAdapter) -> None:
    # FINDING F-6: no default credentials; SEC_E_INVALID_PARAMETER is outside CALL-7's list.
    status, cred = acquire(adapter, "NTLM", SECPKG_CRED_OUTBOUND, None)
    assert (status, cred) == (st.SEC_E_INVALID_PARAMETER, None)
    assert status not in COMPLETION_STATUSES["acquire_credentials_handle_async"][1]


@pytest.mark.xfail(strict=True, reason="FINDING F-7: sspi-rs never writes ptsExpiry")
def test_expiry_is_written(adapter: NativeAdapter) -> None:
    outputs = CallOutputs()
    wait_call(adapter, lambda c: adapter.acquire_credentials_handle_async(c, None, "NTLM", 2, AUTH, outputs))
    free(adapter, outputs.credential)
    assert outputs.expiry is not None  # CALL-12 / SCH-2


def test_garbage_and_truncated_tokens_fail_with_documented_statuses(adapter: NativeAdapter) -> None:
    cred, scred = _client(adapter), _server(adapter)
    _, first = initialize(adapter, cred, None, None)
    negotiate = token(first)
    for bad in (b"garbage " * 8, negotiate[:20], b"\x00" * 48):
        status, out = accept(adapter, scred, None, bad)
        assert st.failed(status) and status in ASC_STATUSES, st.describe(status)
        if out.new_context is not None:  # FINDING F-8 (OQ-20): a handle even on failure
            assert delete(adapter, out.new_context) == st.SEC_E_OK
    _, challenge = accept(adapter, scred, None, negotiate)
    status, _ = initialize(adapter, cred, first.new_context, token(challenge)[:30])
    assert st.failed(status) and status in ISC_STATUSES, st.describe(status)
    for ctxt in (first.new_context, challenge.new_context):
        delete(adapter, ctxt)
    for c in (cred, scred):
        free(adapter, c)


@pytest.mark.xfail(strict=True, reason="FINDING F-8: sspi-rs writes phNewContext when the first ASC fails")
def test_failed_first_accept_creates_no_handle(adapter: NativeAdapter) -> None:
    scred = _server(adapter)
    status, out = accept(adapter, scred, None, b"garbage " * 8)
    if out.new_context is not None:
        delete(adapter, out.new_context)
    free(adapter, scred)
    assert st.failed(status) and out.new_context is None  # OQ-20


def test_stream_sizes_are_unsupported_for_ntlm(adapter: NativeAdapter) -> None:
    result = handshake(adapter, AUTH, AUTH)
    status, value = adapter.query_context_attributes(result.client_ctx, SECPKG_ATTR_STREAM_SIZES)
    assert (status, value) == (st.SEC_E_UNSUPPORTED_FUNCTION, None)
    assert "stream" not in adapter.capabilities().features
    result.release(adapter)


# ---- buffers ---------------------------------------------------------------------------------
def test_undersized_output_buffer_overrun_is_reported(adapter: NativeAdapter) -> None:
    cred = _client(adapter)
    status, out = initialize(adapter, cred, None, None, outputs=token_outputs(8))
    # FINDING F-3: sspi-rs copies the whole token past cbBuffer instead of failing.
    assert status == st.SEC_I_CONTINUE_NEEDED
    overruns = [v for v in adapter.diagnostics() if v.requirement == "SCH-8"]
    assert len(overruns) == 1 and overruns[0].party == "implementation"
    assert overruns[0].call == "initialize_security_context_async"
    assert "34 byte(s) past cbBuffer=8" in overruns[0].message  # 42-byte NEGOTIATE message
    delete(adapter, out.new_context)
    free(adapter, cred)


def test_allocate_memory_outputs_are_copied_and_released(adapter: NativeAdapter) -> None:
    cred = _client(adapter)
    freed: list[int] = []
    real_free = adapter.lib.functions["FreeContextBuffer"]
    assert real_free is not None

    def counting_free(pointer: Any) -> int:
        freed.append(pointer.value)
        return int(real_free(pointer))

    adapter.lib.functions["FreeContextBuffer"] = counting_free
    status, out = initialize(
        adapter, cred, None, None, req=ISC_REQ["ALLOCATE_MEMORY"], outputs=token_outputs(0)
    )
    assert status == st.SEC_I_CONTINUE_NEEDED
    assert token(out).startswith(b"NTLMSSP\x00\x01") and len(token(out)) == 42
    assert len(freed) == 1 and freed[0]  # SCH-8: exactly one FreeContextBuffer
    assert adapter.diagnostics() == []
    adapter.lib.functions["FreeContextBuffer"] = real_free
    delete(adapter, out.new_context)
    free(adapter, cred)


def test_guard_detects_a_fake_function_writing_past_cbbuffer(adapter: NativeAdapter) -> None:
    """A stand-in InitializeSecurityContextW with the real C prototype that writes five
    bytes too many into the first output buffer and claims it wrote them."""
    proto = ctypes.CFUNCTYPE(
        ffi.SECURITY_STATUS, ffi.PSecHandle, ffi.PSecHandle, ctypes.c_void_p, ffi.ULONG, ffi.ULONG, ffi.ULONG,
        ffi.PSecBufferDesc, ffi.ULONG, ffi.PSecHandle, ffi.PSecBufferDesc, ffi.PULONG, ffi.PTimeStamp,
    )

    def overrunning(*args: Any) -> int:
        p_new, p_out = args[8], args[9]
        buffer = p_out.contents.pBuffers[0]
        ctypes.memset(buffer.pvBuffer, 0x41, buffer.cbBuffer + 5)
        buffer.cbBuffer += 5
        p_new.contents.dwLower, p_new.contents.dwUpper = 0, 0
        return st.SEC_I_CONTINUE_NEEDED

    fake = proto(overrunning)
    adapter.lib.functions["InitializeSecurityContextW"] = fake
    status, out = initialize(adapter, None, None, None, outputs=token_outputs(16))
    assert status == st.SEC_I_CONTINUE_NEEDED
    assert out.output is not None and out.output[0].data == b"A" * 21  # copied back as reported
    assert [(v.requirement, v.message) for v in adapter.diagnostics()] == [
        ("SCH-8", "output buffer 0: the library wrote at least 5 byte(s) past cbBuffer=16")
    ]


def test_accept_writing_beyond_cbuffers_is_caught_by_the_sentinel(adapter: NativeAdapter) -> None:
    cred, scred = _client(adapter), _server(adapter)
    _, first = initialize(adapter, cred, None, None)
    status, out = accept(adapter, scred, None, token(first), outputs=CallOutputs(output=[]))
    assert status == st.SEC_I_CONTINUE_NEEDED
    messages = [v.message for v in adapter.diagnostics() if v.requirement == "SCH-8"]
    assert messages == ["output: the library wrote SecBuffer[0], beyond cBuffers=0"]  # FINDING F-3
    for ctxt in (first.new_context, out.new_context):
        delete(adapter, ctxt)
    for c in (cred, scred):
        free(adapter, c)


# ---- NULL and zero handles (safe to pass: the library checks them) ------------------------------
def test_null_and_zero_handles_are_rejected_but_not_with_invalid_handle(adapter: NativeAdapter) -> None:
    # FINDING F-2: SEC_E_INVALID_PARAMETER where CALL-25/CALL-27 allow only OK/INVALID_HANDLE.
    for handle in (None, ZERO_HANDLE):
        assert delete(adapter, handle) == st.SEC_E_INVALID_PARAMETER
        assert free(adapter, handle) == st.SEC_E_INVALID_PARAMETER
    status, out = initialize(adapter, None, None, None)
    assert status == st.SEC_E_INVALID_PARAMETER and out.new_context is None
    status, out = initialize(adapter, ZERO_HANDLE, None, None)
    assert status == st.SEC_E_INVALID_HANDLE and out.new_context is None
    # Forged handles are reported as caller misuse, and still reached the library.
    assert _requirements(adapter.diagnostics(), "caller") == ["CALL-26"] * 3


def test_zero_context_handle_starts_a_new_context(adapter: NativeAdapter) -> None:
    # FINDING F-2: a zeroed CtxtHandle is taken as "first call", not as an invalid handle.
    cred = _client(adapter)
    status, out = initialize(adapter, cred, ZERO_HANDLE, None)
    assert status == st.SEC_I_CONTINUE_NEEDED and out.new_context is not None
    delete(adapter, out.new_context)
    free(adapter, cred)


def test_context_attributes_echo_the_request(adapter: NativeAdapter) -> None:
    # FINDING F-10: pfContextAttr is fContextReq verbatim, even for bits never granted
    # (NTLM cannot delegate); documents the divergence, not a contract rule (SCH-14).
    cred = _client(adapter)
    req = ISC_REQ["DELEGATE"] | ISC_REQ["CONFIDENTIALITY"] | ISC_REQ["CONNECTION"]
    status, out = initialize(adapter, cred, None, None, req=req)
    assert status == st.SEC_I_CONTINUE_NEEDED and out.context_attr == req
    delete(adapter, out.new_context)
    free(adapter, cred)


def test_credential_use_is_ignored(adapter: NativeAdapter) -> None:
    # FINDING F-6: neither an invalid fCredentialUse nor an OUTBOUND server credential is
    # refused (CALL-8).
    for use in (0, 0xFFFFFFFF):
        status, cred = acquire(adapter, "NTLM", use, AUTH)
        assert status == st.SEC_E_OK
        free(adapter, cred)
    client, outbound_server = _client(adapter), _client(adapter)
    _, first = initialize(adapter, client, None, None)
    status, out = accept(adapter, outbound_server, None, token(first))
    assert status == st.SEC_I_CONTINUE_NEEDED
    for ctxt in (first.new_context, out.new_context):
        delete(adapter, ctxt)
    for c in (client, outbound_server):
        free(adapter, c)
