"""The contract monitor: wraps any adapter, records a trace and checks Section A online.

:class:`ContractMonitor` forwards every call to the adapter it wraps, appends what it saw
to a trace and compares each outcome with what :data:`adapters.async_state.TABLE`
predicts for a shadow copy of every async context.  The table is the same one the
reference simulator executes, so there is one source of truth for the rules.

Outcomes are judged as follows:

* the table *refuses* an event and the implementation refuses it too: caller misuse,
  recorded with ``party="caller"`` (the implementation did its job);
* the table refuses it and the implementation *accepts* it: an implementation violation
  citing the rule's requirement (CTX-4, NOTIFY-4, OQ-9, REINIT-4...);
* callbacks are matched to queued calls: exactly one per accepted notified call (OQ-13),
  none after free (FREE-3, OQ-12), none for a failed queue (OQ-5), with the same context
  and data (CTX-10, NOTIFY-2), and only after the status is final (NOTIFY-8);
* status reads must never show PENDING on an idle context (OQ-1), must be stable once
  final (CTX-8) and must be one of the statuses the operation documents (CALL-7/17/22/25/27).

What the monitor knows about completion depends on the completion mode, which it follows
through ``monitor.control`` (drive completions and mode switches through it, not through the
wrapped adapter's control):

* deferred: a call completes only when ``control.complete``/``complete_all`` completes it, so
  the monitor also checks that nothing completes early (CTX-7), that completing delivers the
  callback (OQ-13), that ``complete_all`` leaves nothing behind and that a mode switch drops
  nothing; refusals while pending (CTX-4, OQ-9, REINIT-4) are judged exactly;
* inline: an accepted call has completed when the queue call returns;
* threaded, or no completion control: completion races with the caller, so an action the
  table refuses while pending but the implementation accepts is *not* judged (the call may have
  completed an instant earlier); a note goes to the trace and the shadow follows the
  implementation.  Lost callbacks are flagged by :meth:`ContractMonitor.finish`.

Cost: every call through the monitor does a little more than the simulator itself does, so the
usual case of each call is handled first and cheaply (a benchmark round trip through the monitor
costs about twice one without it: ``python -m benchmarks simulator``):

* one shadow lookup, then the state test; a shadow that only ever took these hot paths is
  *usual* (:attr:`_Shadow.usual`), and what that implies (no earlier call owed, nothing
  cancelled, the flags all clear) is not tested again; anything else on a context sends it
  through the general paths for good, which judge every case exactly.  The usual case covers a
  caller's ordinary run in deferred and inline modes alike (the scenario runner's, ``python -m
  benchmarks runner``): register, queue, the one callback owed (inline: during the queue call),
  reads of the final status, reinit of an idle or completed context and reuse, free;
* one item appended to the trace per event, made of plain values or of records the monitor keeps
  anyway (see ``_COMPLETE_BASE``): no event counter, no time stamp except on callbacks;
  :class:`~conformance.results.TraceEvent` objects, labels and messages are built only when
  somebody reads them;
* nothing that makes the garbage collector run: with a trace limit, old events and old freed
  contexts are let go a few at a time, as new ones are made;
* the callback registered with the implementation is a bound method of the context's shadow (no
  closure or partial per registration); in inline and deferred modes callbacks run on the
  caller's thread and the lock is skipped; a callback on any other thread switches locking on
  for good;
* the wrapped adapter is called through ``inner``: bound methods kept as attributes would defeat
  the interpreter's method caching.

Known blind spot: when a caller frees a context whose notified call is still pending (itself
caller misuse, FREE-3) while the call is completing on another thread, a callback already in
flight may be reported as "callback after free" although the implementation saw a completed
context.  Scenarios that free pending contexts should use deferred completion.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from adapters import status as st
from adapters.api import (
    Adapter,
    Callback,
    CallOutputs,
    Capabilities,
    CompletionControl,
    Handle,
    SecBuffer,
    Unsupported,
    Violation,
)
from adapters.async_state import COMPLETION_STATUSES, TABLE, Event, Party, Rule, State, queue_event
from adapters.constants import BUFFER_TYPE_NAMES
from conformance.results import TraceEvent, ViolationRecord

__all__ = ["ContractMonitor"]

_PENDING = st.SEC_I_ASYNC_CALL_PENDING
_OK = st.SEC_E_OK
_IDLE, _PN, _PS, _DONE = State.IDLE, State.PENDING_NOTIFY, State.PENDING_SILENT, State.COMPLETED
_ZOMBIE, _FREED = State.ZOMBIE, State.FREED
_DEAD = frozenset({_ZOMBIE, _FREED})
_IMPL, _CALLER = Party.IMPLEMENTATION.value, Party.CALLER.value

_ACH = "acquire_credentials_handle_async"
_ISC = "initialize_security_context_async"
_ASC = "accept_security_context_async"
_DEL = "delete_security_context_async"
_FCH = "free_credentials_handle_async"
_WRITES_OUTPUTS = frozenset({_ACH, _ISC, _ASC})
_NEW_CONTEXT_STATUSES = frozenset({st.SEC_E_OK, st.SEC_I_CONTINUE_NEEDED})

# Argument names per operation, so the hot path stores bare tuples of values.
_ARG_NAMES: dict[str, tuple[str, ...]] = {
    _ACH: ("principal", "package", "credential_use", "auth_data", "outputs"),
    _ISC: ("credential", "context", "target", "context_req", "input", "outputs", "reserved1", "reserved2"),
    _ASC: ("credential", "context", "input", "context_req", "outputs"),
    _DEL: ("context",),
    _FCH: ("credential",),
    "set_async_notify_callback": ("callback", "data"),
}

# How many freed contexts are remembered (at least), so that double frees and other use after
# free can still be attributed to a label; older ones are forgotten (bounded memory on long
# runs), a generation of _FREED_GENERATION at a time (see ContractMonitor._remember_freed).
_FREED_MEMORY = 1024
_FREED_GENERATION = 64
# With a trace limit, events beyond it are dropped this many at a time (see ContractMonitor._trim).
# The hot paths check the length on queue calls (which compute the next event number anyway) and
# every _FREED_GENERATION frees.
_TRIM_CHUNK = 512


def _column(event: Event) -> dict[State, Rule]:
    """One event's rules by state: the table sliced for a cheap lookup on the hot path."""
    return {state: TABLE[state, event] for state in State}


_ON_SET, _ON_CLEAR = _column(Event.SET_CALLBACK), _column(Event.CLEAR_CALLBACK)
_ON_QUEUE = {event: _column(event) for event in (Event.QUEUE, Event.QUEUE_SILENT_DELETE, Event.QUEUE_SILENT)}
_ON_REINIT, _ON_FREE, _ON_READ = _column(Event.REINIT), _column(Event.FREE), _column(Event.READ)
_E_QUEUE = Event.QUEUE
_Q_NOTIFY, _Q_SILENT_DELETE, _Q_SILENT = (_ON_QUEUE[e] for e in (Event.QUEUE, Event.QUEUE_SILENT_DELETE,
                                                                Event.QUEUE_SILENT))
# Completion statuses an operation may report (PENDING excluded), by operation name.
_ALLOWED = {op: allowed - {st.SEC_I_ASYNC_CALL_PENDING} for op, (_, allowed) in COMPLETION_STATUSES.items()}
_monotonic = time.monotonic
_get_ident = threading.get_ident

# The trace is a list with one item per event, so an event's number is its position plus the
# events dropped from the front (``trace_limit``), and recording one is a single append.  Items
# are plain values, decoded and formatted only when somebody reads the trace (see _decode):
#
# * int: a bare event on async context n, untimed and on the monitor's thread: n when create
#   returned it, -n when SspiFreeAsyncContext was called on it, _COMPLETE_BASE + n when
#   control.complete was called for it (n itself or one operation on it: every int made is an
#   allocation, which costs as much as several bytecodes);
# * list: a queue call, as its call record (see _Call), which holds the context, the arguments
#   and, once the call returned, its status; the same record appended again is the event of
#   the callback for that call (see _CB_STATUS);
# * 4-tuple ``(_K_REGISTER, number, callback, data)``: a registration that returned SEC_E_OK.  It
#   is also the shadow's ``reg`` (the registration the contract says is in force), so the hot
#   path builds one tuple for both;
# * 3-tuple ``(_K_STATUS, number, status)``: a status read of the final status, untimed;
# * 5-tuple ``(_K_STATUS, number, status, time, thread)``: another status read (thread None:
#   the monitor's thread);
# * 6-tuple ``(key, ctx, args, status, time, thread)``: anything else, key a ``(kind, op, detail)``
#   tuple; time and thread None (untimed, the monitor's thread) for the "return" events of the hot
#   paths of reinit and of queue calls completed inline.
#
# Contexts are named by number (see _ref), so items hold only plain values and values the caller
# already owns.  Garbage collection: CPython runs its collector once 700 more containers (tuples,
# lists, objects) have been made than freed, and a run walks every young container; a monitor
# that kept its call records, registrations and shadows while dropping old ones in large batches
# would trigger a run every few hundred round trips, costing more than all its checks.  With a
# trace limit the monitor therefore lets old events go a few at a time (ContractMonitor._trim)
# and forgets freed contexts a few at a time (_FREED_GENERATION), so what it frees keeps pace
# with what it makes.
_COMPLETE_BASE = 1 << 62  # (no async context number gets that far)
_K_CREATE = ("return", "create_async_context", "")
_K_REGISTER = ("return", "set_async_notify_callback", "")
_K_COMPLETE = ("complete", "complete", "")
_K_STATUS = ("status", "get_async_call_status", "")
_K_FREE = ("call", "free_async_context", "")
_K_CALL = {op: ("call", op, "") for op in (_ACH, _ISC, _ASC, _DEL, _FCH)}
_K_RETURN = {op: ("return", op, "") for op in (_ACH, _ISC, _ASC, _DEL, _FCH)}
_K_RETURN_REINIT = ("return", "reinit_async_context", "")
_K_CALLBACK = {op: ("callback", op, "") for op in ("", _ACH, _ISC, _ASC, _DEL, _FCH)}
# The callback and data in a registration record.
_REG_CALLBACK: Final = 2
_REG_DATA: Final = 3


