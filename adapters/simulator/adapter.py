"""The reference simulator: the async SSPI contract, executed from one table.

Every async-context function consults :data:`adapters.async_state.TABLE` to decide what
it returns and what state follows; the contract monitor checks other implementations
against the same table.  Security packages are plug-ins (``packages/``) that run at
*completion* time, so outputs are written at completion as in C (GEN-10, OQ-10).

Caller misuse (FREE-3, OQ-6, OQ-7, OQ-9, REINIT-4, CALL-6, double free, use after free,
leaks) is answered with the table's refusal status and recorded as a structured
:class:`~adapters.api.Violation` with ``party="caller"``; the simulator never crashes on it.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping
from typing import Any

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
from adapters.async_state import TABLE, Event, Party, Rule, State
from adapters.simulator.packages.base import PackageProfile, SecurityPackage
from adapters.simulator.packages.registry import package_classes
from adapters.simulator.scheduler import Scheduler

_PENDING = st.SEC_I_ASYNC_CALL_PENDING
_S_IDLE, _S_PN, _S_PS, _S_DONE = State.IDLE, State.PENDING_NOTIFY, State.PENDING_SILENT, State.COMPLETED
_S_ZOMBIE, _S_FREED = State.ZOMBIE, State.FREED
_E_QUEUE, _E_QSD, _E_QS = Event.QUEUE, Event.QUEUE_SILENT_DELETE, Event.QUEUE_SILENT
_E_COMPLETE, _E_FREE, _E_REINIT = Event.COMPLETE, Event.FREE, Event.REINIT
_READABLE = frozenset({_S_IDLE, _S_PN, _S_PS, _S_DONE})


def _column(event: Event) -> dict[State, Rule]:
    """One event's rules by state: the table sliced for a cheap lookup on the hot path."""
    return {state: TABLE[state, event] for state in State}


_ON_SET, _ON_CLEAR = _column(Event.SET_CALLBACK), _column(Event.CLEAR_CALLBACK)
_ON_QUEUE, _ON_QUEUE_SD, _ON_QUEUE_S = _column(_E_QUEUE), _column(_E_QSD), _column(_E_QS)
_ON_COMPLETE, _ON_FREE, _ON_REINIT = _column(_E_COMPLETE), _column(_E_FREE), _column(_E_REINIT)
_serials = itertools.count(1)


class AsyncContext:
    """The simulator's SspiAsyncContext; callers treat it as an opaque handle."""

    __slots__ = ("callback", "data", "job", "serial", "state", "status")

    def __init__(self) -> None:
        self.serial = next(_serials)
        self.state = _S_IDLE
        self.status = st.SEC_E_OK  # OQ-1: an idle context reads as SEC_E_OK
        self.callback: Callback | None = None
        self.data: Any = None
        self.job: tuple[Any, ...] | None = None

    def __repr__(self) -> str:
        return f"<sim async-ctx #{self.serial} {self.state.value}>"


class Credential:
    """A CredHandle: the package's credential state plus bookkeeping."""

    __slots__ = ("alive", "contexts", "package", "serial", "state")

    def __init__(self, package: SecurityPackage, state: Any) -> None:
        self.serial = next(_serials)
        self.package = package
        self.state = state
        self.alive = True
        self.contexts = 0  # live security contexts built on it (CALL-28)

    def __repr__(self) -> str:
        return f"<sim credential #{self.serial}{'' if self.alive else ' freed'}>"


class SecurityContext:
    """A CtxtHandle."""

    __slots__ = ("alive", "busy", "credential", "package", "serial", "state")

    def __init__(self, package: SecurityPackage, state: Any, credential: Credential | None) -> None:
        self.serial = next(_serials)
        self.package = package
        self.state = state
        self.credential = credential
        self.alive = True
        self.busy = False  # an async ISC/ASC/Delete is outstanding on it (CALL-6)

    def __repr__(self) -> str:
        return f"<sim context #{self.serial}{'' if self.alive else ' deleted'}>"


