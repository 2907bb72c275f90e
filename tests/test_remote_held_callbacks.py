"""Held callbacks (docs/protocol.md, section 5): calls a callback makes reach the
implementation while its callback is still running, as in-process.

The two simulator mutants that misbehave only then (``reinit-in-callback-drops-callback``,
``free-in-callback-crashes``) are driven in-process and through the agent, in each
completion mode, and what the caller observes must be the same.  Without the extension the
remote outcome differs (the calls arrive after the implementation's callback returned):
``test_without_the_extension_the_gap_is_back`` shows it, so each comparison here fails when
the extension is not in force.  Then the failure paths: a token never returned, a client
dying while the agent holds a callback, and an agent that does not accept the extension.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import adapters.simulator
from adapters.api import Adapter, CallOutputs, ImplementationCrashed
from adapters.constants import SECPKG_CRED_OUTBOUND
from adapters.remote import create as remote_create
from adapters.remote import pool
from adapters.remote.client import RemoteAdapter

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = Path(__file__).resolve().parent / "hostile_agents" / "hostile.py"
AUTH = {"token_size": 4}
MODES = ("inline", "deferred", "threaded")


def _remote(options: dict[str, str]) -> RemoteAdapter:
    adapter = remote_create(options)
    assert isinstance(adapter, RemoteAdapter)
    return adapter


def _acquire(adapter: Adapter, ctx: Any) -> int:
    return adapter.acquire_credentials_handle_async(ctx, None, "Sim", SECPKG_CRED_OUTBOUND, AUTH, CallOutputs())


def observe(adapter: Adapter, mode: str, action: str) -> list[Any]:
    """One context whose first callback does ``action`` (``reinit`` or ``free``); after a
    reinit the caller queues again and waits for that call's callback (NOTIFY-7: the
    registration survives a reinit).  Returns what the caller can see, handles left out."""
    seen: list[Any] = []
    control = adapter.control
    assert control is not None
    got = threading.Event()
    first = [True]

    def callback(ctx: Any, data: Any) -> None:
        seen.append(("callback", data, adapter.get_async_call_status(ctx)))
        if first.pop() if first else False:
            if action == "reinit":
                seen.append(("reinit", adapter.reinit_async_context(ctx)))
            else:
                adapter.free_async_context(ctx)
                seen.append(("freed",))
        got.set()

    def step(call: Any) -> None:
        try:
            seen.append(("returned", call()))
        except ImplementationCrashed:
            seen.append(("crashed",))
        if mode == "deferred":
            try:
                seen.append(("completed", control.complete_all()))
            except ImplementationCrashed:
                seen.append(("crashed",))
        seen.append(("called back", got.wait(1.0)))
        got.clear()

    ctx = adapter.create_async_context()
    assert adapter.set_async_notify_callback(ctx, callback, "data") == 0
    step(lambda: _acquire(adapter, ctx))
    if action == "reinit" and ("crashed",) not in seen:
        step(lambda: _acquire(adapter, ctx))  # the mutant dropped the registration: no callback
        seen.append(("after", adapter.get_async_call_status(ctx)))
        adapter.free_async_context(ctx)
    diagnostics = sorted((v.requirement, v.party) for v in adapter.diagnostics())
    adapter.close()
    return [*seen, ("diagnostics", diagnostics)]


def _options(mutant: str, mode: str) -> dict[str, str]:
    return {"completion": mode, **({"mutant": mutant} if mutant else {})}


def in_process(mutant: str, mode: str, action: str) -> list[Any]:
    return observe(adapters.simulator.create(_options(mutant, mode)), mode, action)


def remote(mutant: str, mode: str, action: str, **extra: str) -> list[Any]:
    adapter = _remote({**_options(mutant, mode), **extra})
    assert adapter.held_callbacks == (extra.get("held_callbacks", "true") == "true")
    return observe(adapter, mode, action)


CASES = [("reinit-in-callback-drops-callback", "reinit"), ("free-in-callback-crashes", "free")]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("mutant", "action"), CASES)
def test_calls_from_inside_a_held_callback_reach_the_implementation_in_it(mutant: str, action: str,
                                                                        mode: str) -> None:
    expected = in_process(mutant, mode, action)
    assert remote(mutant, mode, action) == expected
    # The reference simulator too: the same run, no finding.
    assert remote("", mode, action) == in_process("", mode, action)


@pytest.mark.parametrize("mode", ("inline", "deferred"))
@pytest.mark.parametrize(("mutant", "action"), CASES)
def test_without_the_extension_the_gap_is_back(mutant: str, action: str, mode: str) -> None:
    """The v1 base behaviour (client option held_callbacks=false): the defect is missed.
    This is what the tests above would see if the extension did nothing."""
    assert remote(mutant, mode, action, held_callbacks="false") != in_process(mutant, mode, action)


def test_nested_queue_completes_inline_inside_the_held_callback() -> None:
    """Inline: a call queued from inside the callback completes (and calls back) before the
    outer callback returns, on the agent's reading thread, nested, as in-process."""
    def run(adapter: Adapter) -> list[str]:
        events: list[str] = []

        def callback(ctx: Any, data: Any) -> None:
            events.append(f"enter {data}")
            if data == 1:
                adapter.reinit_async_context(ctx)
                adapter.set_async_notify_callback(ctx, callback, 2)
                _acquire(adapter, ctx)
            events.append(f"leave {data}")

        ctx = adapter.create_async_context()
        adapter.set_async_notify_callback(ctx, callback, 1)
        _acquire(adapter, ctx)
        adapter.free_async_context(ctx)
        adapter.close()
        return events

    expected = run(adapters.simulator.create({"completion": "inline"}))
    assert expected == ["enter 1", "enter 2", "leave 2", "leave 1"]
    assert run(_remote({"completion": "inline"})) == expected


