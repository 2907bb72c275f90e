"""One JSON-RPC connection to an agent: requests, responses, notifications, failure.

Reading is done by whichever thread needs a message (leader/follower): a thread waiting
for its response reads the stream itself, so a synchronous call costs no thread handoff.
Notifications met on the way are applied and their callbacks run on that thread (inline
completion then runs the callback before the queueing call returns, as in-process, OQ-2).

A pump thread covers the caller that waits for a callback without calling in (a completion
on the implementation's own thread): as soon as a callback is expected and no request is in
progress, it takes the reader role and blocks in poll() on the stream, so a notification is
dispatched the moment its line arrives.  A caller that starts a request while the pump is
only waiting in poll() takes the role over without waking it (the pump notices when poll
returns and steps back until the caller's requests are done); while the pump is reading a
message, the caller waits for that one message, which may be its own answer.

Whoever reads never holds the reader role while running caller code, so a callback may
call the adapter again (OQ-11).  Every wait has a deadline; a stream that can no longer be
trusted (garbage, oversize line, wrong id, death, hang) marks the connection dead, the
agent is killed, and every later call raises at once.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import IO, Any, Protocol

from adapters.api import AdapterError, ImplementationCrashed, ImplementationHung, Unsupported, Violation
from adapters.remote import protocol as p
from adapters.remote.framing import LineReader, LineTooLong, StreamClosed, StreamTimeout, Transport
from adapters.remote.jsonfast import dumps, loads

Thunk = Callable[[], None]

# Longest single poll() of the pump: only how often it re-checks that a callback is still
# awaited; a line that arrives ends the poll at once.  Also bounds one message read.
PUMP_POLL_S = 0.1
SPIN_S = 0.0002  # longest busy-wait for an answer before sleeping (adaptive, see LineReader._spin)
MAX_RECORDED_VIOLATIONS = 100
FLOOD_LIMIT = 10000  # this many protocol violations in one connection: stop trusting it


class NotificationSink(Protocol):
    def prepare_notification(self, method: str, params: Any) -> Thunk | None:
        """Validate and apply a notification; return what must run without the reader role."""


class _Fatal(Exception):
    def __init__(self, error: AdapterError) -> None:
        super().__init__(str(error))
        self.error = error


class Connection:
    def __init__(
        self,
        transport: Transport,
        label: str,
        max_message_bytes: int,
        process: subprocess.Popen[bytes] | None = None,
        stderr: IO[bytes] | None = None,
    ) -> None:
        self.label = label
        self.process = process
        self._t = transport
        self._reader = LineReader(transport, max_message_bytes, SPIN_S)
        self._stderr = stderr
        self._mu = threading.Lock()
        self._cv = threading.Condition(self._mu)
        self._pump_cv = threading.Condition(self._mu)
        self._wmu = threading.Lock()
        self._ids = itertools.count(1)
        self._reading = False
        self._waiters = 0  # threads blocked in _cv.wait (skip notify_all when none)
        self._responses: dict[int, tuple[int, dict[str, Any]]] = {}  # id -> (arrival seq, message)
        self._seq = 0  # messages read so far
        self._running: dict[int, int] = {}  # callbacks running: arrival seq -> thread id
        self._outstanding: dict[int, str] = {}
        self._inside = 0  # requests in progress (the pump reads only when there are none)
        self._expected = 0
        self._pump: threading.Thread | None = None
        self._pump_idle = False  # waiting on _pump_cv (needs a notify to run again)
        self._pump_polling = False  # holds the reader role but only waits in poll(): a caller may take it
        self._robbed = False  # a caller took the role while the pump polled
        self._closing = False
        self.dead: AdapterError | None = None
        self.sink: NotificationSink | None = None
        self.last_call: str | None = None
        self.violations: list[Violation] = []
        self._violation_count = 0
        self._suppressed: set[str] = set()
        self.tainted = False  # broke the protocol at least once: never reuse it
        self.last_used = time.monotonic()

    # ---- public ----------------------------------------------------------------------------
    @property
    def healthy(self) -> bool:
        return self.dead is None and not self._closing and not self.tainted and (
            self.process is None or self.process.poll() is None
        )

    def request(self, method: str, params: dict[str, Any], timeout: float) -> Any:
        """Send a request and return its ``result``; raise the error it maps to."""
        if self.dead is not None:
            raise self._after_death(method)
        rid = next(self._ids)
        prefix = _PREFIXES.get(method)
        if prefix is None:
            prefix = '{"jsonrpc":"2.0","method":' + dumps(method) + ',"params":'
            if len(_PREFIXES) < 256:
                _PREFIXES[method] = prefix
        data = f'{prefix}{dumps(params)},"id":{rid}}}\n'.encode()
        deadline = time.monotonic() + timeout
        mu = self._mu
        with mu:
            self._outstanding[rid] = method
            self._inside += 1
        self.last_call = method
        try:
            try:
                with self._wmu:
                    self._t.write_all(data, deadline)
            except StreamTimeout:
                raise self._hung(method, timeout) from None
            except StreamClosed:
                raise self._crashed(f"while sending {method}") from None
            return _result(self._await(rid, method, deadline, timeout), method)
        finally:
            with mu:
                self._inside -= 1
                if not self._inside and self._expected and self._pump_idle:
                    self._pump_cv.notify()  # a callback is awaited and nobody reads: the pump does

    def notify(self, method: str, params: dict[str, Any], timeout: float) -> None:
        """Send a notification (no answer comes); a broken stream is left for the next
        request to report, so this never raises for it."""
        if self.dead is not None:
            return
        data = f'{{"jsonrpc":"2.0","method":{dumps(method)},"params":{dumps(params)}}}\n'.encode()
        try:
            with self._wmu:
                self._t.write_all(data, time.monotonic() + timeout)
        except (StreamTimeout, StreamClosed):
            pass

    def expect(self, delta: int) -> None:
        """Count callbacks the caller is waiting for; the pump reads only while some are.

        A positive delta always comes just before the request that queues the call, so the
        pump is woken when that request ends (not here: waking it now would only make it
        step back for the request)."""
        with self._mu:
            self._expected = max(0, self._expected + delta)
            if self._expected and self._pump is None and self.dead is None:
                self._pump = threading.Thread(target=self._pump_loop, name=f"remote-pump {self.label}", daemon=True)
                self._pump.start()

    def reset_expected(self) -> None:
        with self._mu:
            self._expected = 0

    def violate(self, requirement: str, message: str, call: str | None = None) -> None:
        self.tainted = True
        self._violation_count += 1
        if len(self.violations) < MAX_RECORDED_VIOLATIONS:
            self.violations.append(Violation(requirement, message, "implementation", call))
        else:
            self._suppressed.add(requirement)
        if self._violation_count > FLOOD_LIMIT:
            raise _Fatal(ImplementationCrashed(
                f"remote agent {self.label} sent more than {FLOOD_LIMIT} invalid messages; connection dropped"
            ))

    def drain_violations(self) -> list[Violation]:
        out, self.violations = self.violations, []
        suppressed = self._violation_count - len(out)
        self._violation_count = 0
        if suppressed > 0:
            kinds = sorted(self._suppressed)
            out.append(Violation(kinds[0] if kinds else "PROTO-1",
                                 f"{suppressed} further protocol violations not listed ({', '.join(kinds)})",
                                 "implementation"))
        self._suppressed = set()
        return out

    def close(self, graceful_timeout: float = 0.0) -> None:
        """End the connection and reap the agent (never leaves a zombie)."""
        with self._mu:
            already = self._closing
            self._closing = True
            self._pump_cv.notify_all()
            self._cv.notify_all()
        if already:
            return
        if graceful_timeout > 0 and self.dead is None:
            try:
                self.request("shutdown", {}, graceful_timeout)
            except AdapterError:
                pass
        if self.dead is None:
            self.dead = ImplementationCrashed(f"remote agent {self.label}: connection closed")
        self._stop_agent(graceful_timeout)
        pump = self._pump
        if pump is not None and pump is not threading.current_thread():
            pump.join(1.0)
        self._t.close()
        if self._stderr is not None:
            self._stderr.close()

    # ---- reading ---------------------------------------------------------------------------
    def _await(self, rid: int, method: str, deadline: float, timeout: float) -> dict[str, Any]:
        mu = self._mu
        while True:
            with mu:
                while True:
                    entry = self._responses.get(rid)
                    if entry is not None:
                        if self._releasable(entry[0]):
                            del self._responses[rid]
                            return entry[1]
                        # A callback read before this answer still runs on another thread:
                        # as in-process, the call returns only after it (caller code, so
                        # the time is not charged to the agent).
                        self._waiters += 1
                        try:
                            self._cv.wait(0.05)
                        finally:
                            self._waiters -= 1
                        deadline = max(deadline, time.monotonic() + 0.05)
                        continue
                    if self.dead is not None:
                        self._outstanding.pop(rid, None)
                        raise self._after_death(method)
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    if not self._reading:
                        self._reading = True
                        break
                    if self._pump_polling:
                        # The pump only waits in poll(): take the role over without waking it.
                        self._pump_polling = False
                        self._robbed = True
                        break
                    self._waiters += 1
                    try:
                        self._cv.wait(remaining)
                    finally:
                        self._waiters -= 1
            if remaining <= 0:
                raise self._hung(method, timeout)
            kind, payload = self._read_one(deadline, rid, method, soft=False)
            if kind == "mine":
                assert isinstance(payload, dict)
                return payload
            if kind == "note" and payload is not None:
                started = time.monotonic()
                self._run_thunk(*payload)
                # Time spent in the caller's own callback is not the agent's fault.
                deadline += time.monotonic() - started

    def _read_one(self, deadline: float, rid: int | None, method: str | None, soft: bool) -> tuple[str, Any]:
        """Read one message holding the reader role; always gives the role back."""
        released = False
        try:
            try:
                line = self._reader.read_line(deadline)
            except StreamTimeout:
                if soft:
                    return "none", None
                self._release()
                released = True
                raise self._hung(method or "?", None) from None
            except StreamClosed:
                self._release()
                released = True
                raise self._crashed(f"while waiting for the answer to {method}" if method else "between calls") \
                    from None
            except LineTooLong as exc:
                self._release()
                released = True
                raise self._fatal("PROTO-2", str(exc)) from None
            return self._classify(line, rid)
        except _Fatal as exc:
            if not released:
                self._release()
                released = True
            raise self._die(exc.error) from None
        finally:
            if not released:
                self._release()

    def _releasable(self, seq: int) -> bool:
        """No callback of a notification read before message ``seq`` is still running on
        another thread (the caller's own thread may be inside one: nested calls)."""
        running = self._running
        if not running:
            return True
        me = threading.get_ident()
        return all(s > seq or t == me for s, t in running.items())

    def _run_thunk(self, seq: int, thunk: Thunk) -> None:
        try:
            thunk()
        finally:
            with self._mu:
                self._running.pop(seq, None)
                if self._waiters:
                    self._cv.notify_all()

    def _release(self) -> None:
        with self._mu:
            self._reading = False
            if self._waiters:
                self._cv.notify_all()

    def _classify(self, line: bytes, rid: int | None) -> tuple[str, Any]:
        self._seq += 1
        seq = self._seq
        try:
            msg = loads(line)
        except ValueError:
            raise _Fatal(self._record_fatal("PROTO-1", f"not JSON: {line[:120]!r}")) from None
        if type(msg) is not dict or msg.get("jsonrpc") != p.JSONRPC:
            raise _Fatal(self._record_fatal("PROTO-1", f"not a JSON-RPC 2.0 object: {line[:120]!r}"))
        if "method" in msg:
            method = msg["method"]
            if "id" in msg:
                self.violate("PROTO-10", f"the agent sent a request ({method!r}); v1 agents only notify")
                return "other", None
            sink = self.sink
            if sink is None:
                self.violate("PROTO-5", f"notification {method!r} arrived outside a session")
                return "other", None
            try:
                thunk = sink.prepare_notification(method, msg.get("params"))
            except _Fatal:
                raise
            except Exception as exc:  # a notification we cannot apply must not kill the reader
                self.violate("PROTO-11", f"notification {method!r} could not be applied: {exc!r}")
                return "other", None
            if thunk is None:
                return "other", None
            with self._mu:  # registered before the reader role is given back
                self._running[seq] = threading.get_ident()
            return "note", (seq, thunk)
        mid = msg.get("id")
        if ("result" in msg or "error" in msg) and type(mid) is int:
            with self._mu:
                if mid in self._outstanding:
                    del self._outstanding[mid]
                    if mid == rid and self._releasable(seq):
                        return "mine", msg
                    self._responses[mid] = (seq, msg)
                    if self._waiters:
                        self._cv.notify_all()
                    return "other", None
            raise _Fatal(self._record_fatal("PROTO-3", f"response with id {mid!r}, which no open request has"))
        if "result" in msg or "error" in msg:
            if mid is None and "error" in msg:
                err = msg["error"]
                raise _Fatal(self._record_fatal(
                    "PROTO-3", f"the agent rejected a message as unreadable: {err!r}"
                ))
            raise _Fatal(self._record_fatal("PROTO-3", f"response with id {mid!r}, which no open request has"))
        raise _Fatal(self._record_fatal("PROTO-1", f"neither request, response nor notification: {line[:120]!r}"))

    def _pump_loop(self) -> None:
        ready_within = self._t.readiness_waiter()  # its own poll object: callers poll too
        mu = self._mu
        while True:
            with mu:
                while True:
                    if self.dead is not None or self._closing:
                        self._pump = None
                        return
                    if self._expected and not self._inside and not self._reading:
                        break
                    self._pump_idle = True
                    try:
                        self._pump_cv.wait()  # woken by a request ending, close and death
                    finally:
                        self._pump_idle = False
                self._reading = True
                buffered = self._reader.has_line()
                self._pump_polling = not buffered
            if not buffered:
                ready = ready_within(PUMP_POLL_S)
                with mu:
                    if self._robbed:  # a caller reads now; wait until its requests are done
                        self._robbed = False
                        continue
                    self._pump_polling = False
                    if not ready:
                        self._reading = False
                        if self._waiters:
                            self._cv.notify_all()
                        continue
            try:
                kind, payload = self._read_one(time.monotonic() + PUMP_POLL_S, None, None, soft=True)
            except AdapterError:
                continue  # recorded as the connection's death; the loop ends above
            if kind == "note" and payload is not None:
                self._run_thunk(*payload)

    # ---- failure ---------------------------------------------------------------------------
    def _record_fatal(self, requirement: str, message: str) -> AdapterError:
        self.tainted = True
        if len(self.violations) < MAX_RECORDED_VIOLATIONS:
            self.violations.append(Violation(requirement, message, "implementation", self.last_call))
        self._violation_count += 1
        return ImplementationCrashed(
            f"remote agent {self.label} broke {requirement} ({p.PROTO[requirement]}): {message}; "
            f"stream unusable, agent stopped"
        )

    def _fatal(self, requirement: str, message: str) -> AdapterError:
        return self._die(self._record_fatal(requirement, message))

    def _die(self, error: AdapterError) -> AdapterError:
        with self._mu:
            first = self.dead is None
            if first:
                self.dead = error
            self._cv.notify_all()
            self._pump_cv.notify_all()
        if first:
            self._stop_agent(0.0)
        return error if first else self._after_death(self.last_call or "?")

    def _crashed(self, when: str) -> AdapterError:
        if self.dead is not None:
            return self._after_death(self.last_call or "?")
        return self._die(ImplementationCrashed(self._diagnose(when)))

    def _hung(self, method: str, timeout: float | None) -> AdapterError:
        if self.dead is not None:
            return self._after_death(method)
        limit = f" within {timeout * 1000:.0f} ms" if timeout is not None else " in time"
        self._die(ImplementationCrashed(f"remote agent {self.label} was stopped after it hung in {method}"))
        return ImplementationHung(f"remote agent {self.label} did not answer {method}{limit} (PROTO-8); agent stopped")

    def _after_death(self, method: str) -> AdapterError:
        dead = self.dead
        if isinstance(dead, ImplementationHung):
            return ImplementationHung(str(dead))
        return ImplementationCrashed(f"{dead} (call {method} not sent)" if dead else f"call {method} failed")

    def _diagnose(self, when: str) -> str:
        what = "closed its stream"
        proc = self.process
        if proc is not None:
            try:
                rc = proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                rc = None
            if rc is None:
                what = "closed its stream but kept running (killed)"
            elif rc < 0:
                try:
                    name = signal.Signals(-rc).name
                except ValueError:
                    name = "unknown signal"
                what = f"was killed by signal {-rc} ({name})"
            else:
                what = f"exited with code {rc}"
        last = f"; last call: {self.last_call}" if self.last_call else ""
        return f"remote agent {self.label} {what} {when} (PROTO-9){last}{self._stderr_tail()}"

    def _stderr_tail(self, limit: int = 800) -> str:
        f = self._stderr
        if f is None:
            return ""
        try:
            f.flush()
            size = f.seek(0, 2)
            f.seek(max(0, size - limit))
            tail = f.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""
        return f"; agent stderr: ...{tail}" if tail else ""

    def _stop_agent(self, graceful_timeout: float) -> None:
        proc = self.process
        if proc is None:
            self._t.shutdown()
            return
        if graceful_timeout > 0:
            try:
                proc.wait(timeout=graceful_timeout)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            proc.kill()
        try:
            proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:  # pragma: no cover - a process SIGKILL cannot stop
            pass


# The request envelope up to its params, per method (the id goes last: it changes).
_PREFIXES: dict[str, str] = {}

_EXCEPTIONS: dict[str, type[Exception]] = {"ValueError": ValueError, "TypeError": TypeError}


def _result(msg: dict[str, Any], method: str) -> Any:
    if "error" not in msg:
        return msg.get("result")
    err = msg["error"]
    if not isinstance(err, dict):
        raise ImplementationCrashed(f"remote agent answered {method} with a malformed error (PROTO-11): {err!r}")
    code, message, data = err.get("code"), str(err.get("message", "")), err.get("data")
    if code in (p.METHOD_NOT_FOUND, p.UNSUPPORTED):
        raise Unsupported(message or method)
    if code == p.IMPLEMENTATION_CRASHED:
        raise ImplementationCrashed(message)
    if code == p.IMPLEMENTATION_HUNG:
        raise ImplementationHung(message)
    if code == p.INVALID_PARAMS:
        exc_name = data.get("exception") if isinstance(data, dict) else None
        raise _EXCEPTIONS.get(str(exc_name), ValueError)(message)
    raise AdapterError(f"remote {method} failed with JSON-RPC error {code}: {message}")
