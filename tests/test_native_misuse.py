"""Native adapter: handle misuse passed through to sspi-rs' libsspi, one child process each.

Double delete, double free, use after delete/free and garbage handles are caller misuse:
the adapter must report them (deterministic, checked here) and still hand them to the
library, whose reaction is the finding.  libsspi dereferences the handle values, so these
calls abort, segfault or deadlock -- exactly why the native adapter is isolated by
default.  The ``xfail(strict=True)`` tests state the contract's answer (SHUT-5, CALL-25,
CALL-27); they XPASS and fail if the library is ever fixed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("sspilib", reason="sspilib (which ships sspi-rs' libsspi) is not installed")

ROOT = Path(__file__).resolve().parents[1]

PRELUDE = """
import json, os, sys, threading
from adapters import status as st
from adapters.api import CallOutputs, SecBuffer
from adapters.native import create_inprocess
from adapters.native.driver import acquire, initialize, accept, delete, free, token
from adapters.native.handles import INVALID_HANDLE

AUTH = {"username": "user", "domain": "DOMAIN", "password": "Password01"}
adapter = create_inprocess({"workers": "1"})

def emit(**fields):
    print(json.dumps(fields), flush=True)

def queue_and_wait(name, queue, timeout=2.0):
    # Hold the library entry point until the adapter's diagnostics are printed: the
    # call itself may kill the process.
    released = threading.Event()
    real = adapter.lib.functions[name]
    def held(*args):
        released.wait(10)
        return real(*args)
    adapter.lib.functions[name] = held
    done = threading.Event()
    ctx = adapter.create_async_context()
    adapter.set_async_notify_callback(ctx, lambda c, d: done.set())
    queued = queue(ctx)
    emit(event="queued", status=queued,
         diagnostics=[[v.requirement, v.party, v.message] for v in adapter.diagnostics()])
    released.set()
    if not done.wait(timeout):
        emit(event="timeout", status=adapter.get_async_call_status(ctx))
        os._exit(0)  # the worker is stuck inside the library; do not join it
    emit(event="done", status=adapter.get_async_call_status(ctx))
"""


@dataclass
class Outcome:
    returncode: int
    events: list[dict[str, object]]
    stderr: str

    @property
    def signal(self) -> int | None:
        return -self.returncode if self.returncode < 0 else None

    def last(self, kind: str) -> dict[str, object]:
        found = [e for e in self.events if e["event"] == kind]
        assert found, f"no {kind!r} event in {self.events} (rc={self.returncode}, stderr={self.stderr[-400:]!r})"
        return found[-1]

    @property
    def crashed(self) -> bool:
        # A signal, or Rust's abort on an allocation failure (exit code 134 via SIGABRT).
        return self.signal is not None or not any(e["event"] in {"done", "timeout"} for e in self.events)


def probe(body: str, timeout: float = 20.0) -> Outcome:
    env = dict(os.environ, PYTHONPATH=str(ROOT), RUST_BACKTRACE="0")
    script = PRELUDE + textwrap.dedent(body)
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return Outcome(proc.returncode, events, proc.stderr)


DOUBLE_DELETE = """
cred = acquire(adapter, "NTLM", 2, AUTH)[1]
_, out = initialize(adapter, cred, None, None)
emit(event="first", status=delete(adapter, out.new_context))
queue_and_wait("DeleteSecurityContext", lambda c: adapter.delete_security_context_async(c, out.new_context))
"""

DOUBLE_FREE = """
cred = acquire(adapter, "NTLM", 2, AUTH)[1]
emit(event="first", status=free(adapter, cred))
queue_and_wait("FreeCredentialsHandle", lambda c: adapter.free_credentials_handle_async(c, cred))
"""

USE_AFTER_DELETE = """
cred = acquire(adapter, "NTLM", 2, AUTH)[1]
_, out = initialize(adapter, cred, None, None)
emit(event="first", status=delete(adapter, out.new_context))
challenge = [SecBuffer(2, b"NTLMSSP\\x00\\x02" + b"\\x00" * 40)]
queue_and_wait("InitializeSecurityContextW", lambda c: adapter.initialize_security_context_async(
    c, cred, out.new_context, "host/server", 0, challenge, CallOutputs(output=[SecBuffer(2, size=4096)])))
