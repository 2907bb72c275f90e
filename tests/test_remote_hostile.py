"""The remote client against hostile agents: every failure ends in the right exception or
violation within its time limit, the agent is reaped, and other sessions are unharmed."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters import status as st
from adapters.api import CallOutputs, ImplementationCrashed, ImplementationHung, Violation
from adapters.constants import SECPKG_CRED_OUTBOUND
from adapters.remote import create
from adapters.remote.client import RemoteAdapter
from adapters.remote.connection import MAX_RECORDED_VIOLATIONS

HOSTILE = Path(__file__).resolve().parent / "hostile_agents" / "hostile.py"
TIMEOUT_MS = 500
# Python start-up on a loaded 2-core machine; only the first initialize gets this long.
START_MS = 5000
SLACK_S = 1.5  # kill + reap + scheduling noise on top of the time limit


def hostile(mode: str, trigger: str | None = None, **extra: str) -> RemoteAdapter:
    argv = [sys.executable, str(HOSTILE), mode] + ([trigger] if trigger else [])
    options = {"command": json.dumps(argv), "call_timeout_ms": str(TIMEOUT_MS), "start_timeout_ms": str(START_MS),
               **extra}
    adapter = create(options)
    assert isinstance(adapter, RemoteAdapter)
    return adapter


def reaped(adapter: RemoteAdapter) -> bool:
    proc = adapter._conn.process
    return proc is not None and proc.returncode is not None


def requirements(violations: list[Violation]) -> set[str]:
    return {v.requirement for v in violations if v.party == "implementation"}


@pytest.fixture(scope="module")
def bystander() -> Iterator[RemoteAdapter]:
    """A healthy simulator session that lives through every hostile test."""
    adapter = create({"completion": "deferred"})
    assert isinstance(adapter, RemoteAdapter)
    yield adapter
    adapter.close()


@pytest.fixture(autouse=True)
def others_unharmed(bystander: RemoteAdapter) -> Iterator[None]:
    ctx = bystander.create_async_context()
    seen: list[object] = []
    bystander.set_async_notify_callback(ctx, lambda c, d: seen.append(d), "before")
    out = CallOutputs()
    assert bystander.acquire_credentials_handle_async(ctx, None, "Sim", SECPKG_CRED_OUTBOUND, None, out) == 0
    yield
    # the call queued before the hostile test still completes, with its outputs intact
    assert bystander.control is not None and bystander.control.complete(ctx)
    assert seen == ["before"] and out.written and out.credential is not None
    assert bystander.get_async_call_status(ctx) == st.SEC_E_OK
    bystander.free_async_context(ctx)
    # and a brand-new session works too
    fresh = create({"completion": "inline"})
    assert fresh.get_async_call_status(fresh.create_async_context()) == st.SEC_E_OK
    fresh.close()


def timed_failure(adapter: RemoteAdapter, exc: type[BaseException] | tuple[type[BaseException], ...],
                  match: str | None = None) -> tuple[float, BaseException]:
    ctx = adapter.create_async_context()
    started = time.monotonic()
    with pytest.raises(exc, match=match) as info:
        adapter.get_async_call_status(ctx)
    return time.monotonic() - started, info.value


# ---- death and silence ---------------------------------------------------------------------------


def test_hang_is_reported_as_hung_within_the_call_timeout_and_the_agent_is_killed() -> None:
    a = hostile("hang")
    elapsed, _exc = timed_failure(a, ImplementationHung, "get_async_call_status")
    assert TIMEOUT_MS / 1000 * 0.9 <= elapsed < TIMEOUT_MS / 1000 + SLACK_S
    assert reaped(a)
    with pytest.raises(ImplementationCrashed, match="hung"):  # later calls fail at once
        a.get_async_call_status("a1")
    a.close()


def test_exit_mid_call_is_a_crash_with_exit_code_last_call_and_stderr() -> None:
    a = hostile("exit")
    elapsed, exc = timed_failure(a, ImplementationCrashed)
    message = str(exc)
    assert "exited with code 3" in message and "get_async_call_status" in message
    assert "giving up mid-call" in message  # the agent's stderr tail is part of the diagnosis
    assert elapsed < SLACK_S and reaped(a)
    a.close()


def test_death_by_signal_names_the_signal() -> None:
    a = hostile("signal")
    _, exc = timed_failure(a, ImplementationCrashed)
    assert "signal 15 (SIGTERM)" in str(exc)
    assert reaped(a)


def test_death_while_a_callback_is_awaited_is_noticed_without_a_call() -> None:
    a = hostile("exit_after_queue", "delete_security_context_async")
    ctx = a.create_async_context()
    a.set_async_notify_callback(ctx, lambda c, d: None)
    assert a.delete_security_context_async(ctx, None) == st.SEC_E_OK
    deadline = time.monotonic() + 3
    while a._conn.dead is None and time.monotonic() < deadline:  # the pump reads the EOF
        time.sleep(0.01)
    started = time.monotonic()
    with pytest.raises(ImplementationCrashed, match="exited with code 0"):
        a.get_async_call_status(ctx)
    assert time.monotonic() - started < 0.2 and reaped(a)
    a.close()


def test_slow_answer_within_the_limit_is_fine_and_beyond_it_is_hung() -> None:
    a = hostile("slow:0.2")
    ctx = a.create_async_context()
    assert a.get_async_call_status(ctx) == st.SEC_E_OK
    a.close()
    b = hostile("slow:3")
    elapsed, _ = timed_failure(b, ImplementationHung)
    assert elapsed < TIMEOUT_MS / 1000 + SLACK_S and reaped(b)


def test_hang_in_initialize_ends_create_within_the_start_timeout() -> None:
    argv = [sys.executable, str(HOSTILE), "hang_initialize"]
    started = time.monotonic()
    with pytest.raises(ImplementationHung, match="initialize"):
        create({"command": json.dumps(argv), "start_timeout_ms": "800"})
    assert time.monotonic() - started < 0.8 + SLACK_S


def test_missing_agent_program_is_a_crash_not_a_traceback() -> None:
    with pytest.raises(ImplementationCrashed, match="cannot start remote agent"):
        create({"command": "/nonexistent/agent --flag"})


# ---- broken streams --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["garbage", "notjsonrpc"])
def test_unreadable_answer_breaks_proto_1(mode: str) -> None:
    a = hostile(mode)
    elapsed, _exc = timed_failure(a, ImplementationCrashed, "PROTO-1")
    assert elapsed < SLACK_S and reaped(a)
    assert "PROTO-1" in requirements(a.diagnostics())


def test_100_mb_line_is_cut_at_max_message_bytes() -> None:
    a = hostile("huge", max_message_bytes=str(1 << 20))
    elapsed, _exc = timed_failure(a, ImplementationCrashed, "PROTO-2")
    assert elapsed < TIMEOUT_MS / 1000 + SLACK_S and reaped(a)
    assert len(a._conn._reader._buf) <= (1 << 20) + (1 << 16) * 2  # never buffered the 100 MB
    assert "PROTO-2" in requirements(a.diagnostics())


def test_answer_with_a_wrong_id_breaks_proto_3() -> None:
    a = hostile("wrong_id")
    _, _exc = timed_failure(a, ImplementationCrashed, "PROTO-3")
    assert reaped(a)
    assert "PROTO-3" in requirements(a.diagnostics())


def test_bad_initialize_breaks_proto_4() -> None:
    argv = [sys.executable, str(HOSTILE), "bad_initialize"]
    with pytest.raises(ImplementationCrashed, match="PROTO-4"):
        create({"command": json.dumps(argv), "start_timeout_ms": str(START_MS)})


def test_notification_flood_ends_within_the_timeout_with_capped_violations() -> None:
    a = hostile("flood")
    elapsed, _ = timed_failure(a, (ImplementationHung, ImplementationCrashed))
    assert elapsed < TIMEOUT_MS / 1000 + SLACK_S and reaped(a)
    found = a.diagnostics()
    assert "PROTO-5" in requirements(found)
    assert len(found) <= MAX_RECORDED_VIOLATIONS + 1  # capped, with one summary line


# ---- bad notifications on a stream that stays usable -------------------------------------------------


def test_callback_for_an_unknown_context_is_proto_5_and_the_call_still_answers() -> None:
    a = hostile("unknown_ctx")
    ctx = a.create_async_context()
    assert a.get_async_call_status(ctx) == st.SEC_E_OK
    assert requirements(a.diagnostics()) == {"PROTO-5"}
    a.close()
    assert reaped(a)  # an agent that broke the protocol is not pooled


def test_unregistered_callback_data_is_proto_6_and_no_callback_runs() -> None:
    a = hostile("bad_data", "delete_security_context_async")
    ctx = a.create_async_context()
    calls: list[object] = []
    a.set_async_notify_callback(ctx, lambda c, d: calls.append(d), "mine")
    assert a.delete_security_context_async(ctx, None) == st.SEC_E_OK
    assert calls == []
    assert requirements(a.diagnostics()) == {"PROTO-6"}
    a.close()


def test_duplicate_callback_runs_the_callback_once_and_is_proto_7() -> None:
    a = hostile("duplicate", "delete_security_context_async")
    ctx = a.create_async_context()
    calls: list[tuple[object, object]] = []
    threads: list[int] = []

    def callback(c: object, d: object) -> None:
        calls.append((c, d))
        threads.append(threading.get_ident())

    a.set_async_notify_callback(ctx, callback, "mine")
    assert a.delete_security_context_async(ctx, None) == st.SEC_E_OK
    assert calls == [(ctx, "mine")]
    assert requirements(a.diagnostics()) == {"PROTO-7"}
    a.close()


def test_request_from_the_agent_is_proto_10() -> None:
    a = hostile("request")
    ctx = a.create_async_context()
    assert a.get_async_call_status(ctx) == st.SEC_E_OK
    assert requirements(a.diagnostics()) == {"PROTO-10"}
    a.close()


def test_well_behaved_hostile_agent_is_pooled_and_reused() -> None:
    """The script itself is a valid agent when its trigger never comes."""
    a = hostile("hang", "never_called")
    pid = a._conn.process.pid if a._conn.process else None
    a.get_async_call_status(a.create_async_context())
    a.close()
    assert not reaped(a)
    b = hostile("hang", "never_called")
    assert b._conn.process is not None and b._conn.process.pid == pid
    b.close()


def test_pooled_agent_idle_too_long_is_shut_down_not_reused() -> None:
    a = hostile("hang", "never_called", idle_timeout_ms="50")
    first = a._conn.process
    a.close()
    assert first is not None and first.returncode is None  # pooled, alive
    time.sleep(0.15)
    b = hostile("hang", "never_called", idle_timeout_ms="50")
    assert b._conn.process is not None and b._conn.process.pid != first.pid
    assert first.returncode is not None  # shut down and reaped when found stale
    b.close()