class _Control(CompletionControl):
    def __init__(self, sim: SimulatorAdapter) -> None:
        self._sim = sim

    @property
    def mode(self) -> str:
        return self._sim._scheduler.mode

    def set_mode(self, mode: str) -> None:
        self._sim.set_completion_mode(mode)

    def pending(self) -> list[Handle]:
        return self._sim._scheduler.pending()

    def complete(self, ctx: Handle) -> bool:
        if type(ctx) is not AsyncContext or not self._sim._scheduler.take(ctx):
            return False
        self._sim._complete(ctx)
        return True

    def complete_all(self) -> int:
        done = 0
        while True:
            batch = self._sim._scheduler.take_all()
            if not batch:
                return done
            for actx in batch:
                self._sim._complete(actx)
                done += 1

    def inject_fault(self, fault: str, **params: Any) -> None:
        self._sim.inject_fault(fault, **params)


FAULTS = {
    "create-oom": "the next SspiCreateAsyncContext returns NULL (CTX-2)",
    "queue-oom": "the next queueing call fails with SEC_E_INSUFFICIENT_MEMORY (OQ-5)",
    "complete-status": "the next completion of operation `op` reports `status` without doing the work",
}


class SimulatorAdapter(Adapter):
    """The reference implementation of the async contract."""

    def __init__(
        self,
        *,
        completion: str = "threaded",
        seed: int = 0,
        kernel_mode: bool = True,
        max_delay_ms: float = 2.0,
        workers: int = 2,
        detect_misuse: bool = True,
    ) -> None:
        self._lock = threading.Lock()
        # Locking is needed only once completions run on worker threads; the single-threaded
        # modes skip it, which roughly halves the cost of a round trip.
        self._concurrent = completion == "threaded"
        self._scheduler = Scheduler(self._complete, completion, seed, max_delay_ms, workers)
        self._control = _Control(self)
        self._kernel_mode = kernel_mode
        self._detect_misuse = detect_misuse
        profile = PackageProfile(kernel_mode=kernel_mode)
        self._packages: dict[str, SecurityPackage] = {}
        features = {"completion-control", "fault-injection", "misuse-detection", "requires-notify"}
        features.add("kernel-mode" if kernel_mode else "user-mode")
        for cls in package_classes():
            package = cls(profile)
            for name in cls.names:
                self._packages[name.lower()] = package
            features |= cls.features
        self._capabilities = Capabilities(
            name="simulator",
            version="1",
            packages=frozenset(
                cls_name for p in {id(p): p for p in self._packages.values()}.values() for cls_name in p.names
            ),
            features=frozenset(features),
        )
        self._violations: list[Violation] = []
        self._faults: dict[str, dict[str, Any]] = {}
        self._live_async: set[AsyncContext] = set()
        self._live_credentials: set[Credential] = set()
        self._live_contexts: set[SecurityContext] = set()
        self._closed = False

    # ---- introspection ------------------------------------------------------------------
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def control(self) -> CompletionControl:
        return self._control

    def diagnostics(self) -> list[Violation]:
        with self._lock:
            found, self._violations = self._violations, []
        return found

    def set_completion_mode(self, mode: str) -> None:
        if mode not in ("inline", "deferred", "threaded"):
            raise ValueError(f"unknown completion mode {mode!r}")
        if mode == "threaded":
            self._concurrent = True  # never reset: worker threads may still be completing
        self._scheduler.mode = mode

    def inject_fault(self, fault: str, **params: Any) -> None:
        if fault not in FAULTS:
            raise Unsupported(f"fault {fault!r} (known: {', '.join(FAULTS)})")
        if fault == "complete-status":
            if "op" not in params or "status" not in params:
                raise ValueError("complete-status needs op= and status=")
            params = {"op": params["op"], "status": st.parse(params["status"])}
        self._faults[fault] = params

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._scheduler.stop()
        for actx in list(self._live_async):
            self._violate("CTX-6", f"{actx!r} was never released with SspiFreeAsyncContext", Party.CALLER)
        for cred in list(self._live_credentials):
            self._violate("CALL-13", f"{cred!r} was never freed", Party.CALLER)
        for sctx in list(self._live_contexts):
            self._violate("CALL-26", f"{sctx!r} was never deleted", Party.CALLER)
        self._live_async.clear()
        self._live_credentials.clear()
        self._live_contexts.clear()

    def _violate(self, requirement: str, message: str, party: Party, call: str | None = None) -> None:
        if party is Party.CALLER and not self._detect_misuse:
            return
        self._violations.append(Violation(requirement, message, party.value, call))

    def _misuse(self, rule_requirement: str | None, note: str, call: str) -> None:
        if rule_requirement is not None:
            self._violate(rule_requirement, note, Party.CALLER, call)

    # ---- async context management ---------------------------------------------------------
    def create_async_context(self) -> Handle | None:
        if self._faults and self._faults.pop("create-oom", None) is not None:
            return None
        actx = AsyncContext()
        self._live_async.add(actx)
        return actx

    def free_async_context(self, ctx: Handle | None) -> None:
        if ctx is None:
            return  # FREE-2
        if type(ctx) is not AsyncContext:
            self._violate(
                "FREE-1",
                f"SspiFreeAsyncContext on {ctx!r}, not an async context",
                Party.CALLER,
                "free_async_context",
            )
            return
        concurrent = self._concurrent
        if concurrent:
            self._lock.acquire()
        try:
            rule = _ON_FREE[ctx.state]
            if rule.requirement is not None:
                self._misuse(rule.requirement, f"{rule.note}: {ctx!r}", "free_async_context")
            if rule.accept:
                ctx.state = rule.next
                if rule.next is _S_FREED:
                    self._live_async.discard(ctx)
                    ctx.callback = ctx.data = None
        finally:
            if concurrent:
                self._lock.release()

    def reinit_async_context(self, ctx: Handle | None) -> int:
        if type(ctx) is not AsyncContext:
            self._violate(
                "REINIT-7", f"SspiReinitAsyncContext on {ctx!r}", Party.CALLER, "reinit_async_context"
            )
            return st.STATUS_INVALID_PARAMETER
        concurrent = self._concurrent
        if concurrent:
            self._lock.acquire()
        try:
            rule = _ON_REINIT[ctx.state]
            if not rule.accept:
                self._misuse(rule.requirement, f"{rule.note}: {ctx!r}", "reinit_async_context")
                return rule.refusal
            ctx.state = rule.next
            ctx.status = st.SEC_E_OK  # REINIT-2: only the call state is reset
            return st.STATUS_SUCCESS
        finally:
            if concurrent:
                self._lock.release()

    def set_async_notify_callback(
        self, ctx: Handle | None, callback: Callback | None, data: Any = None
    ) -> int:
        if type(ctx) is not AsyncContext:
            self._violate(
                "OQ-9", f"SspiSetAsyncNotifyCallback on {ctx!r}", Party.CALLER, "set_async_notify_callback"
            )
            return st.SEC_E_INVALID_PARAMETER
        concurrent = self._concurrent
        if concurrent:
            self._lock.acquire()
        try:
            rule = (_ON_SET if callback is not None else _ON_CLEAR)[ctx.state]
            if not rule.accept:
                self._misuse(rule.requirement, f"{rule.note}: {ctx!r}", "set_async_notify_callback")
                return rule.refusal
            ctx.callback = callback
            ctx.data = data if callback is not None else None
            return st.SEC_E_OK
        finally:
            if concurrent:
                self._lock.release()

    def async_context_requires_notify(self, ctx: Handle | None) -> bool:
        if type(ctx) is not AsyncContext or ctx.state not in _READABLE:
            self._violate(
                "FREE-1",
                f"SspiAsyncContextRequiresNotify on {ctx!r}",
                Party.CALLER,
                "async_context_requires_notify",
            )
            return False
        return ctx.callback is not None  # OQ-4

    def get_async_call_status(self, ctx: Handle | None) -> int:
        if type(ctx) is AsyncContext and ctx.state in _READABLE:
            return ctx.status
        self._violate("FREE-1", f"SspiGetAsyncCallStatus on {ctx!r}", Party.CALLER, "get_async_call_status")
        return st.SEC_E_INVALID_PARAMETER

    # ---- queueing ----------------------------------------------------------------------------
    def _queue(
        self, ctx: Handle | None, is_delete: bool, job: tuple[Any, ...], call: str, busy: Any = None
    ) -> int:
        if type(ctx) is not AsyncContext:
            self._violate("CALL-2", f"{call} queued on {ctx!r}, not an async context", Party.CALLER, call)
            return st.SEC_E_INVALID_PARAMETER
        concurrent = self._concurrent
        if concurrent:
            self._lock.acquire()
        try:
            if ctx.callback is not None:
                rule = _ON_QUEUE[ctx.state]
            else:
                rule = (_ON_QUEUE_SD if is_delete else _ON_QUEUE_S)[ctx.state]
            if rule.requirement is not None:
                self._misuse(rule.requirement, f"{rule.note}: {ctx!r}", call)
            if not rule.accept:
                return rule.refusal
            if busy is not None:
                if busy.busy:
                    self._violate("CALL-6", f"{busy!r} already has an outstanding call", Party.CALLER, call)
                    return st.SEC_E_INVALID_PARAMETER
            if self._faults and self._faults.pop("queue-oom", None) is not None:
                return st.SEC_E_INSUFFICIENT_MEMORY  # OQ-5: no state change, no callback
            if busy is not None:
                busy.busy = True
            ctx.state = rule.next
            ctx.status = _PENDING
            ctx.job = job
        finally:
            if concurrent:
                self._lock.release()

        self._scheduler.submit(ctx)
        return st.SEC_E_OK

    def acquire_credentials_handle_async(
        self,
        ctx: Handle | None,
        principal: str | None,
        package: str,
        credential_use: int,
        auth_data: Mapping[str, Any] | None,
        outputs: CallOutputs,
    ) -> int:
        return self._queue(
            ctx,
            False,
            (self._do_acquire, principal, package, credential_use, auth_data, outputs),
            "acquire_credentials_handle_async",
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
        if reserved1 or reserved2:
            self._violate(
                "CALL-20",
                "Reserved1/Reserved2 must be zero",
                Party.CALLER,
                "initialize_security_context_async",
            )
            return st.SEC_E_INVALID_PARAMETER
        busy = context if type(context) is SecurityContext else None
        job = (self._do_handshake, True, credential, context, target, context_req, input, outputs)
        return self._queue(ctx, False, job, "initialize_security_context_async", busy)

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
        busy = context if type(context) is SecurityContext else None
        job = (self._do_handshake, False, credential, context, None, context_req, input, outputs)
        return self._queue(ctx, False, job, "accept_security_context_async", busy)

    def delete_security_context_async(self, ctx: Handle | None, context: Handle | None) -> int:
        busy = context if type(context) is SecurityContext and context.alive else None
        return self._queue(ctx, True, (self._do_delete, context), "delete_security_context_async", busy)

    def free_credentials_handle_async(self, ctx: Handle | None, credential: Handle | None) -> int:
        return self._queue(
            ctx, False, (self._do_free_credentials, credential), "free_credentials_handle_async"
        )

    # ---- completion --------------------------------------------------------------------------
    def _complete(self, actx: AsyncContext) -> None:
        """Run the queued job, publish its status, then call back (status before callback)."""
        job = actx.job
        actx.job = None
        if job is None:
            return
        if self._faults and "complete-status" in self._faults:
            status = self._injected_completion(job)
        else:
            status = job[0](*job[1:])
        self._deliver(actx, status)

    def _injected_completion(self, job: tuple[Any, ...]) -> int:
        fault = self._faults["complete-status"]
        name = getattr(job[0], "__name__", "")
        ops = {
            "_do_acquire": "acquire",
            "_do_delete": "delete",
            "_do_free_credentials": "free_credentials",
            "_do_handshake": "initialize" if len(job) > 1 and job[1] else "accept",
        }
        if fault["op"] != ops.get(name):
            return int(job[0](*job[1:]))
        del self._faults["complete-status"]
        self._release_busy(job)
        return int(fault["status"])

    @staticmethod
    def _release_busy(job: tuple[Any, ...]) -> None:
        for item in job[1:]:
            if type(item) is SecurityContext:
                item.busy = False

    def _deliver(self, actx: AsyncContext, status: int) -> None:
        concurrent = self._concurrent
        if concurrent:
            self._lock.acquire()
        try:
            state = actx.state
            rule = _ON_COMPLETE[state]
            actx.status = status
            actx.state = rule.next
            if rule.next is _S_FREED:
                self._live_async.discard(actx)
                return
            if state is not _S_PN:
                return
            callback, data = actx.callback, actx.data
        finally:
            if concurrent:
                self._lock.release()

        self._invoke(callback, actx, data)

    def _invoke(self, callback: Callback | None, actx: AsyncContext, data: Any) -> None:
        if callback is None:
            return
        try:
            callback(actx, data)
        except Exception as exc:  # a caller bug must not kill a completion thread
            self._violate("NOTIFY-1", f"the caller's callback raised {exc!r}", Party.CALLER)

    # ---- operation bodies (run at completion) ------------------------------------------------------
    def _package(self, name: str) -> SecurityPackage | None:
        return self._packages.get(name.lower()) if isinstance(name, str) else None

    def _do_acquire(
        self,
        principal: str | None,
        package: str,
        use: int,
        auth_data: Mapping[str, Any] | None,
        outputs: CallOutputs,
    ) -> int:
        pkg = self._package(package)
        if pkg is None:
            return st.SEC_E_SECPKG_NOT_FOUND  # OQ-16
        result = pkg.acquire(principal, use, auth_data)
        if result.status == st.SEC_E_OK:
            cred = Credential(pkg, result.credential)
            with self._lock:
                self._live_credentials.add(cred)
            outputs.credential = cred
            outputs.expiry = result.expiry
            outputs.written = True
        return result.status

    def _do_handshake(
        self,
        client: bool,
        credential: Any,
        context: Any,
        target: str | None,
        context_req: int,
        input: list[SecBuffer] | None,
        outputs: CallOutputs,
    ) -> int:
        call = "initialize_security_context_async" if client else "accept_security_context_async"
        cred: Credential | None = None
        if credential is not None:
            if type(credential) is not Credential or not credential.alive:
                self._release_busy((None, context))
                return st.SEC_E_NO_CREDENTIALS  # CALL-17/22: bad credential handle
            cred = credential
        if context is not None:
            if type(context) is not SecurityContext or not context.alive:
                if type(context) is SecurityContext:
                    self._violate("CALL-26", f"{context!r} used after deletion", Party.CALLER, call)
                self._release_busy((None, context))
                return st.SEC_E_INVALID_HANDLE  # C.4 #6
            pkg = context.package
            state = context.state
        else:
            if cred is None:
                return st.SEC_E_NO_CREDENTIALS  # SCH-4: the first call needs a credential
            pkg = cred.package
            state = None
        output = outputs.output
        if client:
            result = pkg.initialize(cred.state if cred else None, state, target, context_req, input, output)
        else:
            result = pkg.accept(cred.state if cred else None, state, input, context_req, output)
        if context is None:
            if result.context is not None:  # OQ-20: a handle only when the package made a context
                handle = SecurityContext(pkg, result.context, cred)
                with self._lock:
                    self._live_contexts.add(handle)
                    if cred is not None:
                        cred.contexts += 1
                outputs.new_context = handle
        else:
            context.busy = False
            if result.context is not None:
                context.state = result.context
            outputs.new_context = context  # CALL-14: phNewContext may equal phContext
        outputs.context_attr = result.attributes
        outputs.expiry = result.expiry
        outputs.written = True
        return result.status

    def _do_delete(self, context: Any) -> int:
        if type(context) is not SecurityContext:
            return st.SEC_E_INVALID_HANDLE
        context.busy = False
        if not context.alive:
            self._violate(
                "CALL-26", f"{context!r} deleted twice", Party.CALLER, "delete_security_context_async"
            )
            return st.SEC_E_OK  # SHUT-5: deleting an already deleted handle still reports OK
        context.alive = False
        context.package.delete(context.state)
        with self._lock:
            self._live_contexts.discard(context)
            if context.credential is not None:
                context.credential.contexts -= 1
        return st.SEC_E_OK

    def _do_free_credentials(self, credential: Any) -> int:
        if type(credential) is not Credential:
            return st.SEC_E_INVALID_HANDLE
        if not credential.alive:
            self._violate(
                "CALL-13", f"{credential!r} freed twice", Party.CALLER, "free_credentials_handle_async"
            )
            return st.SEC_E_INVALID_HANDLE
        if credential.contexts:
            self._violate(
                "CALL-28",
                f"{credential!r} freed while {credential.contexts} context(s) built on it are still alive",
                Party.CALLER,
                "free_credentials_handle_async",
            )
        credential.alive = False
        credential.package.free_credentials(credential.state)
        with self._lock:
            self._live_credentials.discard(credential)
        return st.SEC_E_OK

    # ---- synchronous stream calls ----------------------------------------------------------------
    def _live_context(self, context: Any, call: str) -> SecurityContext | None:
        if type(context) is SecurityContext and context.alive:
            return context
        if type(context) is SecurityContext:
            self._violate("CALL-26", f"{context!r} used after deletion", Party.CALLER, call)
        return None

    def query_context_attributes(self, context: Handle | None, attribute: int) -> tuple[int, Any]:
        sctx = self._live_context(context, "query_context_attributes")
        if sctx is None:
            return st.SEC_E_INVALID_HANDLE, None
        return sctx.package.query_attributes(sctx.state, attribute)

    def encrypt_message(
        self, context: Handle | None, qop: int, buffers: list[SecBuffer], seqno: int = 0
    ) -> int:
        sctx = self._live_context(context, "encrypt_message")
        if sctx is None:
            return st.SEC_E_INVALID_HANDLE
        return sctx.package.encrypt(sctx.state, qop, buffers)

    def decrypt_message(
        self, context: Handle | None, buffers: list[SecBuffer], seqno: int = 0
    ) -> tuple[int, int]:
        sctx = self._live_context(context, "decrypt_message")
        if sctx is None:
            return st.SEC_E_INVALID_HANDLE, 0
        return sctx.package.decrypt(sctx.state, buffers)

    def apply_control_token(self, context: Handle | None, buffers: list[SecBuffer]) -> int:
        sctx = self._live_context(context, "apply_control_token")
        if sctx is None:
            return st.SEC_E_INVALID_HANDLE
        return sctx.package.apply_control_token(sctx.state, buffers)

    def complete_auth_token(self, context: Handle | None, buffers: list[SecBuffer]) -> int:
        sctx = self._live_context(context, "complete_auth_token")
        if sctx is None:
            return st.SEC_E_INVALID_HANDLE
        return sctx.package.complete_auth_token(sctx.state, buffers)
