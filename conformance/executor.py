"""The step interpreter: runs one scenario against one adapter and judges it.

``run_scenario`` builds the adapter, checks the scenario's needs against its capabilities,
wraps it in the contract monitor, executes the steps in order and always returns a
:class:`~conformance.results.ScenarioResult` -- never raises for anything an adapter or a
scenario does.  Verdicts (docs/ci.md):

* every step met its expectation and the monitor saw no implementation violation: PASS;
* a step failed, a wait timed out, the budget ran out, an implementation violation: FAIL;
* a needed capability is not claimed, or the adapter raised ``Unsupported``: UNSUPPORTED;
* ``ImplementationCrashed`` / ``ImplementationHung``: CRASHED / HUNG;
* anything else raised (a bug in the harness): ERROR, with the exception summary.

Speed matters (the runner benchmark): each step is dispatched through a table to a method
that reads the pre-parsed, typed arguments of :mod:`conformance.scenario.model`; nothing is
formatted on the pass path except via small caches; waits block on a per-context Event.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from adapters import status as st
from adapters.api import (
    Adapter,
    CallOutputs,
    Capabilities,
    Handle,
    ImplementationCrashed,
    ImplementationHung,
    SecBuffer,
    Unsupported,
)
from adapters.constants import (
    SCHANNEL_SHUTDOWN,
    SECBUFFER_DATA,
    SECBUFFER_EMPTY,
    SECBUFFER_STREAM_HEADER,
    SECBUFFER_STREAM_TRAILER,
    SECBUFFER_TOKEN,
    SECPKG_ATTR_STREAM_SIZES,
)
from conformance.monitor import ContractMonitor
from conformance.results import CallbackRecord, ScenarioResult, StepRecord, Verdict
from conformance.scenario import buffers as bufs
from conformance.scenario import model as m

__all__ = ["BOGUS", "run_scenario"]

_OK = st.SEC_E_OK
_CONTINUE = st.SEC_I_CONTINUE_NEEDED
_PENDING = st.SEC_I_ASYNC_CALL_PENDING
_ALLOCATE_MEMORY = 0x100  # ISC_REQ_ALLOCATE_MEMORY == ASC_REQ_ALLOCATE_MEMORY
_CLEANUP_WAIT_S = 0.5
_SETTLE_S = 0.2
_REPORTED = "(reported by the implementation)"
_LEG_TIMEOUT_S = 2.0
_OK_SET = m.StatusSet(frozenset({st.SEC_E_OK}), frozenset(), st.describe(st.SEC_E_OK))
_SUCCESS = m.StatusSet(frozenset(), frozenset({"success"}), "success")


class _Bogus:
    """The reserved name ``bogus``: a handle no implementation minted."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<bogus handle>"


BOGUS = _Bogus()

_DESCRIBED: dict[int, str] = {}


def _describe(value: int) -> str:
    """describe(), memoised: statuses repeat, and this runs on the pass path."""
    text = _DESCRIBED.get(value)
    if text is None:
        text = _DESCRIBED[value] = st.describe(value)
    return text


def _status(value: Any) -> int:
    """``value`` when it is a status; a step failure when the implementation returned junk."""
    if type(value) is int and 0 <= value <= 0xFFFFFFFF:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and -0x80000000 <= value < 0:
        return value & 0xFFFFFFFF  # a signed LONG is the same SECURITY_STATUS
    raise _StepFailed(f"the implementation returned {value!r}, which is not a 32-bit status", "a status",
                      repr(value)[:80])


class _ScenarioTimeout(Exception):
    pass


class _StepFailed(Exception):
    """Raised inside a step handler to record the step as failed with this text."""

    def __init__(self, message: str, expected: str = "", actual: str = "") -> None:
        super().__init__(message)
        self.message, self.expected, self.actual = message, expected, actual


class _Pending:
    """A queued operation whose completion has not been checked yet."""

    __slots__ = ("context_name", "input", "kind", "outputs", "step", "token_name")

    def __init__(self, step: m.Step, kind: str, outputs: CallOutputs | None,
                 input: list[SecBuffer] | None = None, context_name: str | None = None,
                 token_name: str | None = None) -> None:
        self.step, self.kind, self.outputs, self.input = step, kind, outputs, input
        self.context_name, self.token_name = context_name, token_name


