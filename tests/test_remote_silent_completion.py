"""Calls that complete without a callback must not capture a later call's completion.

A delete queued with no callback registered (NOTIFY-4/5) completes silently: no callback,
so no ``callback`` notification.  The async context may then be given a callback and used
again (after reinit, or without it: CTX-5/OQ-7 accept the reuse with a caller diagnostic).
The next call's completion, its outputs and its input buffers belong to *that* call.  The
fuzzer found a client that matched the notification to the stale record of the silent
delete instead (regressions/silent-delete-then-acquire-inline.yaml): the acquire's
callback ran with nothing written.

Each sequence runs in-process and through the remote adapter (stdio agent) in every
completion mode; what the caller can observe must be the same, and the facts the scenario
is about (outputs written, input buffers updated, one callback per call) are asserted
directly too, so a sequence that silently stopped exercising them fails.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import pytest

import adapters.simulator
from adapters import status as st
from adapters.api import Adapter, CallOutputs, Handle, SecBuffer, Unsupported
from adapters.async_state import State
from adapters.constants import (
    SECBUFFER_EMPTY,
    SECBUFFER_EXTRA,
    SECBUFFER_TOKEN,
    SECPKG_CRED_INBOUND,
    SECPKG_CRED_OUTBOUND,
)
from adapters.remote import create as remote_create
from adapters.remote import protocol as p
from adapters.remote.client import RemoteAdapter
from adapters.simulator.adapter import AsyncContext, SimulatorAdapter

CLIENT_AUTH = {"user": "alice", "password": "secret", "legs": 3, "token_size": 40, "stream": True}
SERVER_AUTH = {"accounts": {"alice": "secret"}, "legs": 3, "token_size": 40, "stream": True}
MODES = ("inline", "deferred", "threaded")


def make(kind: str, mode: str) -> Adapter:
    if kind == "inprocess":
        return adapters.simulator.create({"completion": mode})
    return remote_create({"completion": mode, "call_timeout_ms": "5000"})


def buffers_view(buffers: list[SecBuffer] | None) -> Any:
    return None if buffers is None else [(b.type, b.data, b.size) for b in buffers]


def outputs_view(out: CallOutputs) -> Any:
    return (out.credential is not None, out.new_context is not None, buffers_view(out.output),
            out.context_attr, out.written)


class Seen(NamedTuple):
    """One callback, as the caller's callback saw it."""

    ctx: Any
    status: str
    outputs: Any  # outputs_view of the call's CallOutputs, None when it has none
    input: Any  # buffers_view of the call's input list, None when it has none


class Caller:
    """Queues calls, completes them as the mode requires, and records what it sees."""

    def __init__(self, adapter: Adapter, mode: str) -> None:
        self.a = adapter
        self.mode = mode
        self.log: list[Any] = []
        self.calls: dict[Any, list[Seen]] = {}  # callback arrivals per callback data
        self.arrived = threading.Condition()
        self.watch: CallOutputs | None = None  # outputs of the call now queued, seen from its callback
        self.input: list[SecBuffer] | None = None

    def callback(self, ctx: Any, data: Any) -> None:
        # What the callback sees is what GEN-10/OQ-10 promise: everything written before it runs.
        seen = Seen(ctx, st.name_of(self.a.get_async_call_status(ctx)),
                    None if self.watch is None else outputs_view(self.watch), buffers_view(self.input))
        with self.arrived:
            self.calls.setdefault(data, []).append(seen)
            self.arrived.notify_all()

    def register(self, ctx: Any, data: Any) -> None:
        self.log.append(("set", data, st.name_of(self.a.set_async_notify_callback(ctx, self.callback, data))))

    def clear(self, ctx: Any) -> None:
        self.log.append(("clear", st.name_of(self.a.set_async_notify_callback(ctx, None, None))))

    def finish(self, ctx: Any, data: Any | None, before: int) -> None:
        """Let the call queued on ``ctx`` complete; ``data`` None: a silent call (no callback),
        else wait for callback number ``before + 1`` with that data."""
        if self.mode == "deferred":
            assert self.a.control is not None
            assert self.a.control.complete(ctx)
        deadline = time.monotonic() + 5.0
        if data is None:  # no callback to wait for: the status stops reading pending
            while self.a.get_async_call_status(ctx) == st.SEC_I_ASYNC_CALL_PENDING:
                assert time.monotonic() < deadline, "silent call never completed"
                time.sleep(0.001)
            return
        with self.arrived:
            while len(self.calls.get(data, ())) <= before:
                assert self.arrived.wait(max(0.0, deadline - time.monotonic())), f"no callback for {data}"

    def run(self, name: str, ctx: Any, data: Any | None, queue: Callable[[], int]) -> int:
        before = len(self.calls.get(data, ()))
        status = queue()
        self.log.append((name, "queue", st.name_of(status)))
        if status == st.SEC_E_OK:
            self.finish(ctx, data, before)
            self.log.append((name, "final", st.name_of(self.a.get_async_call_status(ctx))))
        return status