# ---- failure paths ---------------------------------------------------------------------------


def test_a_token_never_returned_is_given_up_and_the_run_goes_on() -> None:
    """The caller's callback outlasts the hold timeout (the per-call timeout): the agent
    releases the implementation, keeps serving, and reports PROTO-12 against the caller."""
    adapter = _remote({"completion": "deferred", "call_timeout_ms": "300"})
    assert adapter.held_callbacks
    control = adapter.control
    assert control is not None
    ran: list[int] = []

    def slow(ctx: Any, data: Any) -> None:
        time.sleep(0.9)
        ran.append(data)

    ctx = adapter.create_async_context()
    adapter.set_async_notify_callback(ctx, slow, 7)
    assert _acquire(adapter, ctx) == 0
    started = time.monotonic()
    assert control.complete(ctx) is True
    assert ran == [7]
    assert time.monotonic() - started < 3.0
    # The session goes on: the late token is ignored, the next calls are answered.
    assert adapter.get_async_call_status(ctx) == 0
    adapter.set_async_notify_callback(ctx, lambda c, d: ran.append(d), 8)
    adapter.reinit_async_context(ctx)
    assert _acquire(adapter, ctx) == 0
    assert control.complete(ctx) is True
    assert ran == [7, 8]
    found = [v for v in adapter.diagnostics() if v.requirement == "PROTO-12"]
    assert len(found) == 1 and found[0].party == "caller", found
    assert "300 ms" in found[0].message
    adapter.free_async_context(ctx)
    adapter.close()


def _agent(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "adapters.remote.agent", "--adapter", "simulator", *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, env=pool._child_env(),
    )


def _send(proc: subprocess.Popen[bytes], rid: int | None, method: str, params: dict[str, Any]) -> None:
    assert proc.stdin is not None
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if rid is not None:
        msg["id"] = rid
    proc.stdin.write(json.dumps(msg).encode() + b"\n")
    proc.stdin.flush()


def _read(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any] | None:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        return None
    line = proc.stdout.readline()
    return json.loads(line) if line else None