class _Ctx:
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
        self.pending: _Pending | None = None
        self.records: list[tuple[int, float, Any, int | None]] = []  # thread, t, data, status

    def waiter(self) -> threading.Event:
        """The Event callbacks set.  A waiter must re-check ``callbacks`` after getting it:
        a callback that ran before the Event existed counted but could not set it."""
        event = self.event
        if event is None:
            event = self.event = threading.Event()
        return event


class _Run:
    """One execution of one scenario."""

    def __init__(self, scenario: m.Scenario, adapter: Adapter, monitor: ContractMonitor,
                 status_map: dict[int, int] | None) -> None:
        self.scenario = scenario
        self.inner = adapter
        self.api = monitor
        self.map = status_map or None
        self.ctxs: dict[str, _Ctx] = {}
        self.by_handle: dict[Any, _Ctx] = {}
        self.all_ctxs: list[_Ctx] = []
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
            ctx.callbacks += 1  # before reading ctx.event: see _Ctx.waiter
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
    def ctx(self, name: str | None) -> _Ctx | None:
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
        return self.handles.get(name)

    def actual(self, value: int) -> int:
        if self.map is not None:
            return self.map.get(value, value)
        return value

    def check(self, expect: m.StatusSet | None, value: int, ntstatus: bool = False, what: str = "") -> None:
        if expect is None or (value in expect.values and self.map is None):
            return
        value = self.actual(_status(value))
        if not expect.matches(value, ntstatus):
            label = f"{what} " if what else ""
            raise _StepFailed(f"{label}expected {expect.text}, got {_describe(value)}", expect.text,
                              _describe(value))

    # ---- waiting ---------------------------------------------------------------------------------
    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def await_callbacks(self, ctx: _Ctx, timeout_s: float) -> bool:
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
                    raise _ScenarioTimeout()
                return False
            event.wait(left)
            event.clear()
        return True

    def await_status(self, ctx: _Ctx, timeout_s: float) -> int | None:
        """No callback registered: poll until the status stops being pending (None on timeout)."""
        budget = self.remaining()
        end = time.monotonic() + min(timeout_s, budget)
        pause = 0.0002
        while True:
            status = self.api.get_async_call_status(ctx.handle)
            if status != _PENDING:
                return status
            if time.monotonic() >= end:
                if budget < timeout_s:
                    raise _ScenarioTimeout()
                return None
            time.sleep(pause)
            pause = min(pause * 2, 0.005)

    def raise_callback_error(self) -> None:
        exc = self.callback_error
        if exc is not None:
            self.callback_error = None
            raise exc

    def complete_wait(self, ctx: _Ctx, timeout_ms: int, expect: m.StatusSet | None) -> None:
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
                raise _StepFailed(f"no callback within {timeout_ms} ms", "callback", "none")
            self.raise_callback_error()
            status = ctx.cb_status if ctx.cb_status is not None else _PENDING
        elif ctx.freed:
            status = ctx.cb_status if ctx.cb_status is not None else _OK
        else:
            polled = self.await_status(ctx, timeout_ms / 1000.0)
            if polled is None:
                ctx.pending = None
                raise _StepFailed(f"still pending after {timeout_ms} ms (no callback registered)",
                                  "not pending", _describe(_PENDING))
            status = polled
        ctx.pending = None
        status = self.actual(_status(status))
        problems: list[str] = []
        if pending is not None:
            self.settle(pending, status, problems)
        if expect is not None and not expect.matches(status):
            problems.insert(0, f"expected {expect.text}, got {_describe(status)}")
        if problems:
            shown = pending.step.completes.text if pending is not None and pending.step.completes else ""
            raise _StepFailed("; ".join(problems), expect.text if expect is not None else shown, _describe(status))

    def settle(self, pending: _Pending, status: int, problems: list[str]) -> None:
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
        if pending.kind == "delete" and status == _OK:
            delete: m.DeleteContext = step.args  # type: ignore[assignment]
            self.contexts.pop(self.handle(delete.context), None)
        elif pending.kind == "free_credentials" and status == _OK:
            free: m.FreeCredentials = step.args  # type: ignore[assignment]
            self.creds.pop(self.handle(free.cred), None)
        completes = step.completes
        if completes is not None and not completes.matches(status):
            problems.append(f"step {step.index + 1} (line {step.line}, {step.summary}) completed with "
                            f"{_describe(status)}, expected {completes.text}")
        if step.outputs is not None:
            found = bufs.check_outputs(step.outputs, outputs, pending.input)
            if found:
                problems.append(f"step {step.index + 1} (line {step.line}) outputs: " + "; ".join(found))

    # ---- queueing ------------------------------------------------------------------------------
    def queue(self, step: m.Step, ctx_name: str | None, call: Callable[[Any], int], pending: _Pending) -> None:
        ctx = self.ctxs.get(ctx_name)  # type: ignore[arg-type]
        if ctx is not None:
            if ctx.pending is not None:
                self.settle_if_observed(ctx, step, False)
            notify = ctx.notify
            status = call(ctx.handle)
        else:
            notify = False
            status = call(self.unbound(ctx_name))
        if ctx is not None and status == _OK:
            if notify:
                ctx.expected += 1
            ctx.pending = pending
        self.check(step.expect if isinstance(step.expect, m.StatusSet) else None, status, what="queue:")

    def settle_if_observed(self, ctx: _Ctx, step: m.Step, drop: bool) -> None:
        """Before ``ctx`` is reused or freed: check its unwaited call if its callback has come.

        A call whose completion cannot be observed (a silent delete still in flight, FREE-5)
        is dropped when ``drop`` (a free: the scenario gave up watching it on purpose); else it
        stays pending, e.g. while a second queue on the busy context is (rightly) refused.
        """
        if ctx.notify and ctx.callbacks >= ctx.expected and ctx.cb_status is not None:
            try:
                self.complete_wait(ctx, 0, None)
            except _StepFailed as exc:
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

    # ---- step handlers ---------------------------------------------------------------------------
    def do_create(self, step: m.Step) -> None:
        args: m.Create = step.args  # type: ignore[assignment]
        handle = self.api.create_async_context()
        ctx = _Ctx(args.name, handle)
        self.ctxs[args.name] = ctx
        self.all_ctxs.append(ctx)
        if handle is None:
            ctx.freed = True  # nothing to free
            if not args.expect_null:
                raise _StepFailed("SspiCreateAsyncContext returned NULL", "handle", "NULL")
            return
        self.by_handle[handle] = ctx
        self.api.name(handle, args.name)
        if args.expect_null:
            raise _StepFailed("expected NULL (injected out of memory), got a handle", "NULL", "handle")

    def do_set_callback(self, step: m.Step) -> None:
        args: m.SetCallback = step.args  # type: ignore[assignment]
        ctx = self.ctxs.get(args.ctx)  # type: ignore[arg-type]
        handle = ctx.handle if ctx is not None else self.unbound(args.ctx)
        status = self.api.set_async_notify_callback(handle, self.callback, args.data)
        if ctx is not None and status == _OK:
            ctx.notify, ctx.data, ctx.on_callback = True, args.data, args.on_callback
        self.check(step.expect, status)  # type: ignore[arg-type]

    def do_clear_callback(self, step: m.Step) -> None:
        args: m.CtxOnly = step.args  # type: ignore[assignment]
        status = self.api.set_async_notify_callback(self.ctx_handle(args.ctx), None, None)
        ctx = self.ctx(args.ctx)
        if ctx is not None and status == _OK:
            ctx.notify, ctx.data, ctx.on_callback = False, None, None
        self.check(step.expect, status)  # type: ignore[arg-type]

    def do_requires_notify(self, step: m.Step) -> None:
        args: m.CtxOnly = step.args  # type: ignore[assignment]
        value = bool(self.api.async_context_requires_notify(self.ctx_handle(args.ctx)))
        if value != step.expect:
            raise _StepFailed(f"expected {str(step.expect).upper()}, got {str(value).upper()}",
                              str(step.expect).upper(), str(value).upper())

    def do_status(self, step: m.Step) -> None:
        args: m.CtxOnly = step.args  # type: ignore[assignment]
        self.check(step.expect, self.api.get_async_call_status(self.ctx_handle(args.ctx)))  # type: ignore[arg-type]

    def do_reinit(self, step: m.Step) -> None:
        args: m.CtxOnly = step.args  # type: ignore[assignment]
        self.check(step.expect, self.api.reinit_async_context(self.ctx_handle(args.ctx)), ntstatus=True)  # type: ignore[arg-type]

    def do_free(self, step: m.Step) -> None:
        args: m.CtxOnly = step.args  # type: ignore[assignment]
        ctx = self.ctxs.get(args.ctx)  # type: ignore[arg-type]
        if ctx is None:
            self.api.free_async_context(self.unbound(args.ctx))
            return
        if ctx.pending is not None:
            self.settle_if_observed(ctx, step, True)
        self.api.free_async_context(ctx.handle)
        ctx.freed = True

    def do_callbacks(self, step: m.Step) -> None:
        args: m.CtxOnly = step.args  # type: ignore[assignment]
        ctx = self.ctx(args.ctx)
        got = ctx.callbacks if ctx is not None else 0
        if got != step.expect:
            raise _StepFailed(f"expected {step.expect} callback(s), got {got}", str(step.expect), str(got))

    def do_acquire(self, step: m.Step) -> None:
        args: m.Acquire = step.args  # type: ignore[assignment]
        outputs = CallOutputs()
        api = self.api

        def call(handle: Any) -> int:
            return api.acquire_credentials_handle_async(handle, args.principal, args.package, args.use,
                                                        args.auth, outputs)

        self.queue(step, args.ctx, call, _Pending(step, "acquire", outputs))

    def do_leg(self, step: m.Step) -> None:
        args: m.Handshake1 = step.args  # type: ignore[assignment]
        try:
            input = bufs.input_descriptor(args.input, self.tokens)
        except bufs.UnboundToken as exc:
            raise _StepFailed(f"token {exc} was never produced (its call failed or wrote no token)") from None
        outputs = CallOutputs(output=bufs.output_descriptor(args.output))
        req = args.req | (_ALLOCATE_MEMORY if args.output.kind == "allocate" else 0)
        cred = self.handle(args.cred)
        context = self.handle(args.context)
        api = self.api
        if args.client:
            def call(handle: Any) -> int:
                return api.initialize_security_context_async(
                    handle, cred, context, args.target, req, input, outputs,
                    reserved1=args.reserved1, reserved2=args.reserved2)
        else:
            def call(handle: Any) -> int:
                return api.accept_security_context_async(handle, cred, context, input, req, outputs)
        self.queue(step, args.ctx, call, _Pending(step, "leg", outputs, input, args.context, args.token))

    def do_delete_context(self, step: m.Step) -> None:
        args: m.DeleteContext = step.args  # type: ignore[assignment]
        context = self.handle(args.context)
        api = self.api

        def call(handle: Any) -> int:
            return api.delete_security_context_async(handle, context)

        self.queue(step, args.ctx, call, _Pending(step, "delete", None))

    def do_free_credentials(self, step: m.Step) -> None:
        args: m.FreeCredentials = step.args  # type: ignore[assignment]
        cred = self.handle(args.cred)
        api = self.api

        def call(handle: Any) -> int:
            return api.free_credentials_handle_async(handle, cred)

        self.queue(step, args.ctx, call, _Pending(step, "free_credentials", None))

    def do_wait(self, step: m.Step) -> None:
        args: m.Wait = step.args  # type: ignore[assignment]
        ctx = self.ctx(args.ctx)
        if ctx is None:
            raise _StepFailed(f"{args.ctx} is not an async context this run created")
        self.complete_wait(ctx, args.timeout_ms, step.expect)  # type: ignore[arg-type]

    def do_expect_no_callback(self, step: m.Step) -> None:
        args: m.ExpectNoCallback = step.args  # type: ignore[assignment]
        ctx = self.ctx(args.ctx)
        if ctx is None:
            return
        before = ctx.callbacks
        end = time.monotonic() + args.within_ms / 1000.0
        event = ctx.waiter()
        while ctx.callbacks == before:
            left = end - time.monotonic()
            if left <= 0:
                return
            event.wait(left)
            event.clear()
        raise _StepFailed(f"a callback arrived for {ctx.name} within {args.within_ms} ms", "no callback",
                          f"{ctx.callbacks - before} callback(s)")

    def control(self) -> Any:
        control = self.api.control
        if control is None:
            raise Unsupported("completion control")
        return control

    def do_complete(self, step: m.Step) -> None:
        args: m.Complete = step.args  # type: ignore[assignment]
        control = self.control()
        if not args.names:
            control.complete_all()
            return
        for name in args.names:
            ctx = self.ctx(name)
            if ctx is None or ctx.handle is None or not control.complete(ctx.handle):
                raise _StepFailed(f"no call was pending on {name} to complete", "a pending call", "none")

    def do_mode(self, step: m.Step) -> None:
        args: m.Mode = step.args  # type: ignore[assignment]
        self.control().set_mode(args.mode)

    def do_inject_fault(self, step: m.Step) -> None:
        args: m.InjectFault = step.args  # type: ignore[assignment]
        self.control().inject_fault(args.fault, **dict(args.params))

    def do_sleep(self, step: m.Step) -> None:
        args: m.Sleep = step.args  # type: ignore[assignment]
        seconds = args.ms / 1000.0
        if seconds > self.remaining():
            time.sleep(max(self.remaining(), 0))
            raise _ScenarioTimeout()
        time.sleep(seconds)

    # ---- the composite handshake -------------------------------------------------------------------
    def do_handshake(self, step: m.Step) -> None:
        """ISC and ASC alternately, each leg queued, waited for and read, tokens passed across."""
        args: m.Handshake = step.args  # type: ignore[assignment]
        sides = (args.client, args.server)
        finals: list[int] = [_PENDING, _PENDING]
        done = [False, False]
        used = [False, False]
        statuses: list[int] = []
        token: bytes | None = None
        turn = 0
        stalled = ""
        for _leg in range(args.max_legs):
            side = sides[turn]
            ctx = self.ctx(side.ctx)
            if ctx is None or ctx.freed or ctx.handle is None:
                raise _StepFailed(f"handshake: async context {side.ctx} does not exist")
            if not ctx.notify:
                raise _StepFailed(f"handshake: async context {side.ctx} has no callback registered")
            if used[turn]:  # between two legs of the same side
                if args.reuse == "reinit":
                    self.check(_SUCCESS, self.api.reinit_async_context(ctx.handle), ntstatus=True,
                               what="reinit between legs:")
                else:
                    self.fresh_context(ctx)
            used[turn] = True
            status, produced = self.handshake_leg(ctx, side, turn == 0, token)
            statuses.append(status)
            finals[turn] = status
            if status == _OK:
                done[turn] = True
            elif status != _CONTINUE:
                break  # one side failed: judged against expect below
            token = produced or None
            if done[0] and done[1]:
                break
            if token is None and not done[1 - turn]:
                if done[turn]:
                    stalled = "one side finished with no token left for the other"
                    break
                if _leg > 0 or turn == 1:
                    stalled = f"the {('client', 'server')[turn]} asked to continue but produced no token"
                    break
            elif token is None:
                break
            turn = 1 - turn
        else:
            stalled = f"no result within {args.max_legs} legs"
        legs_text = ", ".join(st.name_of(x) for x in statuses)
        expect = step.expect if isinstance(step.expect, m.StatusSet) else _OK_SET
        # The side that failed first, so the message names the culprit rather than its peer.
        order = sorted(zip(("client", "server"), finals, strict=True), key=lambda pair: not st.failed(pair[1]))
        for who, final in order:
            if not expect.matches(final):
                raise _StepFailed(f"the {who} ended with {_describe(final)}, expected {expect.text} "
                                  f"(legs: {legs_text})", expect.text, _describe(final))
        if args.legs is not None:
            same = len(args.legs) == len(statuses)
            if not same or not all(e.matches(x) for e, x in zip(args.legs, statuses, strict=True)):
                want = ", ".join(e.text for e in args.legs)
                raise _StepFailed(f"legs: expected [{want}], got [{legs_text}]", want, legs_text)
        if stalled:
            raise _StepFailed(f"the handshake stalled: {stalled} (legs: {legs_text})")

    def handshake_leg(self, ctx: _Ctx, side: m.Side, client: bool, token: bytes | None) -> tuple[int, bytes | None]:
        input = [SecBuffer(SECBUFFER_TOKEN, token), SecBuffer(SECBUFFER_EMPTY)] if token is not None else None
        outputs = CallOutputs(output=bufs.output_descriptor(side.output))
        req = side.req | (_ALLOCATE_MEMORY if side.output.kind == "allocate" else 0)
        cred = self.handle(side.cred)
        context = self.handles.get(side.context)
        if client:
            status = self.api.initialize_security_context_async(ctx.handle, cred, context, side.target, req,
                                                                input, outputs)
        else:
            status = self.api.accept_security_context_async(ctx.handle, cred, context, input, req, outputs)
        who = "client" if client else "server"
        if status != _OK:
            raise _StepFailed(f"handshake: the {who} queue call returned {_describe(status)}", _describe(_OK),
                              _describe(status))
        ctx.expected += 1
        if not self.await_callbacks(ctx, _LEG_TIMEOUT_S):
            raise _StepFailed(f"handshake: no callback within {int(_LEG_TIMEOUT_S * 1000)} ms for the {who} leg",
                              "callback", "none")
        self.raise_callback_error()
        final = self.actual(ctx.cb_status if ctx.cb_status is not None else _PENDING)
        if outputs.new_context is not None:
            if context is None or outputs.new_context != context:
                self.contexts.pop(context, None)
            self.handles[side.context] = outputs.new_context
            self.contexts[outputs.new_context] = side.context
            self.api.name(outputs.new_context, side.context)
        produced = bufs.output_token(outputs) if outputs.written else None
        if side.token and produced is not None:
            self.tokens[side.token] = produced
        return final, produced

    def fresh_context(self, old: _Ctx) -> None:
        """reuse: fresh -- a new async context (same callback and data) replaces ``old``."""
        handle = self.api.create_async_context()
        if handle is None:
            raise _StepFailed("handshake: SspiCreateAsyncContext returned NULL for a fresh context")
        self.api.free_async_context(old.handle)
        self.by_handle.pop(old.handle, None)
        old.handle, old.callbacks, old.expected, old.cb_status = handle, 0, 0, None
        self.by_handle[handle] = old
        self.api.name(handle, old.name)
        status = self.api.set_async_notify_callback(handle, self.callback, old.data)
        if status != _OK:
            raise _StepFailed(f"handshake: registering the callback on a fresh context returned {_describe(status)}")

    # ---- stream calls -------------------------------------------------------------------------------
    def stream_sizes(self, name: str | None) -> Any:
        sizes = self.sizes.get(name or "")
        if sizes is None:
            status, sizes = self.api.query_context_attributes(self.handle(name), SECPKG_ATTR_STREAM_SIZES)
            if status != _OK or sizes is None:
                raise _StepFailed(f"QueryContextAttributes(STREAM_SIZES) returned {_describe(status)}")
            self.sizes[name or ""] = sizes
        return sizes

    def do_query_sizes(self, step: m.Step) -> None:
        args: m.QuerySizes = step.args  # type: ignore[assignment]
        status, sizes = self.api.query_context_attributes(self.handle(args.context), SECPKG_ATTR_STREAM_SIZES)
        if status == _OK and sizes is not None:
            self.sizes[args.context or ""] = sizes
        self.check(step.expect, status)  # type: ignore[arg-type]

    def do_encrypt(self, step: m.Step) -> None:
        args: m.Encrypt = step.args  # type: ignore[assignment]
        sizes = self.stream_sizes(args.context)
        buffers = [SecBuffer(SECBUFFER_STREAM_HEADER, bytes(sizes.header), sizes.header),
                   SecBuffer(SECBUFFER_DATA, args.data),
                   SecBuffer(SECBUFFER_STREAM_TRAILER, bytes(sizes.trailer), sizes.trailer),
                   SecBuffer(SECBUFFER_EMPTY)]
        status = self.api.encrypt_message(self.handle(args.context), 0, buffers)
        if status == _OK and args.record is not None:
            self.tokens[args.record] = b"".join(b.data[: b.cb] for b in buffers[:3])
        self.check(step.expect, status)  # type: ignore[arg-type]

    def do_decrypt(self, step: m.Step) -> None:
        args: m.Decrypt = step.args  # type: ignore[assignment]
        try:
            data = bufs.token_bytes(args.input, self.tokens) if args.input is not None else b""
        except bufs.UnboundToken as exc:
            raise _StepFailed(f"token {exc} was never produced") from None
        buffers = [SecBuffer(SECBUFFER_DATA, data), SecBuffer(SECBUFFER_EMPTY), SecBuffer(SECBUFFER_EMPTY),
                   SecBuffer(SECBUFFER_EMPTY)]
        status, _qop = self.api.decrypt_message(self.handle(args.context), buffers)
        self.check(step.expect, status)  # type: ignore[arg-type]
        problems = bufs.check_outputs(step.outputs, None, buffers) if step.outputs is not None else []
        if args.plaintext is not None and self.actual(status) == _OK:
            plain = bufs.data_buffer(buffers)
            if plain != args.plaintext:
                problems.append(f"plaintext: expected {args.plaintext!r}, got {plain!r}")
        if problems:
            raise _StepFailed("; ".join(problems))

    def do_shutdown(self, step: m.Step) -> None:
        args: m.Shutdown = step.args  # type: ignore[assignment]
        token = [SecBuffer(SECBUFFER_TOKEN, SCHANNEL_SHUTDOWN.to_bytes(4, "little"))]
        self.check(step.expect, self.api.apply_control_token(self.handle(args.context), token))  # type: ignore[arg-type]

    # ---- the run ----------------------------------------------------------------------------------
    def execute(self) -> None:
        scenario = self.scenario
        if scenario.completion is not None:
            self.control().set_mode(scenario.completion)
        handlers = _HANDLERS
        records = self.records
        clock = time.monotonic
        deadline = self.deadline
        started = clock()
        for step in scenario.steps:
            if started > deadline:
                raise _ScenarioTimeout()
            self.current = step
            try:
                handlers[step.action](self, step)
            except _StepFailed as exc:
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
            except _StepFailed as exc:
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
                if status == _OK:
                    done.wait(max(0.0, end - time.monotonic()))
            finally:
                if done.is_set() or inner.get_async_call_status(actx) != _PENDING:
                    inner.free_async_context(actx)
        for ctx in self.all_ctxs:
            if not ctx.freed and ctx.handle is not None and ctx.callbacks >= ctx.expected:
                ctx.freed = True
                inner.free_async_context(ctx.handle)


