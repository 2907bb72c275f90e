"""Step handlers for the single calls and the schedule directives (docs/scenarios.md).

Each ``do_<action>`` reads the typed arguments the loader built (:mod:`model`) and either
returns (the step met its expectation) or raises :class:`StepFailed`.  :data:`HANDLERS` maps
every action of the format to its handler; the executor passes it to :meth:`RunCore.execute`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from adapters.api import CallOutputs
from conformance.scenario import buffers as bufs
from conformance.scenario import model as m
from conformance.scenario.composite import CompositeSteps
from conformance.scenario.runtime import ALLOCATE_MEMORY, OK, Ctx, Pending, ScenarioTimeout, StepFailed

__all__ = ["HANDLERS", "Run"]


class Run(CompositeSteps):
    """One execution of one scenario: the runtime state plus every step handler."""

    def do_create(self, step: m.Step) -> None:
        args: m.Create = step.args  # type: ignore[assignment]
        handle = self.api.create_async_context()
        ctx = Ctx(args.name, handle)
        self.ctxs[args.name] = ctx
        self.all_ctxs.append(ctx)
        if handle is None:
            ctx.freed = True  # nothing to free
            if not args.expect_null:
                raise StepFailed("SspiCreateAsyncContext returned NULL", "handle", "NULL")
            return
        self.by_handle[handle] = ctx
        self.api.name(handle, args.name)
        if args.expect_null:
            raise StepFailed("expected NULL (injected out of memory), got a handle", "NULL", "handle")

    def do_set_callback(self, step: m.Step) -> None:
        args: m.SetCallback = step.args  # type: ignore[assignment]
        ctx = self.ctxs.get(args.ctx)  # type: ignore[arg-type]
        handle = ctx.handle if ctx is not None else self.unbound(args.ctx)
        status = self.api.set_async_notify_callback(handle, self.callback, args.data)
        if ctx is not None and status == OK:
            ctx.notify, ctx.data, ctx.on_callback = True, args.data, args.on_callback
        self.check(step.expect, status)  # type: ignore[arg-type]

    def do_clear_callback(self, step: m.Step) -> None:
        args: m.CtxOnly = step.args  # type: ignore[assignment]
        status = self.api.set_async_notify_callback(self.ctx_handle(args.ctx), None, None)
        ctx = self.ctx(args.ctx)
        if ctx is not None and status == OK:
            ctx.notify, ctx.data, ctx.on_callback = False, None, None
        self.check(step.expect, status)  # type: ignore[arg-type]

    def do_requires_notify(self, step: m.Step) -> None:
        args: m.CtxOnly = step.args  # type: ignore[assignment]
        value = bool(self.api.async_context_requires_notify(self.ctx_handle(args.ctx)))
        if value != step.expect:
            raise StepFailed(f"expected {str(step.expect).upper()}, got {str(value).upper()}",
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
            raise StepFailed(f"expected {step.expect} callback(s), got {got}", str(step.expect), str(got))

    def do_acquire(self, step: m.Step) -> None:
        args: m.Acquire = step.args  # type: ignore[assignment]
        outputs = CallOutputs()
        api = self.api

        def call(handle: Any) -> int:
            return api.acquire_credentials_handle_async(handle, args.principal, args.package, args.use,
                                                        args.auth, outputs)

        self.queue(step, args.ctx, call, Pending(step, "acquire", outputs))

    def do_leg(self, step: m.Step) -> None:
        args: m.Handshake1 = step.args  # type: ignore[assignment]
        try:
            input = bufs.input_descriptor(args.input, self.tokens)
        except bufs.UnboundToken as exc:
            if not self.settle_producer(str(exc.args[0])):
                raise StepFailed(f"token {exc} was never produced (its call failed or wrote no token)") from None
            try:
                input = bufs.input_descriptor(args.input, self.tokens)
            except bufs.UnboundToken as again:
                raise StepFailed(f"token {again} was never produced (its call failed or wrote no token)") from None
        outputs = CallOutputs(output=bufs.output_descriptor(args.output))
        req = args.req | (ALLOCATE_MEMORY if args.output.kind == "allocate" else 0)
        cred = self.handle(args.cred)
        context = self.handle(args.context)
        api = self.api
        if args.client:
            def call(handle: Any) -> int:
                return api.initialize_security_context_async(
                    handle, cred, context, args.target, req, input, outputs,
                    reserved1=args.reserved1, reserved2=args.reserved2, target_data_rep=args.data_rep)
        else:
            def call(handle: Any) -> int:
                return api.accept_security_context_async(handle, cred, context, input, req, outputs,
                                                         target_data_rep=args.data_rep)
        self.queue(step, args.ctx, call, Pending(step, "leg", outputs, input, args.context, args.token))

    def do_delete_context(self, step: m.Step) -> None:
        args: m.DeleteContext = step.args  # type: ignore[assignment]
        context = self.handle(args.context)
        api = self.api

        def call(handle: Any) -> int:
            return api.delete_security_context_async(handle, context)

        self.queue(step, args.ctx, call, Pending(step, "delete", None))

    def do_free_credentials(self, step: m.Step) -> None:
        args: m.FreeCredentials = step.args  # type: ignore[assignment]
        cred = self.handle(args.cred)
        api = self.api

        def call(handle: Any) -> int:
            return api.free_credentials_handle_async(handle, cred)

        self.queue(step, args.ctx, call, Pending(step, "free_credentials", None))

    def do_wait(self, step: m.Step) -> None:
        args: m.Wait = step.args  # type: ignore[assignment]
        ctx = self.ctx(args.ctx)
        if ctx is None:
            raise StepFailed(f"{args.ctx} is not an async context this run created")
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
        raise StepFailed(f"a callback arrived for {ctx.name} within {args.within_ms} ms", "no callback",
                          f"{ctx.callbacks - before} callback(s)")

    def do_complete(self, step: m.Step) -> None:
        args: m.Complete = step.args  # type: ignore[assignment]
        control = self.control()
        if not args.names:
            control.complete_all()
            return
        for name in args.names:
            ctx = self.ctx(name)
            if ctx is None or ctx.handle is None or not control.complete(ctx.handle):
                raise StepFailed(f"no call was pending on {name} to complete", "a pending call", "none")

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
            raise ScenarioTimeout()
        time.sleep(seconds)


HANDLERS: dict[str, Callable[[Any, m.Step], None]] = {
    "create": Run.do_create,
    "set_callback": Run.do_set_callback,
    "clear_callback": Run.do_clear_callback,
    "requires_notify": Run.do_requires_notify,
    "status": Run.do_status,
    "reinit": Run.do_reinit,
    "free": Run.do_free,
    "acquire": Run.do_acquire,
    "initialize": Run.do_leg,
    "accept": Run.do_leg,
    "delete_context": Run.do_delete_context,
    "free_credentials": Run.do_free_credentials,
    "wait": Run.do_wait,
    "expect_no_callback": Run.do_expect_no_callback,
    "complete": Run.do_complete,
    "mode": Run.do_mode,
    "inject_fault": Run.do_inject_fault,
    "callbacks": Run.do_callbacks,
    "sleep_ms": Run.do_sleep,
    "handshake": Run.do_handshake,
    "query_sizes": Run.do_query_sizes,
    "encrypt": Run.do_encrypt,
    "decrypt": Run.do_decrypt,
    "shutdown": Run.do_shutdown,
    "complete_auth_token": Run.do_complete_auth_token,
}