def silent_then(a: Adapter, mode: str, prefix: str, follow: str) -> list[Any]:
    """A silent delete on ``ctx`` (reached as ``prefix`` says), then ``follow`` on the same ctx."""
    c = Caller(a, mode)
    # Handles the follow-up call needs, made on a helper context.
    helper = a.create_async_context()
    c.register(helper, "helper")
    ccred, scred = CallOutputs(), CallOutputs()
    c.run("ach-client", helper, "helper", lambda: a.acquire_credentials_handle_async(
        helper, None, "Sim", SECPKG_CRED_OUTBOUND, CLIENT_AUTH, ccred))
    a.reinit_async_context(helper)
    c.run("ach-server", helper, "helper", lambda: a.acquire_credentials_handle_async(
        helper, None, "Sim", SECPKG_CRED_INBOUND, SERVER_AUTH, scred))
    a.reinit_async_context(helper)
    leg1 = CallOutputs(output=[SecBuffer(SECBUFFER_TOKEN, b"", 4096)])
    c.run("isc-helper", helper, "helper", lambda: a.initialize_security_context_async(
        helper, ccred.credential, None, "server.test", 0, None, leg1))
    a.reinit_async_context(helper)
    assert leg1.output is not None and leg1.output[0].data, "the helper leg produced no token"

    ctx = a.create_async_context()
    if prefix == "cleared":  # NOTIFY-5: a registration cleared before the delete
        c.register(ctx, "early")
        c.clear(ctx)
    silent_runs = 2 if prefix == "twice" else 1
    for i in range(silent_runs):
        if i:
            c.log.append(("reinit-between", st.name_of(a.reinit_async_context(ctx))))
        c.run("silent-delete", ctx, None, lambda: a.delete_security_context_async(ctx, None))
    if prefix in ("reinit", "twice"):
        c.log.append(("reinit", st.name_of(a.reinit_async_context(ctx))))
    if prefix == "sync":  # synchronous calls in between (answered at once, never queued)
        try:
            completed = st.name_of(a.complete_auth_token(leg1.new_context, [SecBuffer(SECBUFFER_TOKEN)]))
        except Unsupported:
            completed = "unsupported"
        c.log.append(("sync", completed, st.name_of(a.query_context_attributes(leg1.new_context, 4)[0])))
    c.register(ctx, "late")

    out = CallOutputs(output=[SecBuffer(SECBUFFER_TOKEN, b"", 4096)])
    input: list[SecBuffer] | None = None
    queue: Callable[[], int]
    if follow == "acquire":
        out = CallOutputs()
        queue = lambda: a.acquire_credentials_handle_async(ctx, None, "Sim", SECPKG_CRED_OUTBOUND, None, out)  # noqa: E731
    elif follow == "initialize":
        queue = lambda: a.initialize_security_context_async(  # noqa: E731
            ctx, ccred.credential, None, "server.test", 0, None, out)
    elif follow == "accept":
        # the whole token plus surplus bytes: the input list comes back with an EXTRA count
        input = [SecBuffer(SECBUFFER_TOKEN, leg1.output[0].data + b"surplus"), SecBuffer(SECBUFFER_EMPTY)]
        queue = lambda: a.accept_security_context_async(ctx, scred.credential, None, input, 0, out)  # noqa: E731
    elif follow == "delete":
        queue = lambda: a.delete_security_context_async(ctx, leg1.new_context)  # noqa: E731
    else:
        assert follow == "free_credentials"
        queue = lambda: a.free_credentials_handle_async(ctx, ccred.credential)  # noqa: E731
    if follow in ("acquire", "initialize", "accept"):
        c.watch = out
    c.input = input
    c.run(follow, ctx, "late", queue)
    late = c.calls.get("late", [])
    c.log.append(("late-callbacks", [(x.ctx == ctx, x.status, x.outputs, x.input) for x in late]))
    assert len(late) == 1, f"{follow}: {len(late)} callbacks"
    if c.watch is not None:
        # GEN-10: the call's own outputs were written at its completion, before its callback.
        assert late[0].outputs[-1] is True, f"{follow} after a silent delete: its callback saw nothing written"
        c.log.append(("outputs", outputs_view(out)))
    if input is not None:
        # SCH-23/24: the EXTRA count was written into the caller's input list before the callback.
        assert late[0].input[1][0] == SECBUFFER_EXTRA, late[0].input
        c.log.append(("input", buffers_view(input)))
    c.watch, c.input = None, None
    if isinstance(a, RemoteAdapter):
        # the notification named the call it completed
        assert a.last_callback is not None and a.last_callback.operation == follow_call(follow)
    # one more round on the same context, after reinit: still matched to the right call
    c.log.append(("reinit-after", st.name_of(a.reinit_async_context(ctx))))
    again = CallOutputs()
    c.watch = again
    c.run("acquire-again", ctx, "late", lambda: a.acquire_credentials_handle_async(
        ctx, None, "Sim", SECPKG_CRED_OUTBOUND, None, again))
    late = c.calls.get("late", [])
    c.log.append(("again", outputs_view(again), len(late)))
    assert len(late) == 2 and late[1].outputs[-1] is True
    a.free_async_context(ctx)
    a.free_async_context(helper)
    c.log.append(("diagnostics", sorted((v.requirement, v.party, v.call) for v in a.diagnostics())))
    a.close()
    return c.log


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("follow", ["acquire", "initialize", "accept", "delete", "free_credentials"])
def test_call_after_a_silent_delete_gets_its_own_completion(mode: str, follow: str) -> None:
    expected = silent_then(make("inprocess", mode), mode, "fresh", follow)
    got = silent_then(make("remote", mode), mode, "fresh", follow)
    assert got == expected
    # The reuse without reinit is the caller's CTX-5 note, in both.
    assert ("CTX-5", "caller", follow_call(follow)) in expected[-1][1]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("prefix", ["reinit", "cleared", "twice", "sync"])