def _setter(event: threading.Event) -> Callable[[Any, Any], None]:
    def callback(_ctx: Any, _data: Any) -> None:
        event.set()

    return callback


_HANDLERS: dict[str, Callable[[_Run, m.Step], None]] = {
    "create": _Run.do_create,
    "set_callback": _Run.do_set_callback,
    "clear_callback": _Run.do_clear_callback,
    "requires_notify": _Run.do_requires_notify,
    "status": _Run.do_status,
    "reinit": _Run.do_reinit,
    "free": _Run.do_free,
    "acquire": _Run.do_acquire,
    "initialize": _Run.do_leg,
    "accept": _Run.do_leg,
    "delete_context": _Run.do_delete_context,
    "free_credentials": _Run.do_free_credentials,
    "wait": _Run.do_wait,
    "expect_no_callback": _Run.do_expect_no_callback,
    "complete": _Run.do_complete,
    "mode": _Run.do_mode,
    "inject_fault": _Run.do_inject_fault,
    "callbacks": _Run.do_callbacks,
    "sleep_ms": _Run.do_sleep,
    "handshake": _Run.do_handshake,
    "query_sizes": _Run.do_query_sizes,
    "encrypt": _Run.do_encrypt,
    "decrypt": _Run.do_decrypt,
    "shutdown": _Run.do_shutdown,
}


