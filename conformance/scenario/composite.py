"""Composite steps: the handshake driver and the stream calls (docs/scenarios.md).

The handshake runs ISC and ASC alternately on the two sides' async contexts, each leg queued,
waited for and read inside the callback, tokens passed across, with ``reuse`` applied between
two legs of the same side.  The stream steps wrap QueryContextAttributes(STREAM_SIZES),
EncryptMessage, DecryptMessage and ApplyControlToken(SCHANNEL_SHUTDOWN).
"""

from __future__ import annotations

from typing import Any

from adapters import status as st
from adapters.api import CallOutputs, SecBuffer
from adapters.constants import (
    SCHANNEL_SHUTDOWN,
    SECBUFFER_DATA,
    SECBUFFER_EMPTY,
    SECBUFFER_STREAM_HEADER,
    SECBUFFER_STREAM_TRAILER,
    SECBUFFER_TOKEN,
    SECPKG_ATTR_STREAM_SIZES,
)
from conformance.scenario import buffers as bufs
from conformance.scenario import model as m
from conformance.scenario.runtime import (
    ALLOCATE_MEMORY,
    CONTINUE,
    LEG_TIMEOUT_S,
    OK,
    OK_SET,
    PENDING,
    SUCCESS,
    Ctx,
    RunCore,
    StepFailed,
    describe_status,
)

__all__ = ["CompositeSteps"]