@pytest.mark.parametrize("mode", MODES)
def test_the_client_dying_while_a_callback_is_held_ends_the_agent(mode: str) -> None:
    proc = _agent("--option", f"completion={mode}")
    try:
        _send(proc, 1, "initialize", {"protocol": "1", "extensions": {"held-callbacks": {"timeout_ms": 60000}}})
        assert _read(proc, 15.0)["result"]["extensions"] == {"held-callbacks": {"timeout_ms": 60000}}  # type: ignore[index]
        _send(proc, 2, "create_async_context", {})
        assert _read(proc, 5.0) == {"jsonrpc": "2.0", "id": 2, "result": {"ctx": "a1"}}
        _send(proc, 3, "set_async_notify_callback", {"ctx": "a1", "callback": True, "callback_data": 1})
        assert _read(proc, 5.0)["result"] == {"status": 0}  # type: ignore[index]
        _send(proc, 4, "acquire_credentials_handle_async",
              {"ctx": "a1", "principal": None, "package": "Sim", "credential_use": 2, "auth_data": AUTH})
        if mode == "deferred":
            assert _read(proc, 5.0)["result"] == {"status": 0}  # type: ignore[index]
            _send(proc, 5, "control.complete", {"ctx": "a1"})
        if mode == "threaded":
            assert _read(proc, 5.0)["result"] == {"status": 0}  # type: ignore[index]
        note = _read(proc, 5.0)
        assert note is not None and note["method"] == "callback" and type(note["params"].get("hold")) is int, note
        # Held: nothing more comes until the token is returned (inline and deferred: not the
        # answer of the call that completed).
        assert _read(proc, 0.5) is None
        # The client dies without returning it: the agent must not wait out its 60 s.
        started = time.monotonic()
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(10.0) == 0
        assert time.monotonic() - started < 5.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_an_agent_that_does_not_accept_keeps_the_v1_behaviour() -> None:
    """A v1 agent ignores the offer (the hostile agent, in a mode whose trigger never comes,
    answers any notification it gets with an error that would break the stream), and the
    real agent refuses it with --no-held-callbacks: callbacks run, no token is sent back."""
    argv = [sys.executable, str(HOSTILE), "hang", "never_called"]
    adapter = _remote({"command": json.dumps(argv), "start_timeout_ms": "5000"})
    assert adapter.held_callbacks is False
    seen: list[Any] = []
    ctx = adapter.create_async_context()
    adapter.set_async_notify_callback(ctx, lambda c, d: seen.append(d), None)
    for _ in range(3):
        assert _acquire(adapter, ctx) == 0  # completes inline: its callback came first
    assert adapter.get_async_call_status(ctx) == 0  # the stream is intact
    assert len(seen) == 3
    assert adapter.diagnostics() == []
    adapter.close()

    refusing = [sys.executable, "-m", "adapters.remote.agent", "--adapter", "simulator", "--no-held-callbacks",
                "--option", "completion=inline"]
    adapter = _remote({"command": json.dumps(refusing), "start_timeout_ms": "5000"})
    assert adapter.held_callbacks is False
    adapter.close()
    assert _remote({"completion": "inline"}).held_callbacks is True  # the same agent, accepting


def test_the_offer_carries_the_call_timeout() -> None:
    proc = _agent()
    try:
        _send(proc, 1, "initialize", {"protocol": "1", "extensions": {"held-callbacks": {"timeout_ms": 1234},
                                                                     "unknown-thing": {}}})
        answer = _read(proc, 15.0)
        assert answer is not None and answer["result"]["extensions"] == {"held-callbacks": {"timeout_ms": 1234}}
        _send(proc, 2, "initialize", {"protocol": "1"})
        answer = _read(proc, 5.0)
        assert answer is not None and "extensions" not in answer["result"]  # nothing offered: plain v1
        _send(proc, 3, "shutdown", {})
        assert _read(proc, 5.0) == {"jsonrpc": "2.0", "id": 3, "result": {}}
        assert proc.wait(5.0) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_late_and_unknown_tokens_are_ignored() -> None:
    proc = _agent()
    try:
        _send(proc, 1, "initialize", {"protocol": "1", "extensions": {"held-callbacks": {"timeout_ms": 100}}})
        assert _read(proc, 15.0) is not None
        _send(proc, None, "callback_returned", {"hold": 99})
        _send(proc, None, "callback_returned", {"hold": "x"})
        _send(proc, 2, "create_async_context", {})
        assert _read(proc, 5.0) == {"jsonrpc": "2.0", "id": 2, "result": {"ctx": "a1"}}
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(5.0) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

