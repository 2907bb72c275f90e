"""Composite steps: the stream calls and CompleteAuthToken (docs/scenarios.md).

The handshake driver lives in :mod:`conformance.scenario.handshake`.  The stream steps wrap
QueryContextAttributes(STREAM_SIZES), EncryptMessage, DecryptMessage and
ApplyControlToken(SCHANNEL_SHUTDOWN).
"""

from __future__ import annotations

from adapters import status as st
from adapters.api import SecBuffer
from adapters.constants import (
    SCHANNEL_ALERT,
    SCHANNEL_SHUTDOWN,
    SECBUFFER_DATA,
    SECBUFFER_EMPTY,
    SECBUFFER_EXTRA,
    SECBUFFER_STREAM_HEADER,
    SECBUFFER_STREAM_TRAILER,
    SECBUFFER_TOKEN,
    SECPKG_ATTR_STREAM_SIZES,
)
from conformance.scenario import buffers as bufs
from conformance.scenario import model as m
from conformance.scenario.handshake import HandshakeSteps
from conformance.scenario.runtime import OK, StepFailed, as_status

__all__ = ["CompositeSteps"]


class CompositeSteps(HandshakeSteps):
    # ---- stream calls -------------------------------------------------------------------------------
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
        actual = self.actual(as_status(status))
        if args.data is not None:
            # The DATA buffer after the call: plaintext, or the post-handshake message that
            # SEC_I_RENEGOTIATE asks the caller to feed back through ISC/ASC (MSG-9).
            plain = bufs.data_buffer(buffers) if actual != st.SEC_E_INCOMPLETE_MESSAGE else None
            self.tokens[args.data] = plain or b""
        if args.extra is not None:
            # SCH-24: EXTRA is a count; the bytes are the tail of the caller's own input.
            extra = bufs.first_of(buffers, SECBUFFER_EXTRA)
            count = min(extra.cb, len(data)) if extra is not None else 0
            self.tokens[args.extra] = data[len(data) - count:] if count else b""
        self.check(step.expect, status)  # type: ignore[arg-type]
        problems = bufs.check_outputs(step.outputs, None, buffers) if step.outputs is not None else []
        if args.plaintext is not None and actual == OK:
            plain = bufs.data_buffer(buffers)
            if plain != args.plaintext:
                problems.append(f"plaintext: expected {args.plaintext!r}, got {plain!r}")
        if problems:
            raise StepFailed("; ".join(problems))

    def do_shutdown(self, step: m.Step) -> None:
        args: m.Shutdown = step.args  # type: ignore[assignment]
        if args.alert is None:
            payload = SCHANNEL_SHUTDOWN.to_bytes(4, "little")
        else:  # SCH-28: SCHANNEL_ALERT_TOKEN {dwTokenType, dwAlertType, dwAlertNumber}
            payload = b"".join(x.to_bytes(4, "little") for x in (SCHANNEL_ALERT, *args.alert))
        token = [SecBuffer(SECBUFFER_TOKEN, payload)]
        self.check(step.expect, self.api.apply_control_token(self.handle(args.context), token))  # type: ignore[arg-type]

    def do_complete_auth_token(self, step: m.Step) -> None:
        """CompleteAuthToken after SEC_I_COMPLETE_NEEDED / COMPLETE_AND_CONTINUE (Section B.1).

        Called on the implementation directly: the call has no async twin and the contract
        monitor does not wrap it."""
        args: m.CompleteAuthToken = step.args  # type: ignore[assignment]
        token = [SecBuffer(SECBUFFER_TOKEN, b"")]
        self.check(step.expect, self.inner.complete_auth_token(self.handle(args.context), token))  # type: ignore[arg-type]