class CompositeSteps(RunCore):
    def do_handshake(self, step: m.Step) -> None:
        """ISC and ASC alternately, each leg queued, waited for and read, tokens passed across."""
        args: m.Handshake = step.args  # type: ignore[assignment]
        sides = (args.client, args.server)
        finals: list[int] = [PENDING, PENDING]
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
                raise StepFailed(f"handshake: async context {side.ctx} does not exist")
            if not ctx.notify:
                raise StepFailed(f"handshake: async context {side.ctx} has no callback registered")
            if used[turn]:  # between two legs of the same side
                if args.reuse == "reinit":
                    self.check(SUCCESS, self.api.reinit_async_context(ctx.handle), ntstatus=True,
                               what="reinit between legs:")
                else:
                    self.fresh_context(ctx)
            used[turn] = True
            status, produced = self.handshake_leg(ctx, side, turn == 0, token)
            statuses.append(status)
            finals[turn] = status
            if status == OK:
                done[turn] = True
            elif status != CONTINUE:
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
        expect = step.expect if isinstance(step.expect, m.StatusSet) else OK_SET
        # The side that failed first, so the message names the culprit rather than its peer.
        order = sorted(zip(("client", "server"), finals, strict=True), key=lambda pair: not st.failed(pair[1]))
        for who, final in order:
            if not expect.matches(final):
                raise StepFailed(f"the {who} ended with {describe_status(final)}, expected {expect.text} "
                                  f"(legs: {legs_text})", expect.text, describe_status(final))
        if args.legs is not None:
            same = len(args.legs) == len(statuses)
            if not same or not all(e.matches(x) for e, x in zip(args.legs, statuses, strict=True)):
                want = ", ".join(e.text for e in args.legs)
                raise StepFailed(f"legs: expected [{want}], got [{legs_text}]", want, legs_text)
        if stalled:
            raise StepFailed(f"the handshake stalled: {stalled} (legs: {legs_text})")

    def handshake_leg(self, ctx: Ctx, side: m.Side, client: bool, token: bytes | None) -> tuple[int, bytes | None]:
        input = [SecBuffer(SECBUFFER_TOKEN, token), SecBuffer(SECBUFFER_EMPTY)] if token is not None else None
        outputs = CallOutputs(output=bufs.output_descriptor(side.output))
        req = side.req | (ALLOCATE_MEMORY if side.output.kind == "allocate" else 0)
        cred = self.handle(side.cred)
        context = self.handles.get(side.context)
        if client:
            status = self.api.initialize_security_context_async(ctx.handle, cred, context, side.target, req,
                                                                input, outputs)
        else:
            status = self.api.accept_security_context_async(ctx.handle, cred, context, input, req, outputs)
        who = "client" if client else "server"
        if status != OK:
            raise StepFailed(f"handshake: the {who} queue call returned {describe_status(status)}", describe_status(OK),
                              describe_status(status))
        ctx.expected += 1
        if not self.await_callbacks(ctx, LEG_TIMEOUT_S):
            raise StepFailed(f"handshake: no callback within {int(LEG_TIMEOUT_S * 1000)} ms for the {who} leg",
                              "callback", "none")
        self.raise_callback_error()
        final = self.actual(ctx.cb_status if ctx.cb_status is not None else PENDING)
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

    def fresh_context(self, old: Ctx) -> None:
        """reuse: fresh -- a new async context (same callback and data) replaces ``old``."""
        handle = self.api.create_async_context()
        if handle is None:
            raise StepFailed("handshake: SspiCreateAsyncContext returned NULL for a fresh context")
        self.api.free_async_context(old.handle)
        self.by_handle.pop(old.handle, None)
        old.handle, old.callbacks, old.expected, old.cb_status = handle, 0, 0, None
        self.by_handle[handle] = old
        self.api.name(handle, old.name)
        status = self.api.set_async_notify_callback(handle, self.callback, old.data)
        if status != OK:
            raise StepFailed("handshake: registering the callback on a fresh context returned "
                             f"{describe_status(status)}")

    # ---- stream calls -------------------------------------------------------------------------------
    def stream_sizes(self, name: str | None) -> Any:
        sizes = self.sizes.get(name or "")
        if sizes is None:
            status, sizes = self.api.query_context_attributes(self.handle(name), SECPKG_ATTR_STREAM_SIZES)
            if status != OK or sizes is None:
                raise StepFailed(f"QueryContextAttributes(STREAM_SIZES) returned {describe_status(status)}")
            self.sizes[name or ""] = sizes
        return sizes

    def do_query_sizes(self, step: m.Step) -> None:
        args: m.QuerySizes = step.args  # type: ignore[assignment]
        status, sizes = self.api.query_context_attributes(self.handle(args.context), SECPKG_ATTR_STREAM_SIZES)
        if status == OK and sizes is not None:
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
        if status == OK and args.record is not None:
            self.tokens[args.record] = b"".join(b.data[: b.cb] for b in buffers[:3])
        self.check(step.expect, status)  # type: ignore[arg-type]

    def do_decrypt(self, step: m.Step) -> None:
        args: m.Decrypt = step.args  # type: ignore[assignment]
        try:
            data = bufs.token_bytes(args.input, self.tokens) if args.input is not None else b""
        except bufs.UnboundToken as exc:
            raise StepFailed(f"token {exc} was never produced") from None
        buffers = [SecBuffer(SECBUFFER_DATA, data), SecBuffer(SECBUFFER_EMPTY), SecBuffer(SECBUFFER_EMPTY),
                   SecBuffer(SECBUFFER_EMPTY)]
        status, _qop = self.api.decrypt_message(self.handle(args.context), buffers)
        self.check(step.expect, status)  # type: ignore[arg-type]
        problems = bufs.check_outputs(step.outputs, None, buffers) if step.outputs is not None else []
        if args.plaintext is not None and self.actual(status) == OK:
            plain = bufs.data_buffer(buffers)
            if plain != args.plaintext:
                problems.append(f"plaintext: expected {args.plaintext!r}, got {plain!r}")
        if problems:
            raise StepFailed("; ".join(problems))

    def do_shutdown(self, step: m.Step) -> None:
        args: m.Shutdown = step.args  # type: ignore[assignment]
        token = [SecBuffer(SECBUFFER_TOKEN, SCHANNEL_SHUTDOWN.to_bytes(4, "little"))]
        self.check(step.expect, self.api.apply_control_token(self.handle(args.context), token))  # type: ignore[arg-type]