# One accepted (or being queued) async operation, which is also its call event in the trace.  A
# plain list indexed by the constants below: allocating it costs a quarter of a slotted object,
# and one is made per queue call.
_Call = list  # [op, outputs, notify, data, seq, callbacks, cancelled, checked, controlled, lost, chained,
#               ctx, result, time, thread, *arguments]
(_OP, _OUTPUTS, _NOTIFY, _DATA, _SEQ, _CALLBACKS, _CANCELLED, _CHECKED, _CONTROLLED, _LOST, _CHAINED,
 _CTX, _RESULT, _TIME, _THREAD, _CB_STATUS, _CB_TIME) = range(17)
_ARGS = 17  # the call's arguments, which the trace shows
# _NOTIFY: a callback is owed for it; _DATA: what the callback must deliver; _CANCELLED: freed
# before completion, so the callback must not come (OQ-12); _CHECKED: completion checks done;
# _CONTROLLED: CompletionControl said it completed; _LOST: flagged as a lost callback;
# _CHAINED: queued from inside the context's own callback.  Trace fields: _CTX the context as
# _ref names it; _RESULT the status the queue call returned (None until it returns, and when a
# separate "return" event follows); _TIME and _THREAD None on the hot path (untimed, the
# monitor's thread).  A record appended to the trace a second time (its _SEQ is not its
# position then) is the event of its callback, taken by the hot path: the status read inside
# it, _CB_STATUS, at _CB_TIME, on the monitor's thread.


# The fields of _Shadow that the hot path of create leaves unset: no hot path reads them before
# setting them, and _Shadow.leave_usual gives them their values before any general path looks.
_LAZY = ("call", "callbacks", "final", "freed_in_callback", "freeing", "idle_ok", "last_cb_final",
         "last_queue_failed", "notify_ok", "older", "reinit_since_reg", "user")


class _Shadow:
    """What the contract says one async context is doing.

    Its bound method :meth:`fire` is what the monitor registers with the implementation in place
    of the caller's callback: one bound method per registration costs far less than a closure or
    a partial.  (The shadow refers to its monitor, but nothing refers back to a shadow once it
    leaves the monitor's tables, so reference counting still frees it.)"""

    __slots__ = (
        "call", "callbacks", "final", "freed_in_callback", "freeing", "handle", "idle_ok",
        "in_callback", "last_cb_final", "last_queue_failed", "mon", "notify_ok", "number", "older", "reg",
        "reinit_since_reg", "state", "tentative", "user", "usual",
    )
    # No __init__: calling a class without one stays in C, and the hot path of create makes one
    # per context (see _new_shadow for the initial values).
    handle: Handle
    number: int  # label "actx<number>" unless named (ContractMonitor.name), formatted when shown
    mon: ContractMonitor
    user: Callback | None  # the caller's callback that :meth:`fire` forwards to
    state: State
    # the registration in force: (_K_REGISTER, number, user callback, data), see _REG_DATA
    reg: tuple[Any, int, Callback, Any] | None
    call: _Call | None  # the latest accepted call
    older: tuple[_Call, ...]  # earlier calls whose callback is still owed (rare)
    tentative: _Call | None  # a queue call in progress (inline completion)
    final: int | None  # final status observed for the latest call
    freeing: int | None  # thread id inside SspiFreeAsyncContext
    in_callback: int | None  # thread id running the user callback
    callbacks: int
    # flags: registration survived a reinit / RequiresNotify was right for it / an idle read said
    # "not pending" / the last queue failed / the last callback read a final status / freed from
    # inside its own callback (OQ-3)
    reinit_since_reg: bool
    notify_ok: bool
    idle_ok: bool
    last_queue_failed: bool
    last_cb_final: bool
    freed_in_callback: bool
    # Only the usual case has happened to this context so far: every event on it went through a
    # hot path.  The hot paths rely on what that implies instead of testing it again: no earlier
    # call owed (older is empty), not being freed, the flags above all False but reinit_since_reg
    # (kept up to date by the hot paths of register and reinit); every callback so far was the one
    # owed to its call and read a final status; IDLE: no current call (none yet, or the last one
    # completed and the context was reinitialised, not from inside its callback: so a call queued
    # now is not chained), unless a queue call is in progress (tentative, the hot path's record:
    # notified, not chained); PENDING_NOTIFY: the call
    # accepted, its callback owed (notified, none yet, not cancelled); COMPLETED: that call's one
    # callback arrived, final is the status it read (inline completion: the callback arrived
    # while the queue call was still in progress, so the call is still tentative, not yet
    # ``call``); no other state while in _live (the hot path of free takes it out as it frees it).
    # ``callbacks`` counts only the callbacks of calls before the current one (see
    # callback_count).  Anything else that looks at or changes the shadow first calls leave_usual
    # (for good), and the context takes the general paths from then on.
    usual: bool

    def callback_count(self) -> int:
        """How many callbacks arrived for the context (a usual one counts only those of earlier
        calls: see leave_usual)."""
        if self.usual:
            return self._usual_callbacks()
        return self.callbacks

    def _usual_callbacks(self) -> int:
        """callback_count of a usual context: the callbacks of calls before the current one (none
        until the hot path of reinit counts one), and the current call's one callback if it came."""
        call = getattr(self, "call", None)
        if call is None:
            call = self.tentative  # (completed inline, its queue call still in progress)
        return getattr(self, "callbacks", 0) + (1 if call is not None and call[_CALLBACKS] else 0)

    def leave_usual(self) -> None:
        """Called by the general paths before they look at the shadow (see ``usual``): the fields
        in _LAZY, which the hot paths leave unset until they need them, get the values the usual
        case implies."""
        if self.usual:
            self.usual = False
            # (set by the hot paths when they need them)
            # (a usual context counts the callbacks of its current call apart: see usual)
            callbacks = self._usual_callbacks()
            self.callbacks = callbacks
            self.user = getattr(self, "user", None)
            self.call = getattr(self, "call", None)
            self.final = getattr(self, "final", None)
            self.reinit_since_reg = getattr(self, "reinit_since_reg", False)
            if self.state is _FREED:
                self.reg = None  # (the hot path of free leaves it)
            # (never set by a hot path)
            self.older = ()
            self.freeing = None
            self.notify_ok = self.idle_ok = self.last_queue_failed = False
            self.freed_in_callback = False
            # Every callback a usual context had was the hot path's, with a final status.
            self.last_cb_final = callbacks > 0

    @property
    def label(self) -> str:
        custom = self.mon._custom.get(self.number)
        return custom if custom is not None else f"actx{self.number}"

    def fire(self, actx: Any, data: Any) -> None:
        """The callback the implementation runs for this context: checks, then forwards."""
        mon = self.mon
        tid = _get_ident()
        if tid == mon._home_thread and (
            (state := self.state) is _PN
            or (state is _IDLE and (tentative := self.tentative) is not None and not tentative[_CALLBACKS])
        ) and self.usual and not mon._concurrent:
            # The usual case in deferred and inline modes: the callback owed for the pending call,
            # or (inline completion) for the call being queued, the hot path's record (see usual),
            # on the caller's thread (nothing can race: no lock).
            status = mon.inner.get_async_call_status(self.handle)
            # (usual and pending: call is not None; see usual for the tentative call)
            call: _Call = self.call if state is _PN else tentative  # type: ignore[assignment]
            if (
                actx is self.handle and data is call[_DATA] and status in _ALLOWED[op := call[_OP]]
                and ((outputs := call[_OUTPUTS]) is None or (outputs.written and (
                    op is _ACH or status not in _NEW_CONTEXT_STATUSES or outputs.new_context is not None)))
            ):
                # Right context and data, a final status the operation documents, outputs
                # written and phNewContext where due (CALL-14).  The call record is also the
                # callback's trace event (see _CB_STATUS).
                call[_CALLBACKS] = 1
                call[_CHECKED] = True
                call[_CB_STATUS] = status
                call[_CB_TIME] = _monotonic()
                # (callbacks and last_cb_final follow from the call: see leave_usual)
                self.final = status
                self.state = _DONE
                mon._raw.append(call)
            else:
                mon._on_callback(self, actx, data, status, tid, self.reg is not None)
        else:
            mon._fire_general(self, actx, data, tid)
        user = self.user
        self.in_callback = tid
        try:
            if user is not None:
                user(actx, data)
        finally:
            self.in_callback = None


def _new_shadow(handle: Handle, number: int, mon: ContractMonitor) -> _Shadow:
    """A shadow for a new async context, all fields set (the hot path of create sets the same but
    the ones in _LAZY: tests/test_monitor.py checks they agree)."""
    sh = _Shadow()
    sh.handle = handle
    sh.number = number
    sh.mon = mon
    sh.user = sh.reg = sh.call = sh.tentative = sh.final = sh.freeing = sh.in_callback = None
    sh.state = _IDLE
    sh.older = ()
    sh.callbacks = 0
    sh.reinit_since_reg = sh.notify_ok = sh.idle_ok = sh.last_queue_failed = sh.last_cb_final = False
    sh.freed_in_callback = False
    sh.usual = True
    return sh


def _decode(item: Any, seq: int) -> tuple[tuple[str, str, str], Any, Any, int | None, float | None, int | None]:
    """Trace item number ``seq`` (see _COMPLETE_BASE) as (key, ctx, args, status, time, thread)."""
    if type(item) is int:
        if item < 0:
            return _K_FREE, -item, None, None, None, None
        if item >= _COMPLETE_BASE:
            return _K_COMPLETE, item - _COMPLETE_BASE, None, None, None, None
        return _K_CREATE, item, None, None, None, None
    if type(item) is list:
        if item[_SEQ] == seq:  # a queue call: its arguments follow the bookkeeping
            return _K_CALL[item[_OP]], item[_CTX], item[_ARGS:], item[_RESULT], item[_TIME], item[_THREAD]
        return _K_CALLBACK[item[_OP]], item[_CTX], None, item[_CB_STATUS], item[_CB_TIME], None  # its callback
    if len(item) == 3:  # a status read
        return _K_STATUS, item[1], None, item[2], None, None
    if len(item) == 4:  # a registration record
        return _K_REGISTER, item[1], item[2:], _OK, None, None
    if len(item) == 5:  # a timed status read
        key, ctx, status, t, thread = item
        return key, ctx, None, status, t, thread
    return item


class _Raw:
    """A handle that is not a known async context, as recorded in the trace.

    Trace events name async contexts by number, so that events hold only plain values (the
    garbage collector stops tracking such tuples; a long run keeps thousands of events)."""

    __slots__ = ("handle",)

    def __init__(self, handle: Any) -> None:
        self.handle = handle