def test_silent_delete_variants_keep_calls_matched(mode: str, prefix: str) -> None:
    expected = silent_then(make("inprocess", mode), mode, prefix, "acquire")
    got = silent_then(make("remote", mode), mode, prefix, "acquire")
    assert got == expected


# ---- a recycled async-context handle starts with no registration ---------------------------------


class RecyclingSimulator(SimulatorAdapter):
    """The simulator, handing a freed async context's handle to the next create, as an
    allocator reusing memory does (and an agent minting handle strings from addresses): the
    new context has the old handle and nothing of its registration."""

    def __init__(self, completion: str) -> None:
        super().__init__(completion=completion)
        self._spare: list[AsyncContext] = []

    def free_async_context(self, ctx: Handle | None) -> None:
        super().free_async_context(ctx)
        if type(ctx) is AsyncContext and ctx.state is State.FREED and ctx not in self._spare:
            self._spare.append(ctx)

    def create_async_context(self) -> Handle | None:
        if not self._spare:
            return super().create_async_context()
        ctx = self._spare.pop()
        AsyncContext.__init__(ctx)  # a new context in the old memory
        self._live_async.add(ctx)
        return ctx


def recycling_simulator(options: dict[str, str]) -> Adapter:
    """Agent factory (``--adapter tests.test_remote_silent_completion:recycling_simulator``)."""
    return RecyclingSimulator(options.get("completion", "threaded"))