def _missing(needs: tuple[str, ...], caps: Capabilities) -> list[str]:
    """``Capabilities.supports`` for many needs, lower-casing the package names once."""
    missing = [need for need in needs if not need.startswith("package:") and need not in caps.features]
    wanted = [need for need in needs if need.startswith("package:")]
    if wanted:
        have = {p.lower() for p in caps.packages}
        missing += [need for need in wanted if need[8:].lower() not in have]
    return sorted(missing, key=needs.index)


def _exc_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _where(run: _Run | None) -> str:
    step = run.current if run is not None else None
    if step is None:
        return ""
    return f" during step {step.index + 1} (line {step.line}) {step.summary}"


def run_scenario(
    scenario: m.Scenario,
    adapter_factory: Callable[[], Adapter] | Adapter,
    *,
    adapter_name: str,
    profile_status_map: dict[int, int] | None = None,
    keep_trace: bool = False,
) -> ScenarioResult:
    """Run ``scenario`` on a fresh adapter from ``adapter_factory`` and judge it.

    ``profile_status_map`` maps statuses the implementation returns to the ones the scenario
    expects (a profile's documented equivalences) before any comparison.  The monitor's trace
    is attached to the result when the verdict is not PASS, or always with ``keep_trace``.
    """
    started = time.perf_counter()
    result = ScenarioResult(id=scenario.id, title=scenario.title, file=str(scenario.file), verdict=Verdict.ERROR,
                            adapter=adapter_name, level=scenario.level, requirements=list(scenario.requirements),
                            tags=list(scenario.tags))
    adapter: Adapter | None = None
    monitor: ContractMonitor | None = None
    run: _Run | None = None
    try:
        adapter = adapter_factory if isinstance(adapter_factory, Adapter) else adapter_factory()
        caps = adapter.capabilities()
        result.implementation = f"{caps.name} {caps.version}"
        missing = _missing(scenario.needs, caps)
        if missing:
            result.verdict = Verdict.UNSUPPORTED
            result.message = f"{caps.name} does not claim {', '.join(missing)}"
            return result
        monitor = ContractMonitor(adapter)
        run = _Run(scenario, adapter, monitor, profile_status_map)
        try:
            run.execute()
        except _ScenarioTimeout:
            run.note_failure(None, "")
            run.first_failure = f"scenario timed out after {scenario.timeout_ms} ms{_where(run)}"
            step = run.current
            if step is not None:
                run.records.append(StepRecord(step.index, step.line, step.action, step.summary, False, "", "",
                                              run.first_failure))
        settle = _SETTLE_S if time.monotonic() < run.deadline else 0.0
        monitor.finish(settle)
        if scenario.expect_diagnostics:
            # Leak reports come at close (CTX-6, CALL-13, CALL-26): close first, with nothing
            # cleaned up by the harness, so the implementation sees what the scenario left.
            run.closed = True
            monitor.close()
        _judge(run, monitor, scenario, result)
    except Unsupported as exc:
        result.verdict = Verdict.UNSUPPORTED
        result.message = f"unsupported{_where(run)}: {exc}"
    except ImplementationCrashed as exc:
        result.verdict = Verdict.CRASHED
        result.message = f"implementation crashed{_where(run)}: {_exc_text(exc)}"
    except ImplementationHung as exc:
        result.verdict = Verdict.HUNG
        result.message = f"implementation hung{_where(run)}: {_exc_text(exc)}"
    except Exception as exc:  # a bug in the harness (or the adapter wrapper): never a raw traceback
        result.verdict = Verdict.ERROR
        result.message = f"harness error{_where(run)}: {_exc_text(exc)}"
    finally:
        if run is not None:
            result.steps = run.records
        if monitor is not None and (keep_trace or result.verdict is not Verdict.PASS):
            try:
                result.callbacks = run.callback_records() if run is not None else []
                result.trace = monitor.trace
                if not result.violations:
                    result.violations = monitor.violations()
            except Exception:  # the verdict stands without a trace
                pass
        _close(run, adapter, result)
        result.duration_s = time.perf_counter() - started
    return result


