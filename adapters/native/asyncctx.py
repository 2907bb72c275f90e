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
from adapters.async_state import TABLE, Event, Party, Rule, State, queue_event
from adapters.native.handles import NativeAsyncContext

Job = Callable[[], int]
COMPLETIONS = ("threaded", "inline")
_Work = tuple[NativeAsyncContext, str, Job]


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
        self._inflight = 0
        self._draining = 0  # threads waiting in drain(): only then is a completion announced
        self.inline = completion == "inline"
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
        with self.lock:
            ctx = self._resolve(handle, "reinit_async_context")
            if ctx is None:
                return st.STATUS_INVALID_PARAMETER
            found = self._apply(ctx, Event.REINIT, "reinit_async_context")
            if not found.accept:
                return found.refusal
            ctx.status = st.SEC_E_OK  # back to IDLE, callback kept (REINIT-2)
            ctx.operation = None
            return st.STATUS_SUCCESS

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
        with self.lock:
            ctx = self._resolve(handle, "get_async_call_status")
            if ctx is None:
                return st.SEC_E_INVALID_PARAMETER
            found = self._apply(ctx, Event.READ, "get_async_call_status")
            return ctx.status if found.accept else found.refusal

    # ---- queueing (Section D.3) ---------------------------------------------------------
    def queue(self, handle: Any, call: str, prepare: Callable[[], Job], *, is_delete: bool = False) -> int:
        """Queue ``call``: ``prepare`` runs under the lock only once the queue is accepted
        (so a refused queue changes nothing, OQ-5) and returns the job for the worker."""
        with self.lock:
            if self.closed:
                self._check_open()
            ctx = self._resolve(handle, call)
            if ctx is None:
                return st.SEC_E_INVALID_PARAMETER
            found = TABLE[ctx.state, queue_event(is_delete, ctx.callback is not None)]
            if found.requirement:
                self._note(found, call)
            if not found.accept:
                return found.refusal
            job = prepare()
            ctx.state = found.next
            ctx.status = st.SEC_I_ASYNC_CALL_PENDING
            ctx.operation = call
            self._inflight += 1
            if self.inline:
                pass
            elif not self._threads:
                self._start_workers()
        if self.inline:
            self._run(ctx, call, job)  # OQ-2: the callback may fire before the queue returns
        else:
            self._jobs.put((ctx, call, job))
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

    def _run(self, ctx: NativeAsyncContext, call: str, job: Job) -> None:
        try:
            result = job()
        except Exception as exc:  # an adapter bug must not kill the worker silently
            self._report(
                Violation("GEN-5", f"native adapter could not run the synchronous twin: {exc!r}",
                          Party.IMPLEMENTATION.value, call)
            )
            result = st.SEC_E_INTERNAL_ERROR
        callback = data = None
        with self.lock:
            before = ctx.state
            found = self._apply(ctx, Event.COMPLETE, call)
            if found.accept:
                if before is not State.ZOMBIE:
                    ctx.status = result  # status first, then the callback (CTX-8)
                if before is State.PENDING_NOTIFY:
                    callback, data = ctx.callback, ctx.data
                if ctx.state is State.FREED:
                    self._contexts.discard(ctx)  # deferred destruction (OQ-12, FREE-5)
            if callback is None:
                self._finished()
        if callback is not None:
            try:
                callback(ctx, data)
            except Exception as exc:
                self._report(Violation("NOTIFY-1", f"the completion callback raised {exc!r}", "caller", call))
            finally:
                with self.lock:
                    self._finished()

    def _finished(self) -> None:
        """One queued call is over, callback included (called under the lock)."""
        self._inflight -= 1
        if self._draining and not self._inflight:
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
                return self._idle.wait_for(lambda: self._inflight == 0, timeout)
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