def _ref(ctx: Any) -> Any:
    if ctx is None:
        return None
    if type(ctx) is _Shadow:
        return ctx.number
    return _Raw(ctx)


def _owed(call: _Call | None) -> bool:
    return call is not None and call[_NOTIFY] and call[_CALLBACKS] == 0 and not call[_CANCELLED]


class _MonitoredControl(CompletionControl):
    """Forwards completion control and tells the monitor which calls have completed."""

    def __init__(self, monitor: ContractMonitor, inner: CompletionControl) -> None:
        self._monitor = monitor
        self._inner = inner

    @property
    def mode(self) -> str:
        return self._inner.mode

    def set_mode(self, mode: str) -> None:
        monitor = self._monitor
        monitor._note("set_mode", mode)
        if mode == "threaded":
            monitor._concurrent = True  # never reset: workers may still be completing
        monitor._inline = mode == "inline"
        monitor._fast_queue = not monitor._concurrent and not monitor._inline
        monitor._fast_inline = not monitor._concurrent and monitor._inline
        monitor._deferred_mode = mode == "deferred"
        before = self._inner.pending()
        self._inner.set_mode(mode)
        if before:
            after = set(self._inner.pending())
            monitor._dropped([h for h in before if h not in after])

    def pending(self) -> list[Handle]:
        return self._inner.pending()

    def complete(self, ctx: Handle) -> bool:
        monitor = self._monitor
        try:
            sh = monitor._live[ctx]
        except (KeyError, TypeError):  # (not a live context: a subscript is cheaper than get())
            return self._complete_general(ctx, None)
        if monitor._concurrent:
            return self._complete_general(ctx, sh)
        monitor._raw.append(_COMPLETE_BASE + sh.number)
        try:
            done = self._inner.complete(ctx)
        except Exception:
            monitor._completion_crashed([sh])
            raise
        if done:
            if sh.usual and sh.state is _DONE:
                # The usual case: the callback owed arrived during complete() (see _Shadow.usual).
                sh.call[_CONTROLLED] = True  # type: ignore[index]
            else:
                monitor._completed_by_control((ctx,))
        return done

    def _complete_general(self, ctx: Handle, sh: _Shadow | None) -> bool:
        monitor = self._monitor
        with monitor._lock:  # (in concurrent mode every update is made under the lock)
            if sh is None:
                sh = monitor._lookup(ctx)
            monitor._raw.append(_COMPLETE_BASE + sh.number if sh is not None else
                                (_K_COMPLETE, _ref(ctx), None, None, None, None))
        try:
            done = self._inner.complete(ctx)
        except Exception:
            if sh is not None:
                monitor._completion_crashed([sh])
            raise
        if done and sh is not None:
            monitor._completed_by_control((ctx,))
        return done

    def complete_all(self) -> int:
        monitor = self._monitor
        inner = self._inner
        waiting = inner.pending()
        with monitor._lock:
            shadows = [(h, monitor._lookup(h)) for h in waiting]
            calls = {h: sh.call for h, sh in shadows if sh is not None}
            monitor._event("complete", "complete_all", None, None, None)
        try:
            count = inner.complete_all()
        except Exception:
            monitor._completion_crashed([sh for _, sh in shadows if sh is not None])
            raise
        if waiting and inner.mode != "threaded":
            # Only calls completed synchronously here are known to be over; in threaded mode a
            # call that left the queue may still be delivering its callback on a worker.
            left = set(inner.pending())
            monitor._completed_by_control([h for h in waiting if h not in left])
            # A call that was waiting and is still waiting, unchanged, was skipped.
            monitor._skipped_by_control([(h, calls[h]) for h in waiting if h in left and h in calls])
        return count

    def inject_fault(self, fault: str, **params: Any) -> None:
        self._monitor._note("inject_fault", f"{fault} {params}" if params else fault)
        self._inner.inject_fault(fault, **params)


# Auth data may carry secrets (test passwords are still passwords to somebody): the trace,
# and so every report, shows their keys but never their values.  ``accounts`` (a server's
# user -> password table) keeps the user names.
_SECRET_WORDS = ("password", "passwd", "secret", "passphrase", "private_key")
_SECRET_TABLES = frozenset({"accounts"})


def _masked(key: str, value: Any, summary: Callable[[Any], Any]) -> Any:
    lowered = key.lower()
    if any(word in lowered for word in _SECRET_WORDS) or lowered == "pin":
        return "***"
    if lowered in _SECRET_TABLES and isinstance(value, Mapping):
        return {str(user): "***" for user in value}
    return summary(value)