def _judge(run: _Run, monitor: ContractMonitor, scenario: m.Scenario, result: ScenarioResult) -> None:
    violations = monitor.violations()
    result.violations = violations
    own = [v for v in violations if v.party == "implementation"]
    if scenario.expect_diagnostics:
        reported = {v.requirement for v in violations if v.party == "caller" and v.message.endswith(_REPORTED)}
        lacking = [rid for rid in scenario.expect_diagnostics if rid not in reported]
        if lacking:
            run.note_failure(None, f"the implementation did not report {', '.join(lacking)} (expect_diagnostics)")
    if run.failed:
        result.verdict = Verdict.FAIL
        result.message = run.first_failure
    elif own:
        result.verdict = Verdict.FAIL
        first = own[0]
        result.message = f"contract violation {first.requirement}: {first.message}"
    else:
        result.verdict = Verdict.PASS


def _close(run: _Run | None, adapter: Adapter | None, result: ScenarioResult) -> None:
    """Harness cleanup, then close: failures here never blame the implementation."""
    if adapter is None or (run is not None and run.closed):
        return
    try:
        if run is not None and result.verdict not in (Verdict.CRASHED, Verdict.HUNG):
            run.cleanup()
    except Exception:  # cleanup is best effort
        pass
    try:
        adapter.close()
    except Exception:  # a close failure after judging is not the scenario's verdict
        pass

