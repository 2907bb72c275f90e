"""The remote adapter is transparent: the same call sequences give the same statuses,
callbacks, outputs and diagnostics through an agent (stdio and tcp) as in-process.

Each sequence below records what a caller can observe (handles reduced to "same as" /
"is null" facts, since handle values differ by design) and the lists are compared whole.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import adapters.simulator
from adapters import status as st
from adapters.api import Adapter, CallOutputs, SecBuffer, Unsupported
from adapters.constants import (
    ISC_REQ,
    SECBUFFER_EMPTY,
    SECBUFFER_EXTRA,
    SECBUFFER_MISSING,
    SECBUFFER_TOKEN,
    SECPKG_CRED_INBOUND,
    SECPKG_CRED_OUTBOUND,
)
from adapters.remote import create as remote_create
from adapters.remote import pool

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "adapters/remote/schema/protocol.schema.json").read_text())

CLIENT_AUTH = {"user": "alice", "password": "secret", "legs": 3, "token_size": 40, "stream": True}
SERVER_AUTH = {"accounts": {"alice": "secret"}, "legs": 3, "token_size": 40, "stream": True}


# ---- the agent over tcp ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tcp_agent() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "adapters.remote.agent", "--adapter", "simulator", "--listen", "tcp:127.0.0.1:0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT,
        env=pool._child_env(),
    )
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    match = re.search(r"listening on tcp:127\.0\.0\.1:(\d+)", line)
    assert match, line
    yield f"127.0.0.1:{match.group(1)}"
    proc.kill()
    proc.wait(5)
    proc.stderr.close()


def make(kind: str, mode: str, tcp: str | None = None) -> Adapter:
    if kind == "inprocess":
        return adapters.simulator.create({"completion": mode})
    if kind == "stdio":
        return remote_create({"completion": mode, "call_timeout_ms": "5000"})
    assert tcp is not None
    return remote_create({"connect": tcp, "completion": mode})


KINDS = ("stdio", "tcp")


# ---- a caller that records what it sees --------------------------------------------------------


class Recorder:
    def __init__(self, adapter: Adapter, mode: str) -> None:
        self.a = adapter
        self.mode = mode
        self.log: list[Any] = []
        self.main = threading.get_ident()

    def note(self, *item: Any) -> None:
        self.log.append(item)

    def run(self, ctx: Any, name: str, queue: Callable[[], int], data: object | None = None) -> int:
        """Queue one call with a fresh callback; wait for completion; record everything."""
        done = threading.Event()
        data = data if data is not None else object()
        seen: dict[str, Any] = {}

        def callback(c: Any, d: Any) -> None:
            seen["ctx_same"] = c == ctx
            seen["data_same"] = d is data
            seen["status_in_callback"] = st.name_of(self.a.get_async_call_status(c))
            seen["before_return"] = "returned" not in seen
            seen["on_caller_thread"] = threading.get_ident() == self.main
            seen["count"] = seen.get("count", 0) + 1
            done.set()

        self.note(name, "set", st.name_of(self.a.set_async_notify_callback(ctx, callback, data)))
        status = queue()
        seen["returned"] = True
        self.note(name, "queue", st.name_of(status))
        if status != st.SEC_E_OK:
            return status
        if self.mode == "deferred":
            assert self.a.control is not None
            self.note(name, "pending", len(self.a.control.pending()))
            self.note(name, "complete", self.a.control.complete(ctx))
        assert done.wait(5.0), f"{name}: no callback"
        if self.mode == "threaded":
            seen.pop("on_caller_thread")  # a worker, or whichever thread read the notification
            seen.pop("before_return")
        seen.pop("returned")
        final = self.a.get_async_call_status(ctx)
        self.note(name, "callback", sorted(seen.items()))
        self.note(name, "final", st.name_of(final))
        self.note(name, "reinit", st.name_of(self.a.reinit_async_context(ctx)))
        return final


def buffers_view(buffers: list[SecBuffer] | None) -> Any:
    return None if buffers is None else [(b.type, b.data, b.size) for b in buffers]


def outputs_view(out: CallOutputs) -> Any:
    return (out.credential is not None, out.new_context is not None, buffers_view(out.output), out.context_attr,
            out.expiry, out.written)


def handshake_sequence(a: Adapter, mode: str) -> list[Any]:
    """ACH both sides, a three-leg Sim handshake with MISSING and EXTRA, teardown, misuse."""
    r = Recorder(a, mode)
    caps = a.capabilities()
    r.note("caps", caps.name, caps.version, sorted(caps.packages), sorted(caps.features))
    ctx = a.create_async_context()
    r.note("fresh", st.name_of(a.get_async_call_status(ctx)), a.async_context_requires_notify(ctx))

    ccred_out, scred_out = CallOutputs(), CallOutputs()
    r.run(ctx, "ach-client", lambda: a.acquire_credentials_handle_async(
        ctx, None, "Sim", SECPKG_CRED_OUTBOUND, CLIENT_AUTH, ccred_out))
    r.run(ctx, "ach-server", lambda: a.acquire_credentials_handle_async(
        ctx, None, "sim", SECPKG_CRED_INBOUND, SERVER_AUTH, scred_out))
    r.note("creds", outputs_view(ccred_out), outputs_view(scred_out))
    r.note("requires_notify", a.async_context_requires_notify(ctx))

    # leg 1: client -> token
    c1 = CallOutputs(output=[SecBuffer(SECBUFFER_TOKEN, b"", 4096)])
    r.run(ctx, "isc-1", lambda: a.initialize_security_context_async(
        ctx, ccred_out.credential, None, "server.test", ISC_REQ["CONNECTION"], None, c1))
    r.note("isc-1 out", outputs_view(c1))
    token = c1.output[0].data if c1.output else b""

    # leg 2 first with half the token: INCOMPLETE_MESSAGE and a MISSING count in input[1]
    half = [SecBuffer(SECBUFFER_TOKEN, token[: len(token) // 2]), SecBuffer(SECBUFFER_EMPTY)]
    s_partial = CallOutputs(output=[SecBuffer(SECBUFFER_TOKEN, b"", 4096)])
    r.run(ctx, "asc-partial", lambda: a.accept_security_context_async(
        ctx, scred_out.credential, None, half, 0, s_partial))
    r.note("asc-partial input", buffers_view(half), half[1].type == SECBUFFER_MISSING, outputs_view(s_partial))

    # then the whole token plus 7 surplus bytes: CONTINUE and an EXTRA count in input[1]
    extra = [SecBuffer(SECBUFFER_TOKEN, token + b"surplus"), SecBuffer(SECBUFFER_EMPTY)]
    s2 = CallOutputs(output=[SecBuffer(SECBUFFER_TOKEN, b"", 4096)])
    r.run(ctx, "asc-2", lambda: a.accept_security_context_async(ctx, scred_out.credential, None, extra, 0, s2))
    r.note("asc-2 input", buffers_view(extra), extra[1].type == SECBUFFER_EXTRA, outputs_view(s2))

    # leg 3: client consumes the server token, sends the final one
    c3 = CallOutputs(output=[SecBuffer(SECBUFFER_TOKEN, b"", 4096)])
    inp3 = [SecBuffer(SECBUFFER_TOKEN, s2.output[0].data if s2.output else b""), SecBuffer(SECBUFFER_EMPTY)]
    r.run(ctx, "isc-3", lambda: a.initialize_security_context_async(
        ctx, ccred_out.credential, c1.new_context, "server.test", ISC_REQ["CONNECTION"], inp3, c3))
    r.note("isc-3 out", outputs_view(c3), c3.new_context == c1.new_context)
    s4 = CallOutputs(output=[SecBuffer(SECBUFFER_TOKEN, b"", 4096)])
    inp4 = [SecBuffer(SECBUFFER_TOKEN, c3.output[0].data if c3.output else b""), SecBuffer(SECBUFFER_EMPTY)]
    r.run(ctx, "asc-4", lambda: a.accept_security_context_async(ctx, None, s2.new_context, inp4, 0, s4))
    r.note("asc-4 out", outputs_view(s4))

    # a too-small output buffer (capacity 3)
    small = CallOutputs(output=[SecBuffer(SECBUFFER_TOKEN, b"", 3)])
    r.run(ctx, "isc-small", lambda: a.initialize_security_context_async(
        ctx, ccred_out.credential, None, "server.test", 0, None, small))
    r.note("isc-small out", outputs_view(small))

    # synchronous calls on the established context
    r.note("qca", a.query_context_attributes(c1.new_context, 4)[0])
    msg = [SecBuffer(1, b"hello")]
    r.note("encrypt", st.name_of(a.encrypt_message(c1.new_context, 0, msg)), buffers_view(msg))

    try:
        r.note("complete_auth_token", st.name_of(a.complete_auth_token(c1.new_context, [SecBuffer(SECBUFFER_TOKEN)])))
    except Unsupported:
        r.note("complete_auth_token", "unsupported")

    # misuse the simulator answers with refusals and caller violations
    r.note("no-callback", st.name_of(a.set_async_notify_callback(ctx, None, None)),
           st.name_of(a.acquire_credentials_handle_async(ctx, None, "Sim", SECPKG_CRED_OUTBOUND, None, CallOutputs())))
    garbage = object()
    r.note("garbage", st.name_of(a.get_async_call_status(garbage)), st.name_of(a.reinit_async_context(garbage)))

    # teardown
    for name, handle in (("del-c", c1.new_context), ("del-s", s2.new_context)):
        r.run(ctx, name, functools.partial(a.delete_security_context_async, ctx, handle))
    r.run(ctx, "free-cc", lambda: a.free_credentials_handle_async(ctx, ccred_out.credential))
    r.run(ctx, "free-sc", lambda: a.free_credentials_handle_async(ctx, scred_out.credential))
    r.run(ctx, "free-again", lambda: a.free_credentials_handle_async(ctx, scred_out.credential))
    a.free_async_context(ctx)
    a.free_async_context(ctx)  # double free: a caller violation, no crash
    a.free_async_context(None)
    with pytest.raises(Unsupported):
        assert a.control is not None
        a.control.inject_fault("no-such-fault")
    r.note("diagnostics", sorted((v.requirement, v.party, v.call) for v in a.diagnostics()))
    a.close()
    r.note("after-close", sorted((v.requirement, v.party) for v in a.diagnostics()))
    return r.log


def misuse_sequence(a: Adapter, mode: str) -> list[Any]:
    """Pending-state refusals (deferred only: the call must still be pending)."""
    log: list[Any] = []
    assert a.control is not None
    ctx = a.create_async_context()
    calls: list[Any] = []
    a.set_async_notify_callback(ctx, lambda c, d: calls.append(d), "D")
    out = CallOutputs()
    log.append(st.name_of(a.acquire_credentials_handle_async(ctx, None, "Sim", SECPKG_CRED_OUTBOUND, None, out)))
    log.append(("written-at-queue", out.written))
    log.append(st.name_of(a.acquire_credentials_handle_async(ctx, None, "Sim", SECPKG_CRED_OUTBOUND, None, out)))
    log.append(st.name_of(a.reinit_async_context(ctx)))
    log.append(st.name_of(a.set_async_notify_callback(ctx, None, None)))
    log.append(st.name_of(a.get_async_call_status(ctx)))
    log.append(len(a.control.pending()))
    log.append(a.control.complete_all())
    log.append((calls, out.written, out.credential is not None, out.expiry))
    log.append(a.control.complete(ctx))
    # free while a notified call is pending: OQ-12, no callback afterwards
    ctx2 = a.create_async_context()
    a.set_async_notify_callback(ctx2, lambda c, d: calls.append(d), "E")
    log.append(st.name_of(a.free_credentials_handle_async(ctx2, out.credential)))
    a.free_async_context(ctx2)
    log.append(a.control.complete_all())
    log.append(list(calls))
    # a callback that raises is the caller's bug, reported as a caller violation
    ctx3 = a.create_async_context()
    def broken(c: Any, d: Any) -> None:
        raise ZeroDivisionError("caller bug")

    a.set_async_notify_callback(ctx3, broken, None)
    a.delete_security_context_async(ctx3, None)
    a.control.complete(ctx3)
    a.free_async_context(ctx3)
    a.free_async_context(ctx)
    log.append(sorted((v.requirement, v.party, v.call) for v in a.diagnostics()))
    a.close()
    return log


# ---- the comparisons ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["deferred", "inline", "threaded"])
@pytest.mark.parametrize("kind", KINDS)
def test_handshake_sequence_matches_in_process(kind: str, mode: str, tcp_agent: str) -> None:
    expected = handshake_sequence(make("inprocess", mode), mode)
    got = handshake_sequence(make(kind, mode, tcp_agent), mode)
    assert got == expected
    flat = repr(expected)
    # the sequence really exercised what it claims to
    assert "SEC_E_INCOMPLETE_MESSAGE" in flat and "SEC_I_CONTINUE_NEEDED" in flat
    assert "SEC_E_INSUFFICIENT_MEMORY" in flat and "SEC_E_INVALID_PARAMETER" in flat


@pytest.mark.parametrize("kind", KINDS)
def test_pending_misuse_matches_in_process(kind: str, tcp_agent: str) -> None:
    expected = misuse_sequence(make("inprocess", "deferred"), "deferred")
    got = misuse_sequence(make(kind, "deferred", tcp_agent), "deferred")
    assert got == expected
    assert ("NOTIFY-1", "caller", None) in expected[-1]


def test_inline_callback_runs_before_the_queue_returns_on_the_caller_thread() -> None:
    a = make("stdio", "inline")
    order: list[str] = []
    main = threading.get_ident()
    ctx = a.create_async_context()
    a.set_async_notify_callback(ctx, lambda c, d: order.append(f"callback main={threading.get_ident() == main}"))
    out = CallOutputs()
    status = a.acquire_credentials_handle_async(ctx, None, "Sim", SECPKG_CRED_OUTBOUND, None, out)
    order.append("returned")
    assert status == st.SEC_E_OK
    assert order == ["callback main=True", "returned"]
    a.free_async_context(ctx)
    a.close()


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_method_is_unsupported_and_the_session_continues(kind: str, tcp_agent: str) -> None:
    a = make(kind, "deferred", tcp_agent)
    from adapters.remote.client import RemoteAdapter

    assert isinstance(a, RemoteAdapter)
    with pytest.raises(Unsupported, match="no_such_method"):
        a.call("no_such_method", {})
    ctx = a.create_async_context()
    assert a.get_async_call_status(ctx) == st.SEC_E_OK
    a.free_async_context(ctx)
    a.close()


def test_bad_adapter_option_is_a_value_error_and_the_agent_is_kept() -> None:
    with pytest.raises(ValueError, match="completion"):
        remote_create({"completion": "sideways"})
    a = remote_create({"completion": "inline"})
    assert a.capabilities().name == "simulator"
    a.close()


def test_pooled_agent_is_reused_with_a_fresh_session() -> None:
    a = remote_create({"completion": "deferred"})
    from adapters.remote.client import RemoteAdapter

    assert isinstance(a, RemoteAdapter)
    pid = a.agent_info["pid"]
    first = a.create_async_context()
    a.close()
    b = remote_create({"completion": "deferred"})
    assert isinstance(b, RemoteAdapter)
    assert b.agent_info["pid"] == pid
    assert b.create_async_context() == first  # handle tables restart with the session
    assert [v.requirement for v in b.diagnostics()] == []  # no leak carried over
    b.close()


def test_callback_metadata_names_the_agent_thread_and_time() -> None:
    a = remote_create({"completion": "deferred"})
    from adapters.remote.client import RemoteAdapter

    assert isinstance(a, RemoteAdapter)
    ctx = a.create_async_context()
    a.set_async_notify_callback(ctx, lambda c, d: None)
    a.delete_security_context_async(ctx, None)
    assert a.control is not None and a.control.complete(ctx)
    info = a.last_callback
    assert info is not None and info.ctx == ctx and info.operation == "delete_security_context_async"
    assert isinstance(info.thread, int) and isinstance(info.time_ns, int) and info.time_ns > 0
    a.free_async_context(ctx)
    a.close()


# ---- the schema describes what the implementation really sends ----------------------------------


def test_agent_traffic_validates_against_the_schema(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    cmd = [sys.executable, "-m", "adapters.remote.agent", "--option", "completion=deferred",
           "--trace", str(trace)]
    a = remote_create({"command": json.dumps(cmd)})
    handshake_sequence(a, "deferred")
    a2 = remote_create({"command": json.dumps(cmd)})  # pooled: second session on the same agent
    from adapters.remote.client import RemoteAdapter

    assert isinstance(a2, RemoteAdapter)
    with pytest.raises(Unsupported):
        a2.call("no_such_method")
    a2.close()
    pool.drain()
    lines = trace.read_text().splitlines()
    assert len(lines) > 100
    def validator(ref: str) -> jsonschema.Draft202012Validator:
        return jsonschema.Draft202012Validator({"$ref": f"#/$defs/{ref}", "$defs": SCHEMA["$defs"]})

    methods: dict[int, str] = {}
    for line in lines:
        direction, text = line[:2], line[2:]
        msg = json.loads(text)
        if direction == "> " and "id" not in msg:  # the client's one notification (held-callbacks)
            ref = "notification.callback_returned"
        elif direction == "> ":
            methods[msg["id"]] = msg["method"]
            ref = f"request.{msg['method']}" if f"request.{msg['method']}" in SCHEMA["$defs"] else "request"
        elif "method" in msg:
            ref = "notification.callback"
        else:
            ref = "response"
        errors = list(validator(ref).iter_errors(msg))
        assert not errors, f"{line[:200]}: {errors[0].message}"
        if direction == "< " and "result" in msg:
            method = methods[msg["id"]]
            result_def = f"result.{method}"
            assert result_def in SCHEMA["$defs"], method
            errs = list(validator(result_def).iter_errors(msg["result"]))
            assert not errs, f"{method}: {errs[0].message}"
    assert {"initialize", "control.complete", "accept_security_context_async", "close", "shutdown"} <= set(
        methods.values()
    )


def test_complete_returns_only_after_the_callback_even_when_the_reader_thread_got_it() -> None:
    """While a callback is awaited the client's reader thread takes the stream; the answer to
    control.complete must still wait for the callback of the notification before it."""
    a = make("stdio", "deferred")
    assert a.control is not None
    for _ in range(3):
        ctx = a.create_async_context()
        done: list[object] = []

        def slow(c: Any, d: Any) -> None:
            time.sleep(0.05)
            d.append("x")

        a.set_async_notify_callback(ctx, slow, done)
        assert a.delete_security_context_async(ctx, None) == st.SEC_E_OK
        time.sleep(0.03)  # the caller is idle: the reader thread now owns the stream
        assert a.control.complete(ctx)
        assert done == ["x"]
        a.free_async_context(ctx)
    a.close()


def test_threaded_completions_reach_an_idle_caller() -> None:
    a = make("stdio", "threaded")
    events = [threading.Event() for _ in range(5)]
    contexts = []
    for event in events:
        ctx = a.create_async_context()
        a.set_async_notify_callback(ctx, lambda c, d: d.set(), event)
        assert a.delete_security_context_async(ctx, None) == st.SEC_E_OK
        contexts.append(ctx)
    assert all(event.wait(5.0) for event in events)  # no call made while waiting
    for ctx in contexts:
        assert a.get_async_call_status(ctx) == st.SEC_E_INVALID_HANDLE  # a NULL CtxtHandle
        a.free_async_context(ctx)
    a.close()


def test_a_late_notification_reaches_an_idle_caller_at_once() -> None:
    """A completion on the implementation's thread arrives after the queue's answer; the
    caller then waits on its own lock.  The callback must run as soon as the line arrives
    (the pump blocks in poll(); no quiet period first).  The agent stamps each notification
    with CLOCK_MONOTONIC, which this process shares, so the delay is measured directly."""
    a = make("stdio", "threaded")
    ctx = a.create_async_context()
    done = threading.Semaphore(0)
    delays: list[float] = []

    def callback(c: Any, d: Any) -> None:
        info = a.last_callback  # set from this notification just before the callback runs
        assert info is not None and info.time_ns is not None
        delays.append((time.monotonic_ns() - info.time_ns) / 1e6)
        done.release()

    a.set_async_notify_callback(ctx, callback, None)
    for _ in range(25):
        assert a.delete_security_context_async(ctx, None) == st.SEC_E_OK
        assert done.acquire(timeout=5.0)
        assert a.reinit_async_context(ctx) == st.STATUS_SUCCESS
    a.free_async_context(ctx)
    a.close()
    delays.sort()
    # The old design let a pump read only after 4 ms without calls: delays were ~6 ms (now ~0.1).
    assert delays[len(delays) // 2] < 2.0, f"callback delays (ms): {[round(x, 2) for x in delays]}"
