"""Deliberately faulty simulators, to measure the suite's power to find bugs.

Each mutant is the reference simulator with ONE behavioural bug: a subclass that overrides
a single method (completely or around ``super()``).  None of them sets a flag that a checker
could read; a checker must notice the bug from the outside, through the adapter interface.
``requirement`` is the requirement ID a conforming checker must cite for it.

Select one with ``--adapter simulator --adapter-option mutant=NAME``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from adapters import status as st
from adapters.api import Callback, CallOutputs, Handle, ImplementationCrashed
from adapters.async_state import TABLE, Event, State
from adapters.simulator.adapter import AsyncContext, SecurityContext, SimulatorAdapter, _Control

_PENDING_STATES = (State.PENDING_NOTIFY, State.PENDING_SILENT)


@dataclass(frozen=True)
class Mutant:
    name: str
    description: str
    requirement: str  # the ID a checker must report for this bug
    cls: type[SimulatorAdapter]


MUTANTS: dict[str, Mutant] = {}


_Decorator = Callable[[type[SimulatorAdapter]], type[SimulatorAdapter]]


def _mutant(name: str, requirement: str, description: str) -> _Decorator:
    def register(cls: type[SimulatorAdapter]) -> type[SimulatorAdapter]:
        if name in MUTANTS:
            raise ValueError(f"duplicate mutant name {name!r}")
        MUTANTS[name] = Mutant(name, description, requirement, cls)
        return cls

    return register


def _deliver_parts(sim: SimulatorAdapter, actx: AsyncContext, status: int) -> tuple[State, Callback | None, Any]:
    """The state bookkeeping of a completion, without the callback: (previous state, cb, data)."""
    state = actx.state
    rule = TABLE[state, Event.COMPLETE]
    actx.status = status
    actx.state = rule.next
    if rule.next is State.FREED:
        sim._live_async.discard(actx)
    return state, actx.callback, actx.data


# ---- callbacks -----------------------------------------------------------------------------------


@_mutant("double-callback", "OQ-13", "every callback is invoked twice")
class DoubleCallback(SimulatorAdapter):
    def _invoke(self, callback: Callback | None, actx: AsyncContext, data: Any) -> None:
        super()._invoke(callback, actx, data)
        super()._invoke(callback, actx, data)


@_mutant("lost-callback", "OQ-13", "completions never invoke the callback")
class LostCallback(SimulatorAdapter):
    def _invoke(self, callback: Callback | None, actx: AsyncContext, data: Any) -> None:
        return


@_mutant("callback-before-status", "NOTIFY-8", "the callback runs before the final status is stored")
class CallbackBeforeStatus(SimulatorAdapter):
    def _deliver(self, actx: AsyncContext, status: int) -> None:
        with self._lock:
            notify = actx.state is State.PENDING_NOTIFY
            callback, data = actx.callback, actx.data
        if notify:
            self._invoke(callback, actx, data)  # status still reads PENDING in here
        with self._lock:
            _deliver_parts(self, actx, status)  # the callback may have freed it: use the state now


@_mutant("callback-data-crossed", "NOTIFY-2", "each callback receives the data of the previous completion")
class CallbackDataCrossed(SimulatorAdapter):
    _previous: Any = None

    def _invoke(self, callback: Callback | None, actx: AsyncContext, data: Any) -> None:
        previous, self._previous = self._previous, data
        super()._invoke(callback, actx, data if previous is None else previous)


@_mutant("callback-wrong-context", "CTX-10", "each callback receives the async context of the previous completion")
class CallbackWrongContext(SimulatorAdapter):
    _previous: AsyncContext | None = None

    def _invoke(self, callback: Callback | None, actx: AsyncContext, data: Any) -> None:
        previous, self._previous = self._previous, actx
        super()._invoke(callback, previous if previous is not None else actx, data)


@_mutant("zombie-calls-back", "FREE-3", "a context freed while its call is pending still gets its callback")
class ZombieCallsBack(SimulatorAdapter):
    def _deliver(self, actx: AsyncContext, status: int) -> None:
        with self._lock:
            state, callback, data = _deliver_parts(self, actx, status)
        if state in (State.PENDING_NOTIFY, State.ZOMBIE):
            self._invoke(callback, actx, data)


@_mutant("free-runs-callback", "FREE-3", "freeing a context with a pending call runs its callback at once")
class FreeRunsCallback(SimulatorAdapter):
    def free_async_context(self, ctx: Handle | None) -> None:
        pending = type(ctx) is AsyncContext and ctx.state is State.PENDING_NOTIFY
        callback, data = (ctx.callback, ctx.data) if pending else (None, None)  # type: ignore[union-attr]
        super().free_async_context(ctx)
        if pending:
            self._invoke(callback, ctx, data)  # type: ignore[arg-type]


# ---- status ----------------------------------------------------------------------------------------


@_mutant("silent-status-stuck", "CTX-8", "a call without a callback never publishes its final status")
class SilentStatusStuck(SimulatorAdapter):
    def _deliver(self, actx: AsyncContext, status: int) -> None:
        if actx.state is State.PENDING_SILENT:
            status = st.SEC_I_ASYNC_CALL_PENDING  # only the notify path stores the result
        super()._deliver(actx, status)


@_mutant("status-read-clears", "CTX-8", "reading a final status resets it to SEC_E_OK")
class StatusReadClears(SimulatorAdapter):
    def get_async_call_status(self, ctx: Handle | None) -> int:
        value = super().get_async_call_status(ctx)
        if type(ctx) is AsyncContext and ctx.state is State.COMPLETED:
            ctx.status = st.SEC_E_OK
        return value


@_mutant("idle-reads-pending", "OQ-1", "a new context reads SEC_I_ASYNC_CALL_PENDING before any call")
class IdleReadsPending(SimulatorAdapter):
    def create_async_context(self) -> Handle | None:
        actx = super().create_async_context()
        if type(actx) is AsyncContext:
            actx.status = st.SEC_I_ASYNC_CALL_PENDING
        return actx


@_mutant("undocumented-completion-status", "CALL-7",
         "ACH with an unknown package completes with SEC_E_INVALID_PARAMETER instead of SEC_E_SECPKG_NOT_FOUND")
class UndocumentedCompletionStatus(SimulatorAdapter):
    def _do_acquire(
        self,
        principal: str | None,
        package: str,
        use: int,
        auth_data: Mapping[str, Any] | None,
        outputs: CallOutputs,
    ) -> int:
        result = super()._do_acquire(principal, package, use, auth_data, outputs)
        return st.SEC_E_INVALID_PARAMETER if result == st.SEC_E_SECPKG_NOT_FOUND else result


@_mutant("requires-notify-means-pending", "OQ-4",
         "SspiAsyncContextRequiresNotify answers 'a call is pending' instead of 'a callback is registered'")
class RequiresNotifyMeansPending(SimulatorAdapter):
    def async_context_requires_notify(self, ctx: Handle | None) -> bool:
        if type(ctx) is AsyncContext and ctx.state in (State.IDLE, State.COMPLETED):
            return False
        return super().async_context_requires_notify(ctx)


# ---- refusals that are not made ------------------------------------------------------------------


@_mutant("reinit-while-pending", "REINIT-4", "reinit of a context with a pending call reports success")
class ReinitWhilePending(SimulatorAdapter):
    def reinit_async_context(self, ctx: Handle | None) -> int:
        if type(ctx) is AsyncContext and ctx.state in _PENDING_STATES:
            return st.STATUS_SUCCESS  # the busy check only sets the return value of another branch
        return super().reinit_async_context(ctx)


@_mutant("queue-while-pending", "CTX-4", "queueing on a context whose call is pending reports SEC_E_OK")
class QueueWhilePending(SimulatorAdapter):
    def _queue(
        self, ctx: Handle | None, is_delete: bool, job: tuple[Any, ...], call: str, busy: Any = None
    ) -> int:
        if type(ctx) is AsyncContext and ctx.state in _PENDING_STATES:
            return st.SEC_E_OK  # dropped on the floor, but reported as queued
        return super()._queue(ctx, is_delete, job, call, busy)


@_mutant("set-callback-while-pending", "OQ-9", "the callback can be replaced while a call is pending")
class SetCallbackWhilePending(SimulatorAdapter):
    def set_async_notify_callback(self, ctx: Handle | None, callback: Callback | None, data: Any = None) -> int:
        if type(ctx) is AsyncContext and ctx.state in _PENDING_STATES:
            ctx.callback, ctx.data = callback, (data if callback is not None else None)
            return st.SEC_E_OK
        return super().set_async_notify_callback(ctx, callback, data)


@_mutant("queue-without-callback", "NOTIFY-4", "any operation may be queued without a callback, not only Delete")
class QueueWithoutCallback(SimulatorAdapter):
    def _queue(
        self, ctx: Handle | None, is_delete: bool, job: tuple[Any, ...], call: str, busy: Any = None
    ) -> int:
        # The NULL-callback check treats every operation as a delete.
        return super()._queue(ctx, True, job, call, busy)


@_mutant("queue-failure-calls-back", "OQ-5", "an out-of-memory queue failure is reported after the call was queued")
class QueueFailureCallsBack(SimulatorAdapter):
    def _queue(
        self, ctx: Handle | None, is_delete: bool, job: tuple[Any, ...], call: str, busy: Any = None
    ) -> int:
        oom = bool(self._faults) and self._faults.pop("queue-oom", None) is not None
        result = super()._queue(ctx, is_delete, job, call, busy)
        return st.SEC_E_INSUFFICIENT_MEMORY if oom and result == st.SEC_E_OK else result


# ---- reinit ----------------------------------------------------------------------------------------


@_mutant("reinit-drops-callback", "NOTIFY-7", "SspiReinitAsyncContext also clears the registered callback")
class ReinitDropsCallback(SimulatorAdapter):
    def reinit_async_context(self, ctx: Handle | None) -> int:
        result = super().reinit_async_context(ctx)
        if type(ctx) is AsyncContext and st.nt_success(result):
            ctx.callback = ctx.data = None
        return result


@_mutant("reinit-refuses-completed", "REINIT-3", "reinit of a completed context fails, so it cannot be reused")
class ReinitRefusesCompleted(SimulatorAdapter):
    def reinit_async_context(self, ctx: Handle | None) -> int:
        if type(ctx) is AsyncContext and ctx.state is State.COMPLETED:
            return st.STATUS_INVALID_DEVICE_STATE
        return super().reinit_async_context(ctx)


# ---- outputs ---------------------------------------------------------------------------------------


@_mutant("outputs-at-queue-time", "GEN-10", "ACH writes its outputs when queued instead of at completion")
class OutputsAtQueueTime(SimulatorAdapter):
    def acquire_credentials_handle_async(
        self,
        ctx: Handle | None,
        principal: str | None,
        package: str,
        credential_use: int,
        auth_data: Mapping[str, Any] | None,
        outputs: CallOutputs,
    ) -> int:
        queueable = type(ctx) is AsyncContext and ctx.state not in _PENDING_STATES and ctx.callback is not None
        if not queueable:
            return super().acquire_credentials_handle_async(ctx, principal, package, credential_use, auth_data,
                                                            outputs)
        status = self._do_acquire(principal, package, credential_use, auth_data, outputs)
        return self._queue(ctx, False, (_constant, status), "acquire_credentials_handle_async")


def _constant(value: int) -> int:
    return value


@_mutant("new-context-not-written", "CALL-14", "the first ISC/ASC leg does not write phNewContext")
class NewContextNotWritten(SimulatorAdapter):
    def _do_handshake(
        self,
        client: bool,
        credential: Any,
        context: Any,
        target: str | None,
        context_req: int,
        input: Any,
        outputs: CallOutputs,
    ) -> int:
        result = super()._do_handshake(client, credential, context, target, context_req, input, outputs)
        if context is None and type(outputs.new_context) is SecurityContext:
            outputs.new_context = None  # the handle is made (and leaks) but never handed out
        return result


# ---- ordering and timing (found by the fuzzer: no single hand-written scenario reaches them) -------


@_mutant("reverse-order-lost-callback", "OQ-13",
         "a call completed while a call on an older async context still waits loses its callback")
class ReverseOrderLostCallback(SimulatorAdapter):
    def _deliver(self, actx: AsyncContext, status: int) -> None:
        # The completion port walks its queue oldest-first and forgets an entry it overtook.
        overtaking = any(
            type(other) is AsyncContext and other is not actx and other.serial < actx.serial
            for other in self._scheduler.pending()
        )
        if overtaking and actx.state is State.PENDING_NOTIFY:
            with self._lock:
                _deliver_parts(self, actx, status)  # completion bookkeeping, callback forgotten
            return
        super()._deliver(actx, status)


@_mutant("threaded-callback-before-status", "NOTIFY-8",
         "on completion threads (only) the callback runs before the final status is stored")
class ThreadedCallbackBeforeStatus(SimulatorAdapter):
    def _deliver(self, actx: AsyncContext, status: int) -> None:
        if self._scheduler.mode != "threaded" or actx.state is not State.PENDING_NOTIFY:
            super()._deliver(actx, status)
            return
        callback, data = actx.callback, actx.data
        self._invoke(callback, actx, data)  # the worker publishes the result afterwards
        with self._lock:
            _deliver_parts(self, actx, status)


@_mutant("reinit-in-callback-drops-callback", "NOTIFY-7",
         "a context reinitialised from inside its callback loses its registration when the callback returns")
class ReinitInCallbackDropsCallback(SimulatorAdapter):
    def _invoke(self, callback: Callback | None, actx: AsyncContext, data: Any) -> None:
        super()._invoke(callback, actx, data)
        if callback is not None and actx.state is State.IDLE:
            # The completion epilogue "resets" what it takes for a finished call record.
            actx.callback = actx.data = None


@_mutant("silent-delete-stale-callback", "NOTIFY-5",
         "a Delete queued without a callback runs the callback of the context's previous notified call")
class SilentDeleteStaleCallback(SimulatorAdapter):
    def _deliver(self, actx: AsyncContext, status: int) -> None:
        last: dict[AsyncContext, tuple[Callback, Any]] = self.__dict__.setdefault("_last_notified", {})
        silent = actx.state is State.PENDING_SILENT
        if actx.state is State.PENDING_NOTIFY and actx.callback is not None:
            last[actx] = (actx.callback, actx.data)  # a per-context cache never invalidated
        super()._deliver(actx, status)
        if silent and actx in last:
            callback, data = last[actx]
            self._invoke(callback, actx, data)


@_mutant("zombie-double-free-crashes", "FREE-1",
         "freeing again a context whose destruction is deferred (freed while pending) crashes")
class ZombieDoubleFreeCrashes(SimulatorAdapter):
    def free_async_context(self, ctx: Handle | None) -> None:
        if type(ctx) is AsyncContext and ctx.state is State.ZOMBIE:
            raise ImplementationCrashed("double free in the deferred-destruction list")
        super().free_async_context(ctx)


@_mutant("zombie-completion-crashes", "FREE-5",
         "completing a silent Delete whose async context was already freed (FREE-5) crashes")
class ZombieCompletionCrashes(SimulatorAdapter):
    def _deliver(self, actx: AsyncContext, status: int) -> None:
        if actx.state is State.ZOMBIE and actx.callback is None:
            raise ImplementationCrashed("completion touched a freed async context")
        super()._deliver(actx, status)


@_mutant("stale-data-after-reinit", "NOTIFY-2",
         "re-registering the callback of an idle context that had one (e.g. after reinit) keeps the old data")
class StaleDataAfterReinit(SimulatorAdapter):
    def set_async_notify_callback(self, ctx: Handle | None, callback: Callback | None, data: Any = None) -> int:
        old = ctx.data if type(ctx) is AsyncContext and ctx.state is State.IDLE and ctx.callback else None
        result = super().set_async_notify_callback(ctx, callback, data)
        if result == st.SEC_E_OK and callback is not None and old is not None:
            ctx.data = old  # type: ignore[union-attr]  # only the routine pointer is updated
        return result


@_mutant("mode-switch-drops-pending", "OQ-13",
         "switching the completion mode forgets calls still waiting in the deferred queue")
class ModeSwitchDropsPending(SimulatorAdapter):
    def set_completion_mode(self, mode: str) -> None:
        if mode != self._scheduler.mode:
            self._scheduler.take_all()  # dropped, never completed
        super().set_completion_mode(mode)


@_mutant("complete-all-skips-last", "OQ-13",
         "completing every pending call leaves the most recently queued one pending when two or more wait")
class CompleteAllSkipsLast(SimulatorAdapter):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._control = _SkipLastControl(self)


class _SkipLastControl(_Control):
    def complete_all(self) -> int:
        waiting = self._sim._scheduler.take_all()
        if len(waiting) >= 2:
            self._sim._scheduler._waiting[waiting[-1]] = None  # off by one: the last stays queued
            waiting = waiting[:-1]
        for actx in waiting:
            self._sim._complete(actx)
        return len(waiting)


@_mutant("pending-status-clobbered", "CTX-7",
         "a completion also stores its status in every other context whose call is still pending")
class PendingStatusClobbered(SimulatorAdapter):
    def _deliver(self, actx: AsyncContext, status: int) -> None:
        super()._deliver(actx, status)
        for other in list(self._scheduler.pending()):
            if type(other) is AsyncContext and other is not actx:
                other.status = status  # one status slot shared by the completion port


@_mutant("reuse-keeps-old-status", "CTX-7",
         "queueing again on a completed context without reinit leaves the previous final status readable "
         "(deferred and inline completion)")
class ReuseKeepsOldStatus(SimulatorAdapter):
    def _queue(
        self, ctx: Handle | None, is_delete: bool, job: tuple[Any, ...], call: str, busy: Any = None
    ) -> int:
        reuse = type(ctx) is AsyncContext and ctx.state is State.COMPLETED and self._scheduler.mode != "threaded"
        previous = ctx.status if reuse else None  # type: ignore[union-attr]
        result = super()._queue(ctx, is_delete, job, call, busy)
        if previous is not None and result == st.SEC_E_OK and ctx.state in _PENDING_STATES:  # type: ignore[union-attr]
            ctx.status = previous  # type: ignore[union-attr]
        return result


@_mutant("free-in-callback-crashes", "OQ-3",
         "the completion touches the context after its callback returns: freeing it inside the callback crashes")
class FreeInCallbackCrashes(SimulatorAdapter):
    def _invoke(self, callback: Callback | None, actx: AsyncContext, data: Any) -> None:
        super()._invoke(callback, actx, data)
        if actx.state is State.FREED:
            raise ImplementationCrashed("completion epilogue used an async context its callback freed")
