"""Runtime state of one scenario run: names, the recording callback, waits and checks.

:class:`RunCore` holds everything a step handler needs (handles bound to names, the per-context
callback accounting, the completion checks) plus the step loop and the harness cleanup.  The
step handlers themselves live in :mod:`conformance.scenario.steps` (single calls) and
:mod:`conformance.scenario.composite` (handshake, stream calls); :mod:`conformance.executor`
builds a run and judges it.

Waiting: every async context name has a callback count and the number of callbacks owed by
the calls accepted on it; a ``wait`` blocks on a per-context Event (created only when somebody
has to block) until the count catches up, so nothing polls on the notified path.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from adapters import status as st
from adapters.api import Adapter, CallOutputs, Handle, SecBuffer, Unsupported
from conformance.monitor import ContractMonitor
from conformance.results import CallbackRecord, StepRecord
from conformance.scenario import buffers as bufs
from conformance.scenario import model as m

__all__ = ["BOGUS", "Ctx", "Pending", "RunCore", "ScenarioTimeout", "StepFailed", "as_status", "describe_status"]

OK = st.SEC_E_OK
CONTINUE = st.SEC_I_CONTINUE_NEEDED
PENDING = st.SEC_I_ASYNC_CALL_PENDING
ALLOCATE_MEMORY = 0x100  # ISC_REQ_ALLOCATE_MEMORY == ASC_REQ_ALLOCATE_MEMORY
_CLEANUP_WAIT_S = 0.5
_SETTLE_S = 0.2
_REPORTED = "(reported by the implementation)"
LEG_TIMEOUT_S = 2.0
OK_SET = m.StatusSet(frozenset({st.SEC_E_OK}), frozenset(), st.describe(st.SEC_E_OK))
SUCCESS = m.StatusSet(frozenset(), frozenset({"success"}), "success")


class Bogus:
    """The reserved name ``bogus``: a handle no implementation minted."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<bogus handle>"


BOGUS = Bogus()

_DESCRIBED: dict[int, str] = {}


def describe_status(value: int) -> str:
    """describe(), memoised: statuses repeat, and this runs on the pass path."""
    text = _DESCRIBED.get(value)
    if text is None:
        text = _DESCRIBED[value] = st.describe(value)
    return text


def as_status(value: Any) -> int:
    """``value`` when it is a status; a step failure when the implementation returned junk."""
    if type(value) is int and 0 <= value <= 0xFFFFFFFF:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and -0x80000000 <= value < 0:
        return value & 0xFFFFFFFF  # a signed LONG is the same SECURITY_STATUS
    raise StepFailed(f"the implementation returned {value!r}, which is not a 32-bit status", "a status",
                      repr(value)[:80])


class ScenarioTimeout(Exception):
    pass


class StepFailed(Exception):
    """Raised inside a step handler to record the step as failed with this text."""

    def __init__(self, message: str, expected: str = "", actual: str = "") -> None:
        super().__init__(message)
        self.message, self.expected, self.actual = message, expected, actual


class Pending:
    """A queued operation whose completion has not been checked yet."""

    __slots__ = ("context_name", "input", "kind", "outputs", "step", "token_name")

    def __init__(self, step: m.Step, kind: str, outputs: CallOutputs | None,
                 input: list[SecBuffer] | None = None, context_name: str | None = None,
                 token_name: str | None = None) -> None:
        self.step, self.kind, self.outputs, self.input = step, kind, outputs, input
        self.context_name, self.token_name = context_name, token_name