class ContractMonitor(Adapter):
    """Wraps ``inner``, forwards every call, records a trace and checks Section A online."""

    def __init__(self, inner: Adapter, *, trace_limit: int | None = None) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._home_thread = _get_ident()
        self._t0 = time.monotonic()
        self._raw: list[Any] = []  # one item per event (see _COMPLETE_BASE)
        self._trimmed = 0  # events dropped from the front of the trace (trace_limit)
        self._first = 1  # the number of the first event held: the next one is _first + len(_raw)
        self._limit = trace_limit or 0
        # With a limit, the oldest events are dropped _TRIM_CHUNK at a time (see _trim), once the
        # trace holds _cap events, that is once event number _trim_at is recorded.
        self._cap = trace_limit + _TRIM_CHUNK if trace_limit else sys.maxsize
        self._trim_at = self._first + self._cap
        self._live: dict[Handle, _Shadow] = {}
        # Freed contexts, remembered for double frees and other use after free: the latest ones in
        # _freed, earlier generations in _freed_old (newest last; the oldest is forgotten as a
        # new one comes, so shadows die at the pace they are made: see _COMPLETE_BASE).  The deque is
        # made when the first generation fills (most monitors, one per scenario, never get there).
        self._freed: dict[Handle, _Shadow] = {}
        self._freed_old: deque[dict[Handle, _Shadow]] | tuple[()] = ()
        self._labels: dict[Any, str] = {}
        self._custom: dict[int, str] = {}  # async context number -> label given with name()
        self._actx_count = itertools.count(1)
        self._found: list[tuple[str, str, str, str | None, int | None]] = []
        self._reported: list[ViolationRecord] = []
        inner_control = inner.control
        # (the wrapper is made when somebody asks for it: see the control property)
        self._inner_control = inner_control
        self._control: _MonitoredControl | None = None
        mode = inner_control.mode if inner_control is not None else None
        # Without completion control, or in threaded mode, callbacks race with the caller and
        # every shadow update takes the lock; in inline and deferred modes callbacks run on the
        # caller's thread and the lock is skipped on the hot paths (it costs as much as a
        # simulator call).  A callback arriving on a foreign thread switches locking on for good.
        self._concurrent = mode is None or mode == "threaded"
        # Inline mode: an accepted call has completed when the queue call returns.  Tracked
        # through our control wrapper; change modes through ``monitor.control``.
        self._inline = mode == "inline"
        # Not concurrent: the usual case of a queue call is handled without the lock (see _queue),
        # judged as deferred (_fast_queue: the call is pending when it returns) or as inline
        # (_fast_inline: it completed, its callback came, before it returned).
        self._fast_queue = not self._concurrent and not self._inline
        self._fast_inline = not self._concurrent and self._inline
        # Deferred mode: nothing completes unless ``monitor.control`` completes it, so a final
        # status before that is a status published too early (CTX-7).
        self._deferred_mode = mode == "deferred"

    # ---- trace and violations ----------------------------------------------------------------
    def _event(self, kind: str, op: str, ctx: Any, args: Any, status: int | None, detail: str = "") -> int:
        """Append an event (rare paths); returns its number."""
        raw = self._raw
        seq = self._first + len(raw)
        raw.append(((kind, op, detail), _ref(ctx), args, status, _monotonic(), _get_ident()))
        if seq >= self._trim_at:
            self._trim()
        return seq

    def _trim(self) -> None:
        """Keep the last ``trace_limit`` events.  Called once _TRIM_CHUNK more are held, so that old
        events die a few at a time, at the pace new ones are made: dropping them in one large
        batch would let the garbage collector's count of new objects run up to its threshold in
        between, and a collection costs more than the events (see _COMPLETE_BASE)."""
        raw = self._raw
        extra = len(raw) - self._limit
        if extra > 0:
            del raw[:extra]
            self._trimmed += extra
            self._first = self._trimmed + 1
            self._trim_at = self._first + self._cap

    def _note(self, op: str, detail: str) -> None:
        """(Called without the lock held.)"""
        conc = self._concurrent
        if conc:
            self._lock.acquire()
        try:
            self._event("note", op, None, None, None, detail)
        finally:
            if conc:
                self._lock.release()

    def _flag(self, requirement: str, message: str, party: str, call: str | None, seq: int | None) -> None:
        """Record a violation (rare path: formatting here is fine)."""
        self._found.append((requirement, message, party, call, seq))
        self._raw.append((("violation", call or "", f"{requirement} [{party}] {message}"), None, None, None,
                          _monotonic(), _get_ident()))

    def _caller_misuse(self, rule: Rule, sh: _Shadow, op: str, seq: int) -> None:
        if rule.requirement is not None and rule.party is Party.CALLER:
            self._flag(rule.requirement, f"{rule.note} ({sh.label})", _CALLER, op, seq)

    @property
    def trace(self) -> list[TraceEvent]:
        """The trace so far (the last ``trace_limit`` events when a limit was set)."""
        with self._lock:
            raw = list(self._raw)
            dropped = self._trimmed
        if self._limit and len(raw) > self._limit:
            dropped += len(raw) - self._limit
            raw = raw[-self._limit:]
        t0, home = self._t0, self._home_thread
        decoded = [_decode(item, dropped + i + 1) for i, item in enumerate(raw)]
        # Hot-path calls are not timed: they take the time of the event before them (the first
        # time stamp kept when the events before them were dropped).
        last = t0 if not dropped else next((e[4] for e in decoded if e[4] is not None), t0)
        events = []
        for i, (key, ctx, args, status, t, thread) in enumerate(decoded):
            if t is None:
                t = last
            else:
                last = t
            kind, op, detail = key
            events.append(TraceEvent(dropped + i + 1, t - t0, home if thread is None else thread, kind, op,
                                     self._label(ctx), self._args(op, args), status, detail))
        return events

    def violations(self) -> list[ViolationRecord]:
        """Every violation found so far (both parties), then those the implementation reported."""
        self._drain_inner()
        if not self._found and not self._reported:
            return []  # (the usual end of a run; lists only grow, so no lock is needed to see it)
        with self._lock:
            found = [ViolationRecord(*entry) for entry in self._found]
            return found + list(self._reported)

    def implementation_violations(self) -> list[ViolationRecord]:
        return [v for v in self.violations() if v.party == _IMPL]

    def _drain_inner(self) -> list[Violation]:
        drained = self.inner.diagnostics()
        if drained:
            with self._lock:
                for v in drained:
                    self._reported.append(
                        ViolationRecord(v.requirement, f"{v.message} (reported by the implementation)", v.party,
                                        v.call, None)
                    )
        return drained

    def name(self, handle: Handle, label: str) -> None:
        """Use ``label`` for ``handle`` in the trace and in messages."""
        conc = self._concurrent
        if conc:
            self._lock.acquire()
        try:
            sh = self._peek(handle)
            if sh is not None:
                self._custom[sh.number] = label
            self._labels[handle] = label
        finally:
            if conc:
                self._lock.release()

    def callback_count(self, ctx: Handle) -> int:
        """How many callbacks arrived for ``ctx`` (live or recently freed)."""
        with self._lock:
            sh = self._peek(ctx)
            return sh.callback_count() if sh is not None else 0

    def finish(self, settle_s: float = 0.2) -> None:
        """End-of-run checks: wait up to ``settle_s`` for owed callbacks, then flag lost ones."""
        if not self._live:
            # Every context was freed: no callback can be owed (only live contexts' can).
            self._drain_inner()
            return
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline and self._owed_calls():
            time.sleep(0.002)
        control = self.inner.control
        still_queued: set[Any] = set()
        if control is not None:
            try:
                still_queued = set(control.pending())
            except Exception:  # an adapter that cannot list pending work: judge everything
                still_queued = set()
        with self._lock:
            for sh, call in self._owed_locked():
                sh.leave_usual()
                if sh.handle in still_queued:
                    self._event("note", call[_OP], sh, None, None, "still queued at the end (never completed)")
                    continue
                call[_CANCELLED] = True  # flag once
                self._flag("OQ-13", f"the callback for {call[_OP]} on {sh.label} never arrived", _IMPL, call[_OP],
                           call[_SEQ])
        self._drain_inner()

    def _owed_calls(self) -> bool:
        with self._lock:
            return bool(self._owed_locked())

    def _owed_locked(self) -> list[tuple[_Shadow, _Call]]:
        owed = []
        for sh in self._live.values():
            sh.leave_usual()
            for call in [*sh.older, sh.call]:
                if _owed(call):
                    owed.append((sh, call))
        return owed  # type: ignore[return-value]

    # ---- lazy formatting -------------------------------------------------------------------------
    def _label(self, ctx: Any) -> str:
        if ctx is None:
            return ""
        if type(ctx) is int:  # an async context, by number
            return self._custom.get(ctx) or f"actx{ctx}"
        if type(ctx) is _Raw:
            return self._handle_label(ctx.handle)
        if type(ctx) is _Shadow:
            return ctx.label
        return self._handle_label(ctx)

    def _handle_label(self, value: Any) -> str:
        try:
            label = self._labels.get(value)
        except TypeError:  # unhashable: not a handle
            label = None
        if label is not None:
            return label
        sh = self._peek(value)
        return sh.label if sh is not None else repr(value)

    def _args(self, op: str, args: Any) -> dict[str, Any]:
        if args is None:
            return {}
        if isinstance(args, dict):
            return args
        names = _ARG_NAMES.get(op, ())
        return {name: self._summary(value) for name, value in zip(names, args, strict=False)}

    def _summary(self, value: Any) -> Any:
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, CallOutputs):
            return "outputs"
        if isinstance(value, Mapping):
            return {str(k): _masked(str(k), v, self._summary) for k, v in value.items()}
        if callable(value):
            return getattr(value, "__qualname__", repr(value))
        return self._handle_label(value)

    # ---- introspection -------------------------------------------------------------------------
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities()

    @property
    def control(self) -> CompletionControl | None:
        control = self._control
        if control is None and self._inner_control is not None:
            # (two threads asking at once may each make one: the wrapper keeps no state of its own)
            self._control = control = _MonitoredControl(self, self._inner_control)
        return control

    def diagnostics(self) -> list[Violation]:
        """Drains the implementation's own reports (they also stay in :meth:`violations`)."""
        return self._drain_inner()

    def close(self) -> None:
        self._note("close", "")
        self.inner.close()
        self._drain_inner()

    # ---- async context management ---------------------------------------------------------------
    # Hot paths (create, register, queue, callback, complete, status read, reinit, free) handle the
    # usual case first, without the lock when no worker thread can race: one shadow lookup, the
    # state test (see _Shadow.usual), one item appended to the trace (two for a queue call completed
    # inline: its callback comes between the call and its return).  Calls are not timed there (the
    # trace gives them the time of the event before them); callbacks are.
    def create_async_context(self) -> Handle | None:
        handle = self.inner.create_async_context()
        if not self._concurrent and handle is not None:
            live = self._live
            if handle not in live:
                # (a recycled handle may still be remembered as freed: lookups try live ones first)
                number = next(self._actx_count)
                # _new_shadow(handle, number, self), written out (a call costs more than the slots)
                live[handle] = sh = _Shadow()
                sh.handle = handle
                sh.number = number
                sh.mon = self
                sh.reg = sh.in_callback = sh.tentative = None
                sh.state = _IDLE
                sh.usual = True  # (the fields in _LAZY are left unset: see _Shadow.leave_usual)
                self._raw.append(number)  # (see _COMPLETE_BASE; the length is checked on frees)
                return handle
        return self._create_slow(handle)

    def _create_slow(self, handle: Handle | None) -> Handle | None:
        conc = self._concurrent
        if conc:
            self._lock.acquire()
        try:
            live = self._live
            if handle is not None and handle not in live:
                live[handle] = sh = _new_shadow(handle, next(self._actx_count), self)
                self._raw.append((_K_CREATE, sh.number, None, None, _monotonic(), _get_ident() if conc else None))
                if len(self._raw) > self._cap:
                    self._trim()
                return handle
            if handle is None:
                self._event("return", "create_async_context", None, None, None, "NULL (out of memory, CTX-2)")
                return None
            sh = _new_shadow(handle, next(self._actx_count), self)
            seq = self._event("return", "create_async_context", sh, None, None)
            old = self._live.get(handle)
            if old is not None:
                old.leave_usual()
                self._flag("CTX-1", f"SspiCreateAsyncContext returned {old.label}, which is still live", _IMPL,
                           "create_async_context", seq)
            self._live[handle] = sh
        finally:
            if conc:
                self._lock.release()
        return handle

    def _lookup(self, ctx: Any) -> _Shadow | None:
        """The shadow of a live or remembered context, for a general path: it leaves the usual
        case (see _Shadow.usual)."""
        sh = self._peek(ctx)
        if sh is not None:
            sh.leave_usual()
        return sh

    def _peek(self, ctx: Any) -> _Shadow | None:
        """The shadow of a live or remembered context, to read its number or callback count only
        (it stays in the usual case)."""
        try:
            sh = self._live.get(ctx)
            if sh is None:
                sh = self._freed.get(ctx)
                if sh is None:
                    for generation in reversed(self._freed_old):
                        sh = generation.get(ctx)
                        if sh is not None:
                            break
        except TypeError:  # unhashable: certainly not one of our handles
            return None
        return sh

    def _remember_freed(self, sh: _Shadow) -> None:
        """``sh`` was freed (and left ``_live``): remember it."""
        freed = self._freed
        freed[sh.handle] = sh
        if len(freed) >= _FREED_GENERATION:
            self._new_freed_generation()

    def _new_freed_generation(self) -> None:
        """_freed is full: it becomes the newest old generation (the oldest is forgotten).  (Also
        where the trace length is checked for the hot paths that do not: see _TRIM_CHUNK.)"""
        old = self._freed_old
        if not isinstance(old, deque):
            self._freed_old = old = deque(maxlen=_FREED_MEMORY // _FREED_GENERATION)
        old.append(self._freed)
        self._freed = {}
        if len(self._raw) > self._cap:
            self._trim()

    def free_async_context(self, ctx: Handle | None) -> None:
        if not self._concurrent:
            try:
                sh = self._live[ctx]
            except (KeyError, TypeError):  # (not a live context: see _MonitoredControl.complete)
                return self._free_general(ctx)
            # (a usual live context is idle, pending or completed: see _Shadow.usual)
            if sh.usual and sh.state is not _PN and sh.in_callback is None:
                # The usual case: nothing outstanding (see _Shadow.usual), the free is legal (no
                # lock: nothing can race).
                sh.state = _FREED  # (and the registration ends with the context: see leave_usual)
                del self._live[ctx]
                freed = self._freed  # (_remember_freed, written out)
                freed[ctx] = sh
                if len(freed) >= _FREED_GENERATION:
                    self._new_freed_generation()
                self._raw.append(-sh.number)
                try:
                    self.inner.free_async_context(ctx)
                except Exception as exc:
                    self._free_crashed(ctx, exc)
                    raise
                return
        self._free_general(ctx)

    def _free_general(self, ctx: Handle | None) -> None:
        conc = self._concurrent
        tid = _get_ident() if conc else self._home_thread
        if conc:
            self._lock.acquire()
        try:
            sh = self._live.get(ctx) if ctx is not None else None
            if sh is not None:
                sh.leave_usual()
            if sh is not None and (sh.state is _DONE or sh.state is _IDLE) and not sh.older and not (
                (call := sh.call) is not None and call[_NOTIFY] and not call[_CALLBACKS] and not call[_CANCELLED]
            ):
                # The usual case: nothing outstanding, the free is legal.
                sh.state = _FREED
                sh.reg = None  # the registration ends with the context
                if sh.in_callback is not None:
                    sh.freed_in_callback = True
                del self._live[ctx]
                self._remember_freed(sh)
                self._raw.append((_K_FREE, sh.number, None, None, _monotonic(), tid if conc else None))
                sh = None
            else:
                sh = self._free_slow(ctx, tid)
        finally:
            if conc:
                self._lock.release()
        try:
            self.inner.free_async_context(ctx)  # NULL is a no-op (FREE-2)
        except Exception as exc:
            self._free_crashed(ctx, exc)
            raise
        finally:
            if sh is not None:
                sh.freeing = None

    def _free_crashed(self, ctx: Any, exc: Exception) -> None:
        """SspiFreeAsyncContext raised: legal frees and tolerated misuse must not crash."""
        with self._lock:
            sh = self._lookup(ctx)
            if sh is None:
                return
            seq = self._event("note", "free_async_context", sh, None, None, f"raised {exc!r}")
            if sh.in_callback == _get_ident():
                self._flag("OQ-3", f"freeing {sh.label} from inside its own callback crashed: {exc!r}", _IMPL,
                           "free_async_context", seq)
            elif sh.state in _DEAD and sh.freeing is None:
                self._flag("FREE-1", f"a second SspiFreeAsyncContext on {sh.label} crashed instead of being "
                           f"diagnosed: {exc!r}", _IMPL, "free_async_context", seq)

    def _free_slow(self, ctx: Handle | None, tid: int) -> _Shadow | None:
        """Misuse, zombies and unknown handles; returns the shadow whose ``freeing`` was set."""
        sh = self._lookup(ctx)
        seq = self._event("call", "free_async_context", sh if sh is not None else ctx, None, None)
        if sh is not None:
            self._before_free(sh, seq, tid)
        elif ctx is not None:
            self._flag("FREE-1", f"SspiFreeAsyncContext on {self._handle_label(ctx)}, not an async context",
                       _CALLER, "free_async_context", seq)
        return sh

    def _before_free(self, sh: _Shadow, seq: int, tid: int) -> None:
        rule = _ON_FREE[sh.state]
        self._caller_misuse(rule, sh, "free_async_context", seq)
        call = sh.call
        if sh.state is _PN and call is not None:
            call[_CANCELLED] = True  # OQ-12: the callback must not run any more
        elif _owed(call) and sh.in_callback is None:
            assert call is not None
            # Status already final but the callback has not run yet: FREE-3 forbids this too.
            self._flag("FREE-3", f"{sh.label} freed before its callback was invoked", _CALLER,
                       "free_async_context", seq)
            call[_CANCELLED] = True
        for older in sh.older:
            older[_CANCELLED] = True
        if sh.in_callback is not None:
            sh.freed_in_callback = True
        if rule.accept:
            if sh.state is _PN:
                sh.freeing = tid  # a callback run from inside this free is a callback after free
            sh.state = rule.next
            if self._live.get(sh.handle) is sh:
                del self._live[sh.handle]
                self._remember_freed(sh)

    def reinit_async_context(self, ctx: Handle | None) -> int:
        if not self._concurrent:
            try:
                sh = self._live[ctx]
            except (KeyError, TypeError):  # (not a live context: see _MonitoredControl.complete)
                sh = None
            # (a usual live context is idle, pending or completed: see _Shadow.usual)
            if (sh is not None and sh.usual and (state := sh.state) is not _PN and sh.tentative is None
                    and sh.in_callback is None):
                # The usual case: idle or completed, no queue call in progress, nothing owed, not
                # from inside the context's callback (a call queued next would be chained: see
                # _Shadow.usual); the table accepts the reinit (no lock: nothing can race).
                result = self.inner.reinit_async_context(ctx)
                if (result & 0xC0000000) in (0x00000000, 0x40000000) and sh.usual:  # (st.nt_success)
                    # What _reset does to a usual context (its call, if any, is not owed).
                    # (a usual context stays in the state it had while it is usual: see fire)
                    raw = self._raw
                    seq = self._first + len(raw)
                    raw.append((_K_RETURN_REINIT, sh.number, None, result, None, None))
                    if seq >= self._trim_at:
                        self._trim()
                    if state is _DONE:
                        # The completed call's one callback now counts among earlier calls' (see
                        # _Shadow.usual).
                        sh.callbacks = getattr(sh, "callbacks", 0) + 1
                        sh.call = None
                        sh.final = None
                        sh.state = _IDLE
                    if sh.reg is not None:
                        sh.reinit_since_reg = True
                    return result
                return self._judge_reinit(ctx, sh, _ON_REINIT[state], False, result)
        with self._lock:
            sh = self._lookup(ctx)
            if sh is not None:
                rule = _ON_REINIT[sh.state]
                unsettled = _owed(sh.call)
        result = self.inner.reinit_async_context(ctx)
        return self._judge_reinit(ctx, sh, rule if sh is not None else None, unsettled if sh is not None else False,
                                  result)

    def _judge_reinit(self, ctx: Any, sh: _Shadow | None, rule: Rule | None, unsettled: bool, result: int) -> int:
        """Everything after the reinit call returned, except the usual case handled inline."""
        with self._lock:
            if sh is not None:
                sh.leave_usual()
            seq = self._event("return", "reinit_async_context", sh if sh is not None else ctx, None, result)
            ok = st.nt_success(result)
            if sh is None:
                self._flag("REINIT-7", f"SspiReinitAsyncContext on {self._handle_label(ctx)}", _CALLER,
                           "reinit_async_context", seq)
                if ok:
                    self._flag("REINIT-4", "reinit of an invalid async context reported success", _IMPL,
                               "reinit_async_context", seq)
                return result
            assert rule is not None
            if rule.accept:
                if ok:
                    self._reset(sh)
                elif not unsettled:
                    self._flag("REINIT-3", f"reinit of {sh.label} ({sh.state.value}) failed with "
                               f"{st.describe(result)}; it must succeed when no call is outstanding",
                               _IMPL, "reinit_async_context", seq)
            elif ok and self._raced(sh, "reinit_async_context"):
                self._reset(sh)
            else:
                self._caller_misuse(rule, sh, "reinit_async_context", seq)
                if ok:
                    req = rule.requirement or "REINIT-4"
                    self._flag(req, f"reinit of {sh.label} in state {sh.state.value} reported success "
                               f"{st.describe(result)}; the contract requires a failure", _IMPL,
                               "reinit_async_context", seq)
        return result

    def _raced(self, sh: _Shadow, op: str) -> bool:
        """Accepted although the shadow says pending, with completions on other threads: the call
        may have completed an instant earlier (its callback still in flight).  Not judged: the
        shadow follows the implementation.  Deferred mode checks these refusals exactly."""
        if not self._concurrent or not (sh.state is _PN or sh.state is _PS):
            return False
        self._event("note", op, sh, None, None, "accepted while the call looked pending: completion may have raced")
        sh.state = _DONE
        return True

    @staticmethod
    def _reset(sh: _Shadow) -> None:
        call = sh.call
        if _owed(call):
            assert call is not None
            sh.older = (*sh.older, call)  # reinit before the callback arrived: it is still owed
        sh.state = _IDLE
        sh.final = None
        sh.call = None
        if sh.reg is not None:
            sh.reinit_since_reg = True

    def set_async_notify_callback(
        self, ctx: Handle | None, callback: Callback | None, data: Any = None
    ) -> int:
        if callback is not None and not self._concurrent:
            try:
                sh = self._live[ctx]
            except (KeyError, TypeError):  # (not a live context: see _MonitoredControl.complete)
                sh = None
            # (a usual live context is idle, pending or completed: see _Shadow.usual)
            if sh is not None and sh.usual and (state := sh.state) is not _PN:
                # The usual case: a registration the table accepts (no lock: nothing can race).
                sh.user = callback
                result = self.inner.set_async_notify_callback(ctx, sh.fire, data)
                if result == _OK and sh.usual and not self._concurrent:
                    # The registration record is also the trace event (see _COMPLETE_BASE).
                    # (usual: notify_ok is False already; a reinit may have set reinit_since_reg)
                    sh.reg = reg = (_K_REGISTER, sh.number, callback, data)
                    sh.reinit_since_reg = False
                    self._raw.append(reg)
                    return result
                if result != _OK:
                    # Refused: the implementation still runs the previous one (usual: the callback
                    # of the registration in force, if any).
                    sh.user = None if (prior := sh.reg) is None else prior[_REG_CALLBACK]
                return self._judge_registration(ctx, sh, callback, data, _ON_SET[state], False, result)
        conc = self._concurrent
        if conc:
            self._lock.acquire()
        try:
            sh = self._lookup(ctx)
            if sh is not None:
                rule = (_ON_SET if callback is not None else _ON_CLEAR)[sh.state]
                unsettled = _owed(sh.call)
        finally:
            if conc:
                self._lock.release()
        hook: Callback | None = callback
        if callback is not None and sh is not None:
            previous, sh.user = sh.user, callback
            hook = sh.fire
        result = self.inner.set_async_notify_callback(ctx, hook, data)
        if callback is not None and sh is not None and result != _OK:
            sh.user = previous
        return self._judge_registration(ctx, sh, callback, data, rule if sh is not None else None,
                                        unsettled if sh is not None else False, result)

    def _judge_registration(self, ctx: Any, sh: _Shadow | None, callback: Callback | None, data: Any,
                            rule: Rule | None, unsettled: bool, result: int) -> int:
        conc = self._concurrent
        if conc:
            self._lock.acquire()
        try:
            if sh is not None:
                sh.leave_usual()
            seq = self._event("return", "set_async_notify_callback", sh if sh is not None else ctx,
                              (callback, data), result)
            if sh is None:
                self._flag("OQ-9", f"SspiSetAsyncNotifyCallback on {self._handle_label(ctx)}", _CALLER,
                           "set_async_notify_callback", seq)
                if result == _OK:
                    self._flag("OQ-9", "registration on an invalid async context reported SEC_E_OK", _IMPL,
                               "set_async_notify_callback", seq)
                return result
            assert rule is not None
            if rule.accept:
                if result == _OK:
                    self._register(sh, callback, data)
                elif not unsettled:
                    self._flag("NOTIFY-9", f"registration on {sh.label} ({sh.state.value}) refused with "
                               f"{st.describe(result)}", _IMPL, "set_async_notify_callback", seq)
            elif result == _OK and self._raced(sh, "set_async_notify_callback"):
                self._register(sh, callback, data)
            else:
                self._caller_misuse(rule, sh, "set_async_notify_callback", seq)
                if result == _OK:
                    req = rule.requirement or "OQ-9"
                    self._flag(req, f"callback change on {sh.label} in state {sh.state.value} was accepted",
                               _IMPL, "set_async_notify_callback", seq)
                    if sh.state not in _DEAD:
                        # Follow the implementation: the new hook and data are what it will deliver.
                        self._register(sh, callback, data)
                        call = sh.call
                        if _owed(call):
                            assert call is not None
                            call[_DATA] = data
                        elif call is not None and callback is None:
                            call[_NOTIFY] = False
        finally:
            if conc:
                self._lock.release()
        return result

    @staticmethod
    def _register(sh: _Shadow, callback: Callback | None, data: Any) -> None:
        sh.reg = (_K_REGISTER, sh.number, callback, data) if callback is not None else None
        sh.reinit_since_reg = sh.notify_ok = False

    def async_context_requires_notify(self, ctx: Handle | None) -> bool:
        try:
            result = self.inner.async_context_requires_notify(ctx)
        except Unsupported:
            self._note("async_context_requires_notify", "unsupported (GEN-7)")
            raise
        with self._lock:
            sh = self._lookup(ctx)
            seq = self._event("status", "async_context_requires_notify", sh if sh is not None else ctx, None,
                              int(bool(result)))
            if sh is None or sh.state in _DEAD:
                self._flag("FREE-1", f"SspiAsyncContextRequiresNotify on {self._label(sh or ctx)}", _CALLER,
                           "async_context_requires_notify", seq)
                return result
            expected = sh.reg is not None
            if bool(result) == expected:
                sh.notify_ok = True
            else:
                # Right before a reinit and wrong after it: the reinit lost the registration.
                req = "NOTIFY-7" if (expected and sh.reinit_since_reg and sh.notify_ok) else "OQ-4"
                self._flag(req, f"SspiAsyncContextRequiresNotify({sh.label}) returned {bool(result)} although "
                           f"a callback is {'registered' if expected else 'not registered'}", _IMPL,
                           "async_context_requires_notify", seq)
        return result

    def get_async_call_status(self, ctx: Handle | None) -> int:
        result = self.inner.get_async_call_status(ctx)
        if not self._concurrent:
            try:
                sh = self._live[ctx]
            except (KeyError, TypeError):  # (not a live context: see _MonitoredControl.complete)
                return self._status_slow(ctx, result)
            if sh.state is _DONE and sh.final == result:
                # The usual case: the final status read again, unchanged (CTX-8).  (A call: not
                # timed, like the others; the callback before it was.)
                self._raw.append((_K_STATUS, sh.number, result))
                return result
        return self._status_slow(ctx, result)

    def _status_slow(self, ctx: Any, result: int) -> int:
        conc = self._concurrent
        if conc:
            self._lock.acquire()
        try:
            sh = self._live.get(ctx) if ctx is not None else None
            if sh is not None and sh.state is _DONE and sh.final == result:
                self._raw.append((_K_STATUS, sh.number, result, _monotonic(), _get_ident() if conc else None))
                return result
            sh = self._lookup(ctx)
            seq = self._event("status", "get_async_call_status", sh if sh is not None else ctx, None, result)
            if sh is None:
                self._flag("FREE-1", f"SspiGetAsyncCallStatus on {self._handle_label(ctx)}", _CALLER,
                           "get_async_call_status", seq)
            else:
                self._check_read(sh, result, seq)
        finally:
            if conc:
                self._lock.release()
        return result

    def _check_read(self, sh: _Shadow, result: int, seq: int) -> None:
        state = sh.state
        if state is _IDLE:
            if result != _PENDING:
                sh.idle_ok = True
            elif sh.last_queue_failed and sh.idle_ok:
                # It read idle before, so the failed queue call did queue something.
                self._flag("OQ-5", f"{sh.label} reads PENDING after its queue call failed", _IMPL,
                           "get_async_call_status", seq)
            else:
                self._flag("OQ-1", f"idle {sh.label} reads SEC_I_ASYNC_CALL_PENDING", _IMPL,
                           "get_async_call_status", seq)
        elif state is _PN or state is _PS:
            call = sh.call
            if result != _PENDING and self._deferred_mode and call is not None and not call[_CONTROLLED] \
                    and not call[_CALLBACKS]:
                self._flag("CTX-7", f"{sh.label} reads {st.describe(result)} although its {call[_OP]} has not "
                           "completed (deferred mode)", _IMPL, "get_async_call_status", seq)
            elif result != _PENDING:
                sh.state = _DONE
                sh.final = result
                if call is not None:
                    self._check_completion(sh, call, result, seq)
            elif call is not None and call[_CONTROLLED]:
                self._flag("CTX-8", f"{sh.label} still reads PENDING after its {call[_OP]} completed", _IMPL,
                           "get_async_call_status", seq)
        elif state is _DONE:
            if sh.final is None:
                sh.final = result
                if result == _PENDING:
                    self._flag("CTX-8", f"{sh.label} reads PENDING after its call completed", _IMPL,
                               "get_async_call_status", seq)
            elif result != sh.final:
                self._flag("CTX-8", f"{sh.label} first reported {st.describe(sh.final)}, now "
                           f"{st.describe(result)} without a reinit or a new call", _IMPL,
                           "get_async_call_status", seq)
        else:
            self._caller_misuse(_ON_READ[state], sh, "get_async_call_status", seq)

    def _check_completion(self, sh: _Shadow, call: _Call, status: int, seq: int) -> None:
        """Checks made once per call, when its completion is first observed."""
        if call[_CHECKED]:
            return
        call[_CHECKED] = True
        op = call[_OP]
        requirement, allowed = COMPLETION_STATUSES[op]
        if status not in allowed and status != _PENDING:
            self._flag(requirement, f"{op} on {sh.label} completed with {st.describe(status)}, which it does "
                       "not document", _IMPL, op, seq)
        outputs = call[_OUTPUTS]
        if outputs is not None and op in _WRITES_OUTPUTS:
            if status == _OK and not outputs.written:
                self._flag("GEN-10", f"{op} on {sh.label} completed with SEC_E_OK without writing its outputs",
                           _IMPL, op, seq)
            if op != _ACH and status in _NEW_CONTEXT_STATUSES and outputs.new_context is None:
                self._flag("CALL-14", f"{op} on {sh.label} completed with {st.describe(status)} but "
                           "phNewContext was not written", _IMPL, op, seq)

    # ---- callbacks ----------------------------------------------------------------------------------
    def _fire_general(self, sh: _Shadow, actx: Any, data: Any, tid: int) -> None:
        """A callback outside the usual case of :meth:`_Shadow.fire`, or on another thread."""
        if tid != self._home_thread:
            # A callback on another thread: from now on every update takes the lock.
            self._concurrent = True
            self._fast_queue = self._fast_inline = False
        conc = self._concurrent
        if conc:
            self._lock.acquire()
        try:
            sh.leave_usual()
            state = sh.state
            freeing = sh.freeing
        finally:
            if conc:
                self._lock.release()
        # (no status read on a dead context, nor on one being freed: it may be gone; and not under
        # the lock: the implementation may call back into the monitor)
        status = self.inner.get_async_call_status(sh.handle) if (
            state is not _FREED and state is not _ZOMBIE and freeing is None) else None
        if conc:
            self._lock.acquire()
        try:
            self._on_callback(sh, actx, data, status, tid, sh.reg is not None)
        finally:
            if conc:
                self._lock.release()

    def _on_callback(self, sh: _Shadow, actx: Any, data: Any, status: int | None, tid: int, current: bool) -> None:
        sh.leave_usual()
        sh.callbacks += 1
        call = None
        for older in sh.older:
            if _owed(older):
                call = older
                break
        if call is None:
            call = sh.call if _owed(sh.call) else None
        if call is None and _owed(sh.tentative):
            call = sh.tentative
        op = call[_OP] if call is not None else (sh.call[_OP] if sh.call is not None else "")
        seq = self._event("callback", op, sh, None, status, "" if actx is sh.handle else "other context")
        if call is not None and status == _PENDING and call is sh.call and call[_CHAINED] and sh.last_cb_final:
            # The previous callback saw a final status and queued this call; a callback now, with
            # this call still pending, is the previous call's callback again.
            call = None
        if call is None:
            self._unexpected_callback(sh, seq, tid, current)
            return
        sh.last_cb_final = status is not None and status != _PENDING
        call[_CALLBACKS] = 1
        if any(c is call for c in sh.older):
            sh.older = tuple(c for c in sh.older if c is not call)
        if actx is not sh.handle and actx != sh.handle:
            self._flag("CTX-10", f"the callback for {sh.label} received {self._label(self._peek(actx) or actx)}",
                       _IMPL, op, seq)
        if data is not call[_DATA]:
            extra = " (the registration was made before a reinit)" if sh.reinit_since_reg else ""
            self._flag("NOTIFY-2", f"the callback for {sh.label} received data {data!r}, registered "
                       f"{call[_DATA]!r}{extra}", _IMPL, op, seq)
        if status == _PENDING:
            self._flag("NOTIFY-8", f"{sh.label} still reads PENDING inside its callback (callback before the "
                       "status was set)", _IMPL, op, seq)
        elif status is not None:
            self._check_completion(sh, call, status, seq)
            if call is sh.call or call is sh.tentative:
                sh.final = status
        if call is sh.call or call is sh.tentative:
            if status != _PENDING:
                if sh.state is _PN or call is sh.tentative:
                    sh.state = _DONE
            elif call is sh.tentative:
                # With the status still PENDING the implementation has not finished: pending.
                sh.state = _PN if call[_NOTIFY] else _PS

    def _unexpected_callback(self, sh: _Shadow, seq: int, tid: int, current: bool = True) -> None:
        last = sh.call
        silent = sh.tentative if sh.tentative is not None else last
        if not current and sh.reg is None and silent is not None and not silent[_NOTIFY]:
            self._flag("NOTIFY-5", f"a callback cleared from {sh.label} ran for its silent {silent[_OP]}", _IMPL,
                       silent[_OP], seq)
            return
        tentative = sh.tentative
        if tentative is not None and tentative[_CALLBACKS] > 0:
            last = tentative  # completed inline during the queue call still in progress
        if last is not None and last[_LOST]:
            self._event("note", "callback", sh, None, None, "late callback (already reported as lost)")
        elif last is not None and last[_NOTIFY] and last[_CALLBACKS] > 0:
            last[_CALLBACKS] += 1
            self._flag("OQ-13", f"a second callback arrived for the {last[_OP]} on {sh.label}", _IMPL, last[_OP], seq)
        elif sh.freeing is not None and sh.freeing != tid:
            # Completion raced with a (misusing) free on another thread: not attributable.
            self._event("note", "callback", sh, None, None, "callback raced with SspiFreeAsyncContext")
        elif sh.state in _DEAD or (last is not None and last[_CANCELLED]):
            self._flag("FREE-3", f"a callback ran for {sh.label} after it was freed (OQ-12)", _IMPL,
                       last[_OP] if last else None, seq)
        elif sh.last_queue_failed:
            self._flag("OQ-5", f"a callback arrived for {sh.label} whose queue call failed", _IMPL, None, seq)
        else:
            self._flag("OQ-13", f"a callback arrived for {sh.label} with no call queued", _IMPL, None, seq)

    def _completed_by_control(self, handles: Iterable[Any]) -> None:
        """CompletionControl completed these: owed callbacks must have arrived by now."""
        with self._lock:
            for handle in handles:
                sh = self._lookup(handle)
                if sh is not None:
                    self._completed(sh)

    def _dropped(self, handles: list[Any]) -> None:
        """Calls that left the queue during a mode switch without completing."""
        with self._lock:
            for handle in handles:
                sh = self._lookup(handle)
                call = sh.call if sh is not None else None
                if sh is not None and call is not None and _owed(call):
                    call[_LOST] = call[_CANCELLED] = True
                    self._flag("OQ-13", f"switching the completion mode dropped the pending {call[_OP]} on "
                               f"{sh.label}: its callback never came", _IMPL, call[_OP], call[_SEQ])

    def _skipped_by_control(self, entries: list[tuple[Any, _Call | None]]) -> None:
        with self._lock:
            for handle, call in entries:
                sh = self._lookup(handle)
                if sh is not None and call is not None and sh.call is call and _owed(call):
                    call[_LOST] = call[_CANCELLED] = True
                    self._flag("OQ-13", f"complete_all returned with the {call[_OP]} on {sh.label} still pending: "
                               "its callback never came", _IMPL, call[_OP], call[_SEQ])

    def _completion_crashed(self, shadows: list[_Shadow]) -> None:
        """The implementation raised while completing: attribute it when a rule explains why."""
        with self._lock:
            for sh in shadows:
                sh.leave_usual()
                call = sh.call
                if sh.freed_in_callback:
                    self._flag("OQ-3", f"{sh.label} was freed inside its own callback, and completing its call then "
                               "crashed the implementation", _IMPL, call[_OP] if call else None, None)
                elif sh.state is _ZOMBIE and call is not None and not call[_NOTIFY]:
                    self._flag("FREE-5", f"completing the silent {call[_OP]} on {sh.label}, freed while in "
                               "flight, crashed the implementation", _IMPL, call[_OP], call[_SEQ])

    def _completed(self, sh: _Shadow) -> None:
        """The latest call on ``sh`` is known to have completed (control, inline mode)."""
        sh.leave_usual()
        call = sh.call
        if call is not None and not call[_CONTROLLED]:
            call[_CONTROLLED] = True
            if _owed(call):
                call[_LOST] = call[_CANCELLED] = True  # flag once
                self._flag("OQ-13", f"{call[_OP]} on {sh.label} completed without invoking its callback",
                           _IMPL, call[_OP], call[_SEQ])
        state = sh.state
        if state is _PN or state is _PS:
            sh.state = _DONE
        elif state is _ZOMBIE:
            sh.state = _FREED

    # ---- queueing ------------------------------------------------------------------------------------
    def _queue(
        self,
        op: str,
        ctx: Any,
        is_delete: bool,
        outputs: CallOutputs | None,
        args: tuple[Any, ...],
        forward: Callable[..., int],
        fargs: tuple[Any, ...],
        caller_error: tuple[str, str] | None = None,
    ) -> int:
        if caller_error is None and (self._fast_queue or self._fast_inline):
            try:
                sh = self._live[ctx]
            except (KeyError, TypeError):  # (not a live context: see _MonitoredControl.complete)
                sh = None
            if sh is not None and sh.state is _IDLE and sh.usual and (reg := sh.reg) is not None:
                # The usual case: a notified queue on an idle context, which the table accepts.
                # The call event goes first (so that it precedes any callback the call triggers);
                # its status is filled in when the call returns.
                raw = self._raw
                seq = self._first + len(raw)
                # (usual and idle: its callback never ran, so the call is not chained)
                new = [op, outputs, True, reg[_REG_DATA], seq, 0, False, False, False, False, False, sh.number,
                       None, None, None, None, None, *args]
                raw.append(new)
                if seq >= self._trim_at:
                    self._trim()
                sh.tentative = new
                if outputs is not None:
                    outputs.written = False  # so that a write during queueing is visible (GEN-10)
                try:
                    result = forward(*fargs)
                except BaseException:
                    self._untentative(sh)
                    raise
                if (
                    result == _OK and not new[_CALLBACKS] and sh.usual and self._fast_queue
                    and (outputs is None or not outputs.written)
                ):
                    # (usual and idle: no call before it, final status and last_queue_failed unset)
                    sh.tentative = None
                    sh.call = new
                    sh.state = _PN
                    new[_RESULT] = result
                    return result
                if result == _OK and self._fast_inline and sh.usual and sh.state is _DONE and sh.tentative is new:
                    return self._completed_inline(sh, new, op, result)
                return self._judge_queue(op, ctx, sh, new, _E_QUEUE, _Q_NOTIFY[_IDLE], result, outputs, None)
        lock = self._lock
        conc = self._concurrent
        if conc:
            lock.acquire()
        try:
            # (out of the usual case before the call: the hot path of fire takes a usual
            # context's tentative call to be the hot path's)
            sh = self._lookup(ctx)
            # The call event goes first (so that it precedes any callback the call triggers); its
            # status is filled in when the call returns, or a "return" event follows.  Without a
            # shadow the record is only the trace event.
            raw = self._raw
            seq = self._first + len(raw)
            reg = sh.reg if sh is not None else None
            record = [op, outputs, reg is not None, None if reg is None else reg[_REG_DATA], seq, 0, False, False,
                      False, False, sh is not None and sh.in_callback is not None, _ref(sh if sh is not None else ctx),
                      None, _monotonic(), _get_ident() if conc else None, None, None,
                      *args]
            raw.append(record)
            if seq >= self._trim_at:
                self._trim()
            call: _Call | None = None
            event, rule = _E_QUEUE, _Q_NOTIFY[_IDLE]  # (judged only when there is a shadow)
            if sh is not None:
                call = record
                if reg is not None:
                    event, rule = _E_QUEUE, _Q_NOTIFY[sh.state]
                else:
                    event = queue_event(is_delete, False)
                    rule = (_Q_SILENT_DELETE if is_delete else _Q_SILENT)[sh.state]
                sh.tentative = call
        finally:
            if conc:
                lock.release()
        if outputs is not None:
            outputs.written = False  # so that a write during queueing is visible (GEN-10)
        try:
            result = forward(*fargs)
        except BaseException:
            if sh is not None:
                self._untentative(sh)
            raise
        return self._judge_queue(op, ctx, sh, call, event, rule, result, outputs, caller_error)

    def _completed_inline(self, sh: _Shadow, call: _Call, op: str, result: int) -> int:
        """The usual case of a queue call in inline mode: accepted, and its callback already taken
        by the hot path of :meth:`_Shadow.fire` (the context is COMPLETED, the call still
        tentative).  What _judge_queue, _accepted and _completed do in that case: a "return" event
        after the callback's, the call becomes the context's, completed under control."""
        raw = self._raw
        seq = self._first + len(raw)
        raw.append((_K_RETURN[op], sh.number, None, result, None, None))  # (untimed, see _COMPLETE_BASE)
        if seq >= self._trim_at:
            self._trim()
        sh.tentative = None
        sh.call = call
        call[_CONTROLLED] = True
        return result

    def _untentative(self, sh: _Shadow) -> None:
        """The queue call raised: it queued nothing."""
        conc = self._concurrent
        if conc:
            self._lock.acquire()
        try:
            sh.leave_usual()
            sh.tentative = None
        finally:
            if conc:
                self._lock.release()

    def _judge_queue(
        self,
        op: str,
        ctx: Any,
        sh: _Shadow | None,
        call: _Call | None,
        event: Event,
        rule: Rule,
        result: int,
        outputs: CallOutputs | None,
        caller_error: tuple[str, str] | None,
    ) -> int:
        """Everything after the queue call returned, except the usual case handled inline."""
        lock = self._lock
        suspect = 0
        conc = self._concurrent
        if conc:
            lock.acquire()
        try:
            if sh is not None:
                sh.leave_usual()
                # Cleared under the lock, together with the bookkeeping below, so that a callback
                # arriving on another thread sees either the tentative call or the accepted one.
                sh.tentative = None
                if (
                    result == _OK and rule.requirement is None and rule.accept and caller_error is None
                    and call is not None and not call[_CALLBACKS]
                    and ((prev := sh.call) is None or prev[_CALLBACKS] or not prev[_NOTIFY] or prev[_CANCELLED])
                    and (outputs is None or not outputs.written) and not self._inline
                ):
                    # The usual case: a legal queue, accepted, not completed yet.
                    sh.call = call
                    sh.state = rule.next
                    sh.final = None
                    sh.last_queue_failed = False
                    call[_RESULT] = result
                    return result
            rseq = self._event("return", op, sh if sh is not None else ctx, None, result)
            if caller_error is not None:
                self._flag(caller_error[0], caller_error[1], _CALLER, op, rseq)
                if result == _OK:
                    self._flag(caller_error[0], f"{op} accepted a call the contract forbids: {caller_error[1]}",
                               _IMPL, op, rseq)
            if sh is None:
                if caller_error is None:
                    self._flag("CALL-2", f"{op} queued on {self._handle_label(ctx)}, not an async context",
                               _CALLER, op, rseq)
                    if result == _OK:
                        self._flag("CALL-2", f"{op} on an invalid async context was accepted", _IMPL, op, rseq)
                return result
            assert call is not None
            if result == _OK and not rule.accept and caller_error is None and self._raced(sh, op):
                rule = _ON_QUEUE[event][_DONE]._replace(requirement=None)
            if caller_error is None:
                self._caller_misuse(rule, sh, op, rseq)
            if result == _OK and caller_error is None:
                if rule.accept:
                    self._accepted(sh, call, rule, rseq)
                    if self._inline:
                        self._completed(sh)  # inline mode: it completed before returning
                else:
                    req = rule.requirement or "CTX-4"
                    self._flag(req, f"{op} on {sh.label} ({sh.state.value}) was accepted; the contract requires "
                               f"a refusal: {rule.note}", _IMPL, op, rseq)
                    if event is Event.QUEUE_SILENT and sh.state in (_IDLE, _DONE):
                        call[_NOTIFY] = False  # follow the implementation: it runs without a callback
                        sh.call, sh.state, sh.final = call, _PS, None
            elif result != _OK:
                sh.last_queue_failed = True
                if call[_CALLBACKS]:
                    self._flag("OQ-5", f"{op} on {sh.label} failed to queue ({st.describe(result)}) but its "
                               "callback ran", _IMPL, op, rseq)
                elif (rule.accept and event is _E_QUEUE and sh.reinit_since_reg and caller_error is None
                      and result == st.SEC_E_INVALID_PARAMETER):
                    # What a lost registration looks like (OQ-6); judged below, outside the lock.
                    suspect = rseq
        finally:
            if conc:
                lock.release()
        if suspect:
            assert sh is not None
            self._judge_refusal_after_reinit(sh, op, suspect)
        return result

    def _judge_refusal_after_reinit(self, sh: _Shadow, op: str, seq: int) -> None:
        """A queue refused with SEC_E_INVALID_PARAMETER after a reinit, the call itself legal as far
        as the monitor can see: a lost registration (NOTIFY-7) is refused that way, but so is a bad
        parameter the monitor does not model (a security context busy on another async context,
        CALL-6; a package's own checks).  The refusal alone is no evidence, so ask the implementation
        whether a callback is registered: only False confirms the loss.  Without RequiresNotify
        (GEN-7) the refusal is all there is, and it is judged as a loss."""
        try:
            registered: bool | None = bool(self.inner.async_context_requires_notify(sh.handle))
        except Unsupported:
            registered = None
        except Exception as exc:  # the probe crashed: no conclusion from it
            self._note(op, f"RequiresNotify probe after a refused queue raised {exc!r}")
            return
        with self._lock:
            self._event("status", "async_context_requires_notify", sh, None,
                        None if registered is None else int(registered), "probe: queue refused after a reinit")
            if registered:
                return  # the registration is there: the refusal was about the call's parameters
            self._flag("NOTIFY-7", f"{op} on {sh.label} was refused as if no callback were registered"
                       f"{'' if registered is None else ' (RequiresNotify agrees)'}; the registration must "
                       "survive SspiReinitAsyncContext", _IMPL, op, seq)

    def _accepted(self, sh: _Shadow, call: _Call, rule: Rule, seq: int) -> None:
        sh.last_queue_failed = False
        previous = sh.call
        if _owed(previous) and previous is not call:
            assert previous is not None
            sh.older = (*sh.older, previous)
        sh.call = call
        if not call[_CALLBACKS]:  # else it completed inline: the callback already moved the state on
            sh.state = rule.next
            sh.final = None
            outputs = call[_OUTPUTS]
            if outputs is not None and outputs.written and self._deferred_mode:
                self._flag("GEN-10", f"{call[_OP]} on {sh.label} wrote its outputs before completing (at queue "
                           "time)", _IMPL, call[_OP], seq)

    def acquire_credentials_handle_async(
        self,
        ctx: Handle | None,
        principal: str | None,
        package: str,
        credential_use: int,
        auth_data: Mapping[str, Any] | None,
        outputs: CallOutputs,
    ) -> int:
        if self._fast_queue or self._fast_inline:
            try:
                sh = self._live[ctx]
            except (KeyError, TypeError):  # (not a live context: see _MonitoredControl.complete)
                sh = None
            if sh is not None and sh.state is _IDLE and sh.usual and (reg := sh.reg) is not None:
                # The usual case (see _queue), written out for the most frequent calls.
                raw = self._raw
                seq = self._first + len(raw)
                call = [_ACH, outputs, True, reg[_REG_DATA], seq, 0, False, False, False, False, False, sh.number,
                        None, None, None, None, None, principal, package, credential_use, auth_data]
                raw.append(call)
                if seq >= self._trim_at:
                    self._trim()
                sh.tentative = call
                outputs.written = False
                try:
                    result = self.inner.acquire_credentials_handle_async(ctx, principal, package, credential_use,
                                                                         auth_data, outputs)
                except BaseException:
                    self._untentative(sh)
                    raise
                if result == _OK and not call[_CALLBACKS] and not outputs.written and sh.usual and self._fast_queue:
                    sh.tentative = None
                    sh.call = call
                    sh.state = _PN
                    call[_RESULT] = result
                    return result
                if result == _OK and self._fast_inline and sh.usual and sh.state is _DONE and sh.tentative is call:
                    return self._completed_inline(sh, call, _ACH, result)
                return self._judge_queue(_ACH, ctx, sh, call, _E_QUEUE, _Q_NOTIFY[_IDLE], result, outputs, None)
        return self._queue(
            _ACH, ctx, False, outputs, (principal, package, credential_use, auth_data),
            self.inner.acquire_credentials_handle_async, (ctx, principal, package, credential_use, auth_data, outputs),
        )

    def initialize_security_context_async(
        self,
        ctx: Handle | None,
        credential: Handle | None,
        context: Handle | None,
        target: str | None,
        context_req: int,
        input: list[SecBuffer] | None,
        outputs: CallOutputs,
        *,
        reserved1: int = 0,
        reserved2: int = 0,
        target_data_rep: int = 0,
    ) -> int:
        error = ("CALL-20", "Reserved1/Reserved2 must be zero") if (reserved1 or reserved2) else None
        return self._queue(
            _ISC, ctx, False, outputs,
            (credential, context, target, context_req, _buffers(input), None, reserved1, reserved2),
            _forward_isc,
            (self.inner.initialize_security_context_async, ctx, credential, context, target, context_req, input,
             outputs, reserved1, reserved2, target_data_rep),
            error,
        )

    def accept_security_context_async(
        self,
        ctx: Handle | None,
        credential: Handle | None,
        context: Handle | None,
        input: list[SecBuffer] | None,
        context_req: int,
        outputs: CallOutputs,
        *,
        target_data_rep: int = 0,
    ) -> int:
        return self._queue(
            _ASC, ctx, False, outputs, (credential, context, _buffers(input), context_req),
            _forward_asc,
            (self.inner.accept_security_context_async, ctx, credential, context, input, context_req, outputs,
             target_data_rep),
        )

    def delete_security_context_async(self, ctx: Handle | None, context: Handle | None) -> int:
        return self._queue(_DEL, ctx, True, None, (context,), self.inner.delete_security_context_async, (ctx, context))

    def free_credentials_handle_async(self, ctx: Handle | None, credential: Handle | None) -> int:
        if self._fast_queue or self._fast_inline:
            try:
                sh = self._live[ctx]
            except (KeyError, TypeError):  # (not a live context: see _MonitoredControl.complete)
                sh = None
            if sh is not None and sh.state is _IDLE and sh.usual and (reg := sh.reg) is not None:
                # The usual case (see _queue), written out for the most frequent calls.
                raw = self._raw
                seq = self._first + len(raw)
                call = [_FCH, None, True, reg[_REG_DATA], seq, 0, False, False, False, False, False, sh.number,
                        None, None, None, None, None, credential]
                raw.append(call)
                if seq >= self._trim_at:
                    self._trim()
                sh.tentative = call
                try:
                    result = self.inner.free_credentials_handle_async(ctx, credential)
                except BaseException:
                    self._untentative(sh)
                    raise
                if result == _OK and not call[_CALLBACKS] and sh.usual and self._fast_queue:
                    sh.tentative = None
                    sh.call = call
                    sh.state = _PN
                    call[_RESULT] = result
                    return result
                if result == _OK and self._fast_inline and sh.usual and sh.state is _DONE and sh.tentative is call:
                    return self._completed_inline(sh, call, _FCH, result)
                return self._judge_queue(_FCH, ctx, sh, call, _E_QUEUE, _Q_NOTIFY[_IDLE], result, None, None)
        return self._queue(_FCH, ctx, False, None, (credential,), self.inner.free_credentials_handle_async,
                           (ctx, credential))

    # ---- synchronous calls --------------------------------------------------------------------------
    def query_context_attributes(self, context: Handle | None, attribute: int) -> tuple[int, Any]:
        result = self.inner.query_context_attributes(context, attribute)
        with self._lock:
            self._event("return", "query_context_attributes", context, {"attribute": attribute}, result[0])
        return result

    def encrypt_message(
        self, context: Handle | None, qop: int, buffers: list[SecBuffer], seqno: int = 0
    ) -> int:
        result = self.inner.encrypt_message(context, qop, buffers, seqno)
        with self._lock:
            self._event("return", "encrypt_message", context, {"qop": qop, "buffers": _buffers(buffers)}, result)
        return result

    def decrypt_message(
        self, context: Handle | None, buffers: list[SecBuffer], seqno: int = 0
    ) -> tuple[int, int]:
        result = self.inner.decrypt_message(context, buffers, seqno)
        with self._lock:
            self._event("return", "decrypt_message", context, {"buffers": _buffers(buffers)}, result[0])
        return result

    def apply_control_token(self, context: Handle | None, buffers: list[SecBuffer]) -> int:
        result = self.inner.apply_control_token(context, buffers)
        with self._lock:
            self._event("return", "apply_control_token", context, {"buffers": _buffers(buffers)}, result)
        return result


# Forwarders for the calls with keyword-only parameters (no closure made per call).
def _forward_isc(isc: Callable[..., int], ctx: Any, credential: Any, context: Any, target: Any, context_req: int,
                 input: Any, outputs: CallOutputs, reserved1: int, reserved2: int, target_data_rep: int) -> int:
    return isc(ctx, credential, context, target, context_req, input, outputs,
               reserved1=reserved1, reserved2=reserved2, target_data_rep=target_data_rep)


def _forward_asc(asc: Callable[..., int], ctx: Any, credential: Any, context: Any, input: Any, context_req: int,
                 outputs: CallOutputs, target_data_rep: int) -> int:
    return asc(ctx, credential, context, input, context_req, outputs, target_data_rep=target_data_rep)


def _buffers(buffers: list[SecBuffer] | None) -> str | None:
    """A summary of a buffer list taken at call time (the implementation may rewrite it later)."""
    if buffers is None:
        return None
    try:
        return " ".join(f"{BUFFER_TYPE_NAMES.get(b.type & 0x0FFFFFFF, hex(b.type))}({b.cb})" for b in buffers)
    except (AttributeError, TypeError):
        return repr(buffers)