def recycled_sequence(a: Adapter, mode: str) -> list[Any]:
    """A notified call, free; the recycled handle gets a silent delete, then a notified acquire."""
    c = Caller(a, mode)
    first = a.create_async_context()
    c.register(first, "first")
    c.run("delete", first, "first", lambda: a.delete_security_context_async(first, None))
    a.free_async_context(first)
    ctx = a.create_async_context()
    c.log.append(("recycled", ctx == first, a.async_context_requires_notify(ctx)))
    assert ctx == first, "the implementation did not recycle the handle"
    c.run("silent-delete", ctx, None, lambda: a.delete_security_context_async(ctx, None))
    c.register(ctx, "second")
    out = CallOutputs()
    c.watch = out
    c.run("acquire", ctx, "second", lambda: a.acquire_credentials_handle_async(
        ctx, None, "Sim", SECPKG_CRED_OUTBOUND, None, out))
    second = c.calls.get("second", [])
    c.log.append(("second", [(x.status, x.outputs) for x in second], len(c.calls.get("first", []))))
    assert len(second) == 1 and second[0].outputs[-1] is True, second
    a.free_async_context(ctx)
    c.log.append(("diagnostics", sorted((v.requirement, v.party, v.call) for v in a.diagnostics())))
    a.close()
    return c.log


@pytest.mark.parametrize("mode", MODES)
def test_a_recycled_handle_starts_unregistered_on_both_sides(mode: str) -> None:
    expected = recycled_sequence(RecyclingSimulator(mode), mode)
    agent = [sys.executable, "-m", "adapters.remote.agent",
             "--adapter", "tests.test_remote_silent_completion:recycling_simulator"]
    got = recycled_sequence(remote_create({"command": json.dumps(agent), "completion": mode}), mode)
    assert got == expected


# ---- the matching rule itself -------------------------------------------------------------------


@dataclass
class Call:
    name: str
    silent: bool


def names(calls: deque[Call]) -> list[str]:
    return [c.name for c in calls]


def test_take_completed_skips_and_drops_silent_calls_before_the_notified_one() -> None:
    s1, s2, n1, n2 = Call("s1", True), Call("s2", True), Call("n1", False), Call("n2", False)
    calls = deque([s1, s2, n1, n2])
    assert p.take_completed(calls) is n1
    assert names(calls) == ["n2"]  # the silent calls before n1 are over
    assert p.take_completed(calls) is n2
    assert p.take_completed(calls) is None


def test_take_completed_gives_a_stray_callback_the_oldest_silent_call() -> None:
    s1, s2 = Call("s1", True), Call("s2", True)
    calls = deque([s1, s2])
    assert p.take_completed(calls) is s1
    assert names(calls) == ["s2"]


def test_accepting_a_call_forgets_the_silent_calls_queued_before_it_only() -> None:
    s1, n1, s2, new, later = Call("s1", True), Call("n1", False), Call("s2", True), Call("new", False), \
        Call("later", True)
    calls = deque([s1, n1, s2, new, later])
    p.drop_silent_before(calls, new)
    assert names(calls) == ["n1", "new", "later"]  # a notified call may still be calling back
    gone = Call("gone", False)  # an inline completion already took the accepted call
    calls = deque([Call("s3", True), n1])
    p.drop_silent_before(calls, gone)
    assert names(calls) == ["n1"]
    calls = deque([new, Call("s4", True)])
    p.drop_silent_before(calls, new)
    assert names(calls) == ["new", "s4"]


def follow_call(follow: str) -> str:
    return {
        "acquire": "acquire_credentials_handle_async",
        "initialize": "initialize_security_context_async",
        "accept": "accept_security_context_async",
        "delete": "delete_security_context_async",
        "free_credentials": "free_credentials_handle_async",
    }[follow]