class Ctx:
    """Runtime state of one async-context name."""

    __slots__ = ("callbacks", "cb_status", "data", "event", "expected", "freed", "handle", "name",
                 "notify", "on_callback", "pending", "records")

    def __init__(self, name: str, handle: Handle | None) -> None:
        self.name = name
        self.handle = handle
        # Created only when somebody has to block: with inline completion the callback has
        # always arrived before the wait, and an Event costs more than the rest of a step.
        self.event: threading.Event | None = None
        self.callbacks = 0  # callbacks received
        self.expected = 0  # callbacks owed by accepted notified queues
        self.cb_status: int | None = None  # status read inside the last callback
        self.notify = False  # a callback is registered (as far as the caller knows)
        self.data: Any = None
        self.on_callback: str | None = None
        self.freed = False
        self.pending: Pending | None = None
        self.records: list[tuple[int, float, Any, int | None]] = []  # thread, t, data, status

    def waiter(self) -> threading.Event:
        """The Event callbacks set.  A waiter must re-check ``callbacks`` after getting it:
        a callback that ran before the Event existed counted but could not set it."""
        event = self.event
        if event is None:
            event = self.event = threading.Event()
        return event


class RunCore:
    """One execution of one scenario: state, waits and checks (the handlers are subclasses')."""

    def __init__(self, scenario: m.Scenario, adapter: Adapter, monitor: ContractMonitor,
                 status_map: dict[int, int] | None) -> None:
        self.scenario = scenario
        self.inner = adapter
        self.api = monitor
        self.map = status_map or None
        self.ctxs: dict[str, Ctx] = {}
        self.by_handle: dict[Any, Ctx] = {}
        self.all_ctxs: list[Ctx] = []
        self.handles: dict[str, Handle] = {}  # cred and security-context names
        self.contexts: dict[Handle, str] = {}  # live security contexts -> name (cleanup)
        self.creds: dict[Handle, str] = {}
        self.tokens: dict[str, bytes] = {}
        self.sizes: dict[str, Any] = {}
        self.records: list[StepRecord] = []
        self.failed = False
        self.first_failure = ""
        self.callback_error: BaseException | None = None
        self.t0 = time.monotonic()
        self.deadline = self.t0 + scenario.timeout_ms / 1000.0
        self.current: m.Step | None = None
        self.closed = False  # the adapter was closed before judging (expect_diagnostics)

    # ---- the recording callback ------------------------------------------------------------
    def callback(self, actx: Any, data: Any) -> None:
        ctx = self.by_handle.get(actx)
        if ctx is None:  # not ours (CTX-10 is the monitor's business); nothing to wake
            return
        try:
            status: int | None = self.inner.get_async_call_status(actx)
            ctx.cb_status = status
            ctx.records.append((threading.get_ident(), time.monotonic() - self.t0, data, status))
            action = ctx.on_callback
            if action == "free":
                ctx.freed = True
                self.api.free_async_context(actx)
            elif action == "reinit":
                self.api.reinit_async_context(actx)
        except BaseException as exc:  # surfaced on the scenario thread at the next wait
            self.callback_error = exc
        finally:
            ctx.callbacks += 1  # before reading ctx.event: see Ctx.waiter
            event = ctx.event
            if event is not None:
                event.set()

    def callback_records(self) -> list[CallbackRecord]:
        """Every callback the recording callback saw, in time order."""
        found = [CallbackRecord(ctx.name, thread, t, data, status)
                 for ctx in self.all_ctxs for thread, t, data, status in ctx.records]
        found.sort(key=lambda record: record.t)
        return found

    # ---- names ---------------------------------------------------------------------------------
    def ctx(self, name: str | None) -> Ctx | None:
        # Reserved names (null, bogus) can never be bound, so a plain lookup answers None for them.
        return self.ctxs.get(name)  # type: ignore[arg-type]

    @staticmethod
    def unbound(name: str | None) -> Any:
        """The handle passed for an async-context name with no live context behind it."""
        return BOGUS if name == "bogus" else None

    def ctx_handle(self, name: str | None) -> Any:
        ctx = self.ctxs.get(name)  # type: ignore[arg-type]
        return ctx.handle if ctx is not None else (BOGUS if name == "bogus" else None)

    def handle(self, name: str | None) -> Any:
        if name is None:
            return None
        if name == "bogus":
            return BOGUS
        found = self.handles.get(name)
        if found is None and self.settle_producer(name):
            found = self.handles.get(name)
        return found

    def settle_producer(self, name: str) -> bool:
        """Bind ``name`` now if an unwaited call that produces it has already completed.

        A scenario may use a credential, context or token right after the call that makes it
        without a ``wait`` in between (inline completion, or a callback already in).  Without
        this the name would still be unbound and NULL would be passed.  True if one settled.
        """
        current = self.current
        for ctx in self.ctxs.values():
            pending = ctx.pending
            if pending is None or current is None:
                continue
            args = pending.step.args
            produced = (getattr(args, "cred", None) if pending.kind == "acquire"
                        else None, pending.context_name, pending.token_name)
            if name in produced:
                self.settle_if_observed(ctx, current, False)
                return ctx.pending is None
        return False

    def actual(self, value: int) -> int:
        if self.map is not None:
            return self.map.get(value, value)
        return value

    def check(self, expect: m.StatusSet | None, value: int, ntstatus: bool = False, what: str = "") -> None:
        if expect is None or (value in expect.values and self.map is None):
            return
        value = self.actual(as_status(value))
        if not expect.matches(value, ntstatus):
            label = f"{what} " if what else ""
            raise StepFailed(f"{label}expected {expect.text}, got {describe_status(value)}", expect.text,
                              describe_status(value))

    def control(self) -> Any:
        control = self.api.control
        if control is None:
            raise Unsupported("completion control")
        return control

    # ---- waiting ---------------------------------------------------------------------------------
    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def await_callbacks(self, ctx: Ctx, timeout_s: float) -> bool:
        """Block until every owed callback of ``ctx`` has arrived; False on timeout."""
        if ctx.callbacks >= ctx.expected:
            return True
        budget = self.remaining()
        limit = min(timeout_s, budget)
        end = time.monotonic() + limit
        event = ctx.waiter()
        while ctx.callbacks < ctx.expected:
            left = end - time.monotonic()
            if left <= 0:
                if budget < timeout_s:
                    raise ScenarioTimeout()
                return False
            event.wait(left)
            event.clear()
        return True

    def await_status(self, ctx: Ctx, timeout_s: float) -> int | None:
        """No callback registered: poll until the status stops being pending (None on timeout)."""
        budget = self.remaining()
        end = time.monotonic() + min(timeout_s, budget)
        pause = 0.0002
        while True:
            status = self.api.get_async_call_status(ctx.handle)
            if status != PENDING:
                return status
            if time.monotonic() >= end:
                if budget < timeout_s:
                    raise ScenarioTimeout()
                return None
            time.sleep(pause)
            pause = min(pause * 2, 0.005)

    def raise_callback_error(self) -> None:
        exc = self.callback_error
        if exc is not None:
            self.callback_error = None
            raise exc

    def complete_wait(self, ctx: Ctx, timeout_ms: int, expect: m.StatusSet | None) -> None:
        """The body of ``wait`` (and of the implicit wait at the end).

        With a callback owed, the completion status is the one the recording callback read
        inside the callback (NOTIFY-8); that is also the only status left to read when the
        callback freed or reinitialised its context.  With none owed (a silent delete, a call
        that failed to queue), the status is polled until it stops being pending.
        """
        pending = ctx.pending
        if ctx.callbacks < ctx.expected or (pending is not None and ctx.notify):
            if not self.await_callbacks(ctx, timeout_ms / 1000.0):
                ctx.pending = None
                raise StepFailed(f"no callback within {timeout_ms} ms", "callback", "none")
            self.raise_callback_error()
            status = ctx.cb_status if ctx.cb_status is not None else PENDING
        elif ctx.freed:
            status = ctx.cb_status if ctx.cb_status is not None else OK
        else:
            polled = self.await_status(ctx, timeout_ms / 1000.0)
            if polled is None:
                ctx.pending = None
                raise StepFailed(f"still pending after {timeout_ms} ms (no callback registered)",
                                  "not pending", describe_status(PENDING))
            status = polled
        ctx.pending = None
        status = self.actual(as_status(status))
        problems: list[str] = []
        if pending is not None:
            self.settle(pending, status, problems)
        if expect is not None and not expect.matches(status):
            problems.insert(0, f"expected {expect.text}, got {describe_status(status)}")
        if problems:
            shown = pending.step.completes.text if pending is not None and pending.step.completes else ""
            raise StepFailed("; ".join(problems), expect.text if expect is not None else shown, describe_status(status))

    def settle(self, pending: Pending, status: int, problems: list[str]) -> None:
        """Bind what the completed call produced and check its ``completes``/``outputs``."""
        step = pending.step
        outputs = pending.outputs
        if outputs is not None and outputs.written:
            if pending.kind == "acquire":
                if outputs.credential is not None:
                    acquire: m.Acquire = step.args  # type: ignore[assignment]
                    self.handles[acquire.cred] = outputs.credential
                    self.creds[outputs.credential] = acquire.cred
            elif pending.kind == "leg":
                if outputs.new_context is not None and pending.context_name not in (None, "bogus"):
                    name = str(pending.context_name)
                    self.handles[name] = outputs.new_context
                    self.contexts[outputs.new_context] = name
                    self.api.name(outputs.new_context, name)
                if pending.token_name is not None:
                    token = bufs.output_token(outputs)
                    if token is not None:
                        self.tokens[pending.token_name] = token
        if pending.kind == "delete" and status == OK:
            delete: m.DeleteContext = step.args  # type: ignore[assignment]
            self.contexts.pop(self.handle(delete.context), None)
        elif pending.kind == "free_credentials" and status == OK:
            free: m.FreeCredentials = step.args  # type: ignore[assignment]
            self.creds.pop(self.handle(free.cred), None)
        completes = step.completes
        if completes is not None and not completes.matches(status):
            problems.append(f"step {step.index + 1} (line {step.line}, {step.summary}) completed with "
                            f"{describe_status(status)}, expected {completes.text}")
        if step.outputs is not None:
            found = bufs.check_outputs(step.outputs, outputs, pending.input)
            if found:
                problems.append(f"step {step.index + 1} (line {step.line}) outputs: " + "; ".join(found))

    # ---- queueing ------------------------------------------------------------------------------
    def queue(self, step: m.Step, ctx_name: str | None, call: Callable[[Any], int], pending: Pending) -> None:
        ctx = self.ctxs.get(ctx_name)  # type: ignore[arg-type]
        if ctx is not None:
            if ctx.pending is not None:
                self.settle_if_observed(ctx, step, False)
            notify = ctx.notify
            status = call(ctx.handle)
        else:
            notify = False
            status = call(self.unbound(ctx_name))
        if ctx is not None and status == OK:
            if notify:
                ctx.expected += 1
            ctx.pending = pending
        self.check(step.expect if isinstance(step.expect, m.StatusSet) else None, status, what="queue:")

    def settle_if_observed(self, ctx: Ctx, step: m.Step, drop: bool) -> None:
        """Before ``ctx`` is reused or freed: check its unwaited call if its callback has come.

        A call whose completion cannot be observed (a silent delete still in flight, FREE-5)
        is dropped when ``drop`` (a free: the scenario gave up watching it on purpose); else it
        stays pending, e.g. while a second queue on the busy context is (rightly) refused.
        """
        if ctx.notify and ctx.callbacks >= ctx.expected and ctx.cb_status is not None:
            try:
                self.complete_wait(ctx, 0, None)
            except StepFailed as exc:
                self.fail_extra(step, f"earlier call on {ctx.name}: {exc.message}")
        elif drop:
            ctx.pending = None

    def fail_extra(self, step: m.Step, message: str) -> None:
        self.records.append(StepRecord(step.index, step.line, step.action, step.summary, False, "", "", message))
        self.note_failure(step, message)

    def note_failure(self, step: m.Step | None, message: str) -> None:
        if not self.failed:
            self.failed = True
            where = f"step {step.index + 1} (line {step.line}) {step.summary}: " if step is not None else ""
            self.first_failure = where + message

    # ---- the run ----------------------------------------------------------------------------------
    def execute(self, handlers: dict[str, Callable[[Any, m.Step], None]]) -> None:
        scenario = self.scenario
        if scenario.completion is not None:
            self.control().set_mode(scenario.completion)
        records = self.records
        clock = time.monotonic
        deadline = self.deadline
        started = clock()
        for step in scenario.steps:
            if started > deadline:
                raise ScenarioTimeout()
            self.current = step
            try:
                handlers[step.action](self, step)
            except StepFailed as exc:
                ended = clock()
                records.append(StepRecord(step.index, step.line, step.action, step.summary, False, exc.expected,
                                          exc.actual, exc.message, ended - started))
                self.note_failure(step, exc.message)
                started = ended
                continue
            ended = clock()
            expect = step.expect
            records.append(StepRecord(step.index, step.line, step.action, step.summary, True,
                                      expect.text if type(expect) is m.StatusSet else "", "", "", ended - started))
            started = ended
        self.current = None
        self.implicit_waits()

    def implicit_waits(self) -> None:
        """Pending ``completes``/``outputs`` with no later wait: observe them at the end."""
        for ctx in self.all_ctxs:
            pending = ctx.pending
            if pending is None or ctx.freed:
                continue
            step = pending.step
            if step.completes is None and step.outputs is None:
                ctx.pending = None
                continue
            started = time.perf_counter()
            try:
                self.complete_wait(ctx, 2000, None)
            except StepFailed as exc:
                self.records.append(StepRecord(step.index, 0, "wait", f"implicit wait {ctx.name}", False,
                                               exc.expected, exc.actual, exc.message,
                                               time.perf_counter() - started))
                self.note_failure(step, exc.message)

    def cleanup(self) -> None:
        """Release what the scenario left, directly on the implementation (not monitored)."""
        inner = self.inner
        if not self.contexts and not self.creds and all(ctx.freed for ctx in self.all_ctxs):
            return  # the scenario released everything itself (the usual case)
        control = inner.control
        if control is not None:
            try:
                control.complete_all()
            except Exception:  # best effort: cleanup must not change the verdict
                pass
        end = time.monotonic() + _CLEANUP_WAIT_S
        if control is None or control.mode == "threaded":  # elsewhere nothing more will arrive
            for ctx in self.all_ctxs:
                event = ctx.waiter()
                while ctx.callbacks < ctx.expected and not ctx.freed and time.monotonic() < end:
                    event.wait(0.01)
                    event.clear()
        leftovers = [(True, h) for h in self.contexts] + [(False, h) for h in self.creds]
        for is_context, handle in leftovers:
            done = threading.Event()
            actx = inner.create_async_context()
            if actx is None:
                break
            try:
                inner.set_async_notify_callback(actx, _setter(done), None)
                if is_context:
                    status = inner.delete_security_context_async(actx, handle)
                else:
                    status = inner.free_credentials_handle_async(actx, handle)
                if status == OK:
                    done.wait(max(0.0, end - time.monotonic()))
            finally:
                if done.is_set() or inner.get_async_call_status(actx) != PENDING:
                    inner.free_async_context(actx)
        for ctx in self.all_ctxs:
            if not ctx.freed and ctx.handle is not None and ctx.callbacks >= ctx.expected:
                ctx.freed = True
                inner.free_async_context(ctx.handle)



def _setter(event: threading.Event) -> Callable[[Any, Any], None]:
    def callback(_ctx: Any, _data: Any) -> None:
        event.set()

    return callback
