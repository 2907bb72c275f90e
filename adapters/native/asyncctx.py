"""The async-context half of the contract, executed from adapters/async_state.py's table.

The user-mode library has no Sspi*Async functions (they exist only in ksecdd, GEN-1,
GEN-7), so this module provides them the way a user-mode test agent for a driver would:
a queued operation runs its synchronous twin on a worker thread; at completion the final
status is stored first and the callback runs after, exactly once (CTX-8, NOTIFY-2, OQ-13).
Every accept/refuse decision and every state change is read from the shared table, so
this cannot drift from the simulator or from the monitor's expectations.

Two completion modes (adapter option ``completion``):

* ``threaded`` (default): a fixed set of dedicated worker threads takes jobs from one
  ``queue.SimpleQueue`` -- real asynchrony, at the cost of one thread wake-up per call;
* ``inline``: the synchronous twin runs on the caller's thread and the callback fires
  before the queueing call returns, which OQ-2 allows (the queue status is still
  SEC_E_OK and the status is stored before the callback, CTX-8).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from adapters import status as st
from adapters.api import AdapterError, Violation
from adapters.async_state import TABLE, Event, Party, Rule, State
from adapters.native.handles import NativeAsyncContext

Job = tuple[Callable[..., int], tuple[Any, ...]]  # (function, arguments): no closure per call
Prepare = Callable[..., Job]
COMPLETIONS = ("threaded", "inline")
_Work = tuple[NativeAsyncContext, str, Callable[..., int], tuple[Any, ...]]
_PENDING = st.SEC_I_ASYNC_CALL_PENDING
_ZOMBIE, _FREED, _PN = State.ZOMBIE, State.FREED, State.PENDING_NOTIFY


def _column(event: Event) -> dict[State, Rule]:
    """One event's rules by state: the table sliced for a cheap lookup on the hot path
    (as the simulator does)."""
    return {state: TABLE[state, event] for state in State}


_ON_QUEUE, _ON_QUEUE_SD, _ON_QUEUE_S = _column(Event.QUEUE), _column(Event.QUEUE_SILENT_DELETE), _column(
    Event.QUEUE_SILENT
)
_ON_COMPLETE, _ON_REINIT, _ON_READ = _column(Event.COMPLETE), _column(Event.REINIT), _column(Event.READ)


class AsyncEngine:
    """Async contexts, a worker pool and the violations both produce."""

    def __init__(
        self, owner: int, workers: int, report: Callable[[Violation], None], completion: str = "threaded"
    ) -> None:
        if completion not in COMPLETIONS:
            raise ValueError(f"completion must be one of {', '.join(COMPLETIONS)}, not {completion!r}")
        self._owner = owner
        self._report = report
        self.completion = completion
        self.lock = threading.RLock()
        self._idle = threading.Condition(self.lock)
        # Dedicated workers on one SimpleQueue: no Future per call, no executor bookkeeping.
        # Started on the first threaded queue, so an inline engine never creates a thread.
        self._jobs: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._workers = max(1, workers)
        self._threads: list[threading.Thread] = []
        self._contexts: set[NativeAsyncContext] = set()
        # Queued calls not finished yet, as a list's length: append/pop are atomic under the
        # GIL, so the lock-free inline mode cannot lose a count even if a caller queues
        # from several threads at once (close() waits for this to reach zero).
        self._inflight: list[None] = []
        self._draining = 0  # threads waiting in drain(): only then is a completion announced
        self.inline = completion == "inline"
        # Inline: every state change happens on the calling thread, so the hot paths take
        # no lock (the simulator's rule: lock only when a worker thread can race).
        self._concurrent = not self.inline
        self.closed = False

    # ---- helpers ----------------------------------------------------------------------
    def _note(self, found: Rule, call: str) -> None:
        if found.requirement and found.party is not None:
            self._report(Violation(found.requirement, found.note, found.party.value, call))

    def _resolve(self, ctx: Any, call: str) -> NativeAsyncContext | None:
        if type(ctx) is NativeAsyncContext and ctx.owner == self._owner:
            return ctx
        if ctx is not None:
            self._report(Violation("FREE-1", f"not an async context of this adapter: {ctx!r}", "caller", call))
        return None

    def _apply(self, ctx: NativeAsyncContext, event: Event, call: str) -> Rule:
        found = TABLE[ctx.state, event]
        if found.requirement:
            self._note(found, call)
        if found.accept:
            ctx.state = found.next
        return found

    # ---- Section D.2 ------------------------------------------------------------------
    def create(self) -> NativeAsyncContext:
        with self.lock:
            self._check_open()
            ctx = NativeAsyncContext(owner=self._owner)
            self._contexts.add(ctx)
            return ctx

    def free(self, handle: Any) -> None:
        with self.lock:
            ctx = self._resolve(handle, "free_async_context")
            if ctx is None:
                return  # NULL is a no-op (FREE-2)
            self._apply(ctx, Event.FREE, "free_async_context")
            if ctx.state is State.FREED:
                self._contexts.discard(ctx)

    def reinit(self, handle: Any) -> int:
        if type(handle) is not NativeAsyncContext or handle.owner != self._owner:
            self._resolve(handle, "reinit_async_context")
            return st.STATUS_INVALID_PARAMETER
        concurrent = self._concurrent
        if concurrent:
            self.lock.acquire()
        try:
            found = _ON_REINIT[handle.state]
            if found.requirement:
                self._note(found, "reinit_async_context")
            if not found.accept:
                return found.refusal
            handle.state = found.next
            handle.status = st.SEC_E_OK  # back to IDLE, callback kept (REINIT-2)
            handle.operation = None
            return st.STATUS_SUCCESS
        finally:
            if concurrent:
                self.lock.release()

    def set_callback(self, handle: Any, callback: Any, data: Any) -> int:
        with self.lock:
            ctx = self._resolve(handle, "set_async_notify_callback")
            if ctx is None:
                return st.SEC_E_INVALID_PARAMETER
            event = Event.SET_CALLBACK if callback is not None else Event.CLEAR_CALLBACK
            found = self._apply(ctx, event, "set_async_notify_callback")
            if not found.accept:
                return found.refusal
            ctx.callback, ctx.data = (callback, data) if callback is not None else (None, None)
            return st.SEC_E_OK

    def requires_notify(self, handle: Any) -> bool:
        with self.lock:
            ctx = self._resolve(handle, "async_context_requires_notify")
            if ctx is None:
                return False
            found = self._apply(ctx, Event.READ, "async_context_requires_notify")
            # OQ-4: TRUE iff a callback is registered, whether or not the call completed.
            return found.accept and ctx.callback is not None

    def status(self, handle: Any) -> int:
        if type(handle) is not NativeAsyncContext or handle.owner != self._owner:
            self._resolve(handle, "get_async_call_status")
            return st.SEC_E_INVALID_PARAMETER
        # A READ changes no state; the worker stores the status before it moves the state
        # on, so reading both without the lock is one consistent snapshot in either mode.
        found = _ON_READ[handle.state]
        if found.requirement:
            self._note(found, "get_async_call_status")
        return handle.status if found.accept else found.refusal

    # ---- queueing (Section D.3) ---------------------------------------------------------
    # Two variants of queue and completion: inline (no lock, the job runs now) and
    # threaded (under the lock, the job runs on a worker).  They apply the same table
    # columns in the same order; they are separate because this is the hottest path of
    # the adapter and a per-step "if concurrent" costs measurably (docs/native.md).
    def queue(self, handle: Any, call: str, prepare: Prepare, args: tuple[Any, ...], *,
              is_delete: bool = False) -> int:
        """Queue ``call``: ``prepare(*args)`` runs only once the queue is accepted (so a
        refused queue changes nothing, OQ-5) and returns the job as (function, arguments)."""
        if self.closed:
            self._check_open()
        if type(handle) is not NativeAsyncContext or handle.owner != self._owner:
            self._resolve(handle, call)
            return st.SEC_E_INVALID_PARAMETER
        if self._concurrent:
            return self._queue_threaded(handle, call, prepare, args, is_delete)
        if handle.callback is not None:
            found = _ON_QUEUE[handle.state]
        else:
            found = (_ON_QUEUE_SD if is_delete else _ON_QUEUE_S)[handle.state]
        if found.requirement:
            self._note(found, call)
        if not found.accept:
            return found.refusal
        function, arguments = prepare(*args)
        handle.status = _PENDING
        handle.state = found.next
        handle.operation = call
        self._inflight.append(None)
        # OQ-2: the job runs, and the callback fires, before the queueing call returns.
        try:
            result = function(*arguments)
        except Exception as exc:  # an adapter bug must become a status, not escape the queue
            result = self._crashed(exc, call)
        before = handle.state
        found = _ON_COMPLETE[before]
        if found.requirement:
            self._note(found, call)
        if found.accept:
            if before is not _ZOMBIE:
                handle.status = result  # status first, then the callback (CTX-8)
            handle.state = found.next
            if found.next is _FREED:
                self._contexts.discard(handle)  # deferred destruction (OQ-12, FREE-5)
            if before is _PN:
                try:
                    handle.callback(handle, handle.data)
                except Exception as exc:
                    self._report(Violation("NOTIFY-1", f"the completion callback raised {exc!r}", "caller", call))
        self._inflight.pop()  # _finished(), inline
        if self._draining and not self._inflight:
            with self.lock:
                self._idle.notify_all()
        return st.SEC_E_OK

    def _queue_threaded(self, ctx: NativeAsyncContext, call: str, prepare: Prepare, args: tuple[Any, ...],
                        is_delete: bool) -> int:
        with self.lock:
            if ctx.callback is not None:
                found = _ON_QUEUE[ctx.state]
            else:
                found = (_ON_QUEUE_SD if is_delete else _ON_QUEUE_S)[ctx.state]
            if found.requirement:
                self._note(found, call)
            if not found.accept:
                return found.refusal
            function, arguments = prepare(*args)
            ctx.status = _PENDING  # before the state: status() reads without the lock
            ctx.state = found.next
            ctx.operation = call
            self._inflight.append(None)
            if not self._threads:
                self._start_workers()
        self._jobs.put((ctx, call, function, arguments))
        return st.SEC_E_OK

    def _start_workers(self) -> None:
        for index in range(self._workers):
            # Daemon: a library call that never returns must not keep the process alive.
            thread = threading.Thread(target=self._work, name=f"sspi-native-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _work(self) -> None:
        get, run = self._jobs.get, self._run
        while (item := get()) is not None:
            run(*item)

    def _crashed(self, exc: Exception, call: str) -> int:
        """An adapter bug in a job must not kill the worker (or the queue) silently."""
        self._report(
            Violation("GEN-5", f"native adapter could not run the synchronous twin: {exc!r}",
                      Party.IMPLEMENTATION.value, call)
        )
        return st.SEC_E_INTERNAL_ERROR

    def _run(
        self, ctx: NativeAsyncContext, call: str, function: Callable[..., int], arguments: tuple[Any, ...]
    ) -> None:
        """A worker runs one queued job and completes it."""
        try:
            result = function(*arguments)
        except Exception as exc:
            result = self._crashed(exc, call)
        callback = data = None
        with self.lock:
            before = ctx.state
            found = _ON_COMPLETE[before]
            if found.requirement:
                self._note(found, call)
            if found.accept:
                if before is not _ZOMBIE:
                    # Status first, then the state (status() reads without the lock), then
                    # the callback (CTX-8).
                    ctx.status = result
                ctx.state = found.next
                if before is _PN:
                    callback, data = ctx.callback, ctx.data
                if found.next is _FREED:
                    self._contexts.discard(ctx)  # deferred destruction (OQ-12, FREE-5)
            if callback is None:
                self._finished()
                return
        try:
            callback(ctx, data)
        except Exception as exc:
            self._report(Violation("NOTIFY-1", f"the completion callback raised {exc!r}", "caller", call))
        finally:
            with self.lock:
                self._finished()

    def _finished(self) -> None:
        """One queued call is over, callback included (under the lock when threaded)."""
        self._inflight.pop()
        if self._draining and not self._inflight:
            with self.lock:  # drain() waits on the real lock's condition, whatever the mode
                self._idle.notify_all()
    # ---- shutdown -----------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise AdapterError("the native adapter is closed")

    def drain(self, timeout: float | None) -> bool:
        """Wait until no queued call is running; False if ``timeout`` ran out."""
        with self.lock:
            self._draining += 1
            try:
                return self._idle.wait_for(lambda: not self._inflight, timeout)
            finally:
                self._draining -= 1

    def close(self, timeout: float | None) -> list[NativeAsyncContext]:
        """Stop accepting work; returns the async contexts the caller never freed (CTX-6)."""
        finished = self.drain(timeout)
        with self.lock:
            self.closed = True
            leaked = sorted((c for c in self._contexts if c.state is not State.FREED), key=lambda c: c.ident)
            self._contexts.clear()
        for _ in self._threads:
            self._jobs.put(None)
        if finished:
            for thread in self._threads:
                thread.join(1.0)
        if not finished:
            self._report(
                Violation("CALL-3", f"a queued call was still running {timeout}s after close()", "implementation",
                          "close")
            )
        return leaked