"""

USE_AFTER_FREE = """
cred = acquire(adapter, "NTLM", 2, AUTH)[1]
emit(event="first", status=free(adapter, cred))
queue_and_wait("InitializeSecurityContextW", lambda c: adapter.initialize_security_context_async(
    c, cred, None, "host/server", 0, None, CallOutputs(output=[SecBuffer(2, size=4096)])))
"""

INVALID_DELETE = """
queue_and_wait("DeleteSecurityContext", lambda c: adapter.delete_security_context_async(c, INVALID_HANDLE))
"""


def _caller_reports(outcome: Outcome) -> list[tuple[str, str]]:
    queued = outcome.last("queued")
    assert queued["status"] == 0  # the misuse is queued and passed through, not refused
    diagnostics: list[list[str]] = queued["diagnostics"]  # type: ignore[assignment]
    return [(req, msg) for req, party, msg in diagnostics if party == "caller"]


@pytest.fixture(scope="module")
def outcomes() -> dict[str, Outcome]:
    """Run the five probes once (well under a second each; a hang waits two)."""
    return {
        "double_delete": probe(DOUBLE_DELETE),
        "double_free": probe(DOUBLE_FREE),
        "use_after_delete": probe(USE_AFTER_DELETE),
        "use_after_free": probe(USE_AFTER_FREE),
        "invalid_delete": probe(INVALID_DELETE),
    }


def test_double_delete_is_reported_then_passed_through(outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes["double_delete"]
    assert outcome.last("first")["status"] == 0
    reports = _caller_reports(outcome)
    assert [r for r, _ in reports] == ["CALL-26"] and "double delete" in reports[0][1]
    assert outcome.crashed  # FINDING F-1: glibc aborts on sspi-rs' second Box::from_raw


def test_double_free_of_credentials_is_reported_then_passed_through(outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes["double_free"]
    reports = _caller_reports(outcome)
    assert [r for r, _ in reports] == ["CALL-13"] and "double free" in reports[0][1]
    assert outcome.crashed  # FINDING F-1


def test_use_after_delete_is_reported_and_breaks_the_library(outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes["use_after_delete"]
    reports = _caller_reports(outcome)
    assert [r for r, _ in reports] == ["CALL-26"] and "use after delete" in reports[0][1]
    # FINDING F-1: the library reads the freed context.  Observed: a deadlock on its freed
    # mutex (isolated verdict "hung"), a segfault ("crashed"), or SEC_E_NO_CREDENTIALS;
    # the outcome is undefined behaviour, so only the contract test below pins it.
    if any(e["event"] == "timeout" for e in outcome.events):
        assert outcome.last("timeout")["status"] == 0x00090368  # still pending (CTX-7 holds)


def test_use_after_free_of_credentials_is_reported_then_passed_through(outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes["use_after_free"]
    reports = _caller_reports(outcome)
    assert [r for r, _ in reports] == ["CALL-13"] and "use of freed" in reports[0][1]
    assert outcome.crashed or outcome.last("done")["status"] != 0  # reads freed memory: UB


def test_invalid_handle_is_reported_then_passed_through(outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes["invalid_delete"]
    reports = _caller_reports(outcome)
    assert [r for r, _ in reports] == ["CALL-26"]
    assert outcome.signal == signal.SIGSEGV  # FINDING F-1: SecInvalidateHandle is dereferenced


@pytest.mark.xfail(strict=True, reason="FINDING F-1: second DeleteSecurityContext aborts the process")
def test_double_delete_answers_per_shut_5(outcomes: dict[str, Outcome]) -> None:
    assert outcomes["double_delete"].last("done")["status"] in (0, 0x80090301)  # SHUT-5 / CALL-25


@pytest.mark.xfail(strict=True, reason="FINDING F-1: second FreeCredentialsHandle crashes the process")
def test_double_free_answers_per_call_27(outcomes: dict[str, Outcome]) -> None:
    assert outcomes["double_free"].last("done")["status"] in (0, 0x80090301)


@pytest.mark.xfail(strict=True, reason="FINDING F-1: use after delete deadlocks inside the library")
def test_use_after_delete_answers_invalid_handle(outcomes: dict[str, Outcome]) -> None:
    assert outcomes["use_after_delete"].last("done")["status"] == 0x80090301  # CALL-22 / CALL-26
