"""The composite ``handshake`` step: ISC and ASC driven like a careful Schannel caller.

Each side owns a receive buffer (the bytes handed to it but not consumed yet) and a wire of
segments its peer wrote.  A leg is one queued ISC/ASC, waited for and read inside the callback;
what the leg returns decides what the caller does next, following the client and server loops
of the contract (C.2, C.3):

* ``SEC_E_INCOMPLETE_MESSAGE``: keep the buffered bytes, read more from the wire, call again
  (SCH-20..22; the MISSING hint is recorded, SCH-21);
* ``SECBUFFER_EXTRA(n)`` with ``SEC_I_CONTINUE_NEEDED``: keep the last n bytes and call again
  without reading (SCH-23/24); with ``SEC_E_OK`` the tail belongs to the record layer and is
  left for DecryptMessage (the side's ``rest`` token);
* ``SEC_I_INCOMPLETE_CREDENTIALS``: repeat with the same input and the credential named by
  ``client_certificate_retry`` (SCH-12); without that option it ends the handshake;
* ``SEC_I_COMPLETE_NEEDED`` / ``SEC_I_COMPLETE_AND_CONTINUE``: CompleteAuthToken on the context,
  then as ``SEC_E_OK`` / ``SEC_I_CONTINUE_NEEDED`` (Section B.1);
* output on any status, ``SEC_E_OK`` included, is sent to the peer (SCH-10); a failing side's
  output (its alert record under EXTENDED_ERROR, SCH-27) still reaches the peer once.

``delivery`` decides how written segments reach the reader: ``whole`` one segment per read,
``coalesced`` everything written so far in one read, ``chunk`` N bytes per read (byte-by-byte is
chunk 1).  Every leg is recorded (runs of incomplete legs collapsed) so a failure shows the
sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from adapters import status as st
from adapters.api import CallOutputs, SecBuffer
from adapters.constants import (
    SECBUFFER_ALERT,
    SECBUFFER_DATA,
    SECBUFFER_EMPTY,
    SECBUFFER_EXTRA,
    SECBUFFER_MISSING,
    SECBUFFER_STREAM_HEADER,
    SECBUFFER_STREAM_TRAILER,
    SECBUFFER_TOKEN,
    SECPKG_ATTR_STREAM_SIZES,
)
from conformance.results import StepRecord
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

__all__ = ["HandshakeSteps"]

INCOMPLETE = st.SEC_E_INCOMPLETE_MESSAGE
INCOMPLETE_CREDS = st.SEC_I_INCOMPLETE_CREDENTIALS
COMPLETE_NEEDED = st.SEC_I_COMPLETE_NEEDED
COMPLETE_AND_CONTINUE = st.SEC_I_COMPLETE_AND_CONTINUE
WHO = ("client", "server")
CALL = ("ISC", "ASC")
# Legs that consume no byte and write nothing in a row before the run counts as stalled.
_IDLE_LIMIT = 2


@dataclass(slots=True)
class _Leg:
    """What one ISC/ASC returned, as the caller sees it."""

    side: int
    status: int
    sent: int  # input TOKEN bytes (-1: no input descriptor)
    output: bytes = b""
    extra: int = 0
    missing: int | None = None
    alert: bytes = b""
    outputs: CallOutputs | None = None
    input: list[SecBuffer] | None = None

    def text(self) -> str:
        parts = [f"{WHO[self.side]} {CALL[self.side]}",
                 "no input" if self.sent < 0 else f"in={self.sent}", f"-> {st.name_of(self.status)}"]
        if self.output:
            parts.append(f"out={len(self.output)}")
        if self.extra:
            parts.append(f"extra={self.extra}")
        if self.missing is not None:
            parts.append(f"missing={self.missing}")
        if self.alert:
            parts.append(f"alert=({', '.join(str(b) for b in self.alert)})")
        return " ".join(parts)


@dataclass(slots=True)
class _Party:
    """One side's caller state: receive buffer, incoming wire, progress."""

    inbox: bytearray = field(default_factory=bytearray)
    wire: list[bytes] = field(default_factory=list)
    need_more: bool = True  # the next call must read first (empty buffer or INCOMPLETE)
    started: bool = False
    done: bool = False
    failed: bool = False
    final: int = PENDING
    last: _Leg | None = None
    used_ctx: bool = False
    alerts: list[bytes] = field(default_factory=list)
    idle: int = 0

    def has_input(self) -> bool:
        return bool(self.wire) or (bool(self.inbox) and not self.need_more)


class HandshakeSteps(RunCore):
    def do_handshake(self, step: m.Step) -> None:
        args: m.Handshake = step.args  # type: ignore[assignment]
        sides = (args.client, args.server)
        for side in sides:
            self.sizes.pop(side.context, None)  # a new handshake: sizes of an old context are stale
        parties = (_Party(), _Party())
        creds = [self.handle(args.client.cred), self.handle(args.server.cred)]
        legs: list[_Leg] = []
        stalled = ""
        progress = 0  # legs other than SEC_E_INCOMPLETE_MESSAGE, bounded by max_legs
        turn = 0
        with_alert = "stream" in self.scenario.needs or any(s.alert is not None for s in sides)
        try:
            while True:
                who = self._next_side(parties, turn)
                if who is None:
                    if not (parties[0].done and parties[1].done) and not any(p.failed for p in parties):
                        stalled = self._stall_text(parties, legs)
                    break
                if progress >= args.max_legs:
                    stalled = f"no result within {args.max_legs} legs"
                    break
                turn = who
                party, side = parties[who], sides[who]
                data = self._read(party, args) if party.started or who == 1 else None
                leg = self._leg(who, side, party, creds[who], data, args, with_alert)
                legs.append(leg)
                if leg.output or leg.status not in (CONTINUE, INCOMPLETE):
                    progress += 1  # legs that wrote or decided something; the rest are bounded by bytes
                self._after_leg(who, leg, parties, sides, creds, args, legs)
                if parties[0].failed or parties[1].failed:
                    self._deliver_failure(who, leg, parties, sides, creds, args, legs, with_alert)
                    break
                if parties[0].done and parties[1].done:
                    break
        finally:
            self._record_legs(step, legs)
            for who, side in enumerate(sides):
                if side.rest is not None:
                    party = parties[who]
                    self.tokens[side.rest] = bytes(party.inbox) + b"".join(party.wire)
        self._judge(step, args, parties, legs, stalled)

    # ---- choosing and feeding a side ------------------------------------------------------------
    @staticmethod
    def _next_side(parties: tuple[_Party, _Party], last: int) -> int | None:
        if not parties[0].started:
            return 0
        for who in (1 - last, last):
            party = parties[who]
            if not party.done and not party.failed and party.has_input():
                return who
        return None

    @staticmethod
    def _read(party: _Party, args: m.Handshake) -> bytes:
        """The input of the next call: the buffer, after reading from the wire when needed."""
        if party.need_more or not party.inbox:
            if args.delivery == "coalesced":
                party.inbox += b"".join(party.wire)
                party.wire.clear()
            elif args.delivery == "chunk":
                want = args.chunk
                while want and party.wire:
                    head = party.wire[0]
                    party.inbox += head[:want]
                    if len(head) > want:
                        party.wire[0] = head[want:]
                        want = 0
                    else:
                        party.wire.pop(0)
                        want -= len(head)
            elif party.wire:
                party.inbox += party.wire.pop(0)
            party.need_more = False
        return bytes(party.inbox)

    def _leg(self, who: int, side: m.Side, party: _Party, cred: Any, data: bytes | None, args: m.Handshake,
             with_alert: bool) -> _Leg:
        ctx = self.ctx(side.ctx)
        if ctx is None or ctx.freed or ctx.handle is None:
            raise StepFailed(f"handshake: async context {side.ctx} does not exist")
        if not ctx.notify:
            raise StepFailed(f"handshake: async context {side.ctx} has no callback registered")
        if party.used_ctx:  # between two legs of the same side
            if args.reuse == "reinit":
                self.check(SUCCESS, self.api.reinit_async_context(ctx.handle), ntstatus=True,
                           what="reinit between legs:")
            else:
                self.fresh_context(ctx)
        party.used_ctx = True
        party.started = True
        input = None if data is None else [SecBuffer(SECBUFFER_TOKEN, data), SecBuffer(SECBUFFER_EMPTY)]
        output = bufs.output_descriptor(side.output)
        if with_alert and output is not None:
            output.append(SecBuffer(SECBUFFER_ALERT, b"", 0 if side.output.kind == "allocate" else 2))
        outputs = CallOutputs(output=output)
        req = side.req | (ALLOCATE_MEMORY if side.output.kind == "allocate" else 0)
        context = self.handles.get(side.context)
        client = who == 0
        if client:
            status = self.api.initialize_security_context_async(ctx.handle, cred, context, side.target, req, input,
                                                                outputs, target_data_rep=side.data_rep)
        else:
            status = self.api.accept_security_context_async(ctx.handle, cred, context, input, req, outputs,
                                                            target_data_rep=side.data_rep)
        if status != OK:
            raise StepFailed(f"handshake: the {WHO[who]} queue call returned {describe_status(status)}",
                             describe_status(OK), describe_status(status))
        ctx.expected += 1
        control = self.api.control
        if control is not None and control.mode == "deferred":
            control.complete(ctx.handle)  # deferred completion: the driver is the one who says when
        if not self.await_callbacks(ctx, LEG_TIMEOUT_S):
            raise StepFailed(f"handshake: no callback within {int(LEG_TIMEOUT_S * 1000)} ms for the {WHO[who]} leg",
                             "callback", "none")
        self.raise_callback_error()
        final = self.actual(ctx.cb_status if ctx.cb_status is not None else PENDING)
        if outputs.new_context is not None:
            if context is None or outputs.new_context != context:
                self.contexts.pop(context, None)
            self.handles[side.context] = outputs.new_context
            self.contexts[outputs.new_context] = side.context
            self.api.name(outputs.new_context, side.context)
        produced = (bufs.output_token(outputs) or b"") if outputs.written else b""
        if side.token and outputs.written:
            self.tokens[side.token] = produced
        leg = _Leg(who, final, -1 if data is None else len(data), produced, outputs=outputs, input=input)
        alert = bufs.first_of(output, SECBUFFER_ALERT) if outputs.written else None
        if alert is not None and alert.cb:
            leg.alert = bytes(alert.data[: alert.cb])
        extra = bufs.first_of(input, SECBUFFER_EXTRA)
        missing = bufs.first_of(input, SECBUFFER_MISSING)
        if extra is not None and data is not None:
            leg.extra = max(0, min(extra.cb, len(data)))  # C.4 #2: never more than the input
        if missing is not None:
            leg.missing = missing.cb
        return leg

    # ---- what the caller does with a leg's result -------------------------------------------------
    def _after_leg(self, who: int, leg: _Leg, parties: tuple[_Party, _Party], sides: tuple[m.Side, m.Side],
                   creds: list[Any], args: m.Handshake, legs: list[_Leg]) -> None:
        party, peer = parties[who], parties[1 - who]
        status = leg.status
        party.last = leg
        party.final = status
        if leg.alert:
            party.alerts.append(leg.alert)
        if leg.output:
            peer.wire.append(leg.output)  # SCH-10, C.2: output is sent whatever the status
        if status == INCOMPLETE:
            party.need_more = True  # SCH-22: nothing consumed; read more and call again
            return
        if status == INCOMPLETE_CREDS and args.retry and who == 0:
            creds[0] = self.handle(args.retry_cred)
            return  # same input, new credential (SCH-12): the buffer stays as it is
        if status in (COMPLETE_NEEDED, COMPLETE_AND_CONTINUE):
            self._complete_token(who, sides[who], leg)
            # Completed: the side stands where SEC_E_OK / CONTINUE_NEEDED would have left it
            # (``legs`` still shows what the leg returned).
            status = party.final = OK if status == COMPLETE_NEEDED else CONTINUE
        if status == CONTINUE:
            consumed = len(party.inbox) - leg.extra if leg.sent >= 0 else 0
            self._keep_tail(party, leg)
            if consumed <= 0 and not leg.output and leg.sent >= 0:
                party.idle += 1
                if party.idle >= _IDLE_LIMIT:
                    raise StepFailed(f"handshake: the {WHO[who]} consumed nothing and wrote nothing "
                                     f"({_legs_text(legs)})")
            else:
                party.idle = 0
            return
        if status == OK:
            party.done = True
            self._keep_tail(party, leg)
            send = sides[who].send_after
            if send is not None:
                peer.wire.append(self.seal(sides[who].context, send))
            return
        party.failed = True

    @staticmethod
    def _keep_tail(party: _Party, leg: _Leg) -> None:
        """EXTRA(n): the last n bytes stay buffered (SCH-24); else the buffer was consumed."""
        if leg.extra and leg.sent >= 0:
            del party.inbox[: len(party.inbox) - leg.extra]
            party.need_more = False
        else:
            party.inbox.clear()
            party.need_more = True

    def _deliver_failure(self, who: int, leg: _Leg, parties: tuple[_Party, _Party], sides: tuple[m.Side, m.Side],
                         creds: list[Any], args: m.Handshake, legs: list[_Leg], with_alert: bool) -> None:
        """C.2/C.3 "any error": the failing side's output (an alert record) still goes out once."""
        peer_who = 1 - who
        peer = parties[peer_who]
        if not leg.output or peer.done or peer.failed or (peer_who == 0 and not peer.started):
            return  # nothing sent, or the peer is out of the handshake: the bytes wait in its ``rest``
        peer_leg = self._leg(peer_who, sides[peer_who], peer, creds[peer_who], self._read(peer, args), args,
                             with_alert)
        legs.append(peer_leg)
        peer.last = peer_leg
        peer.final = peer_leg.status
        if peer_leg.alert:
            peer.alerts.append(peer_leg.alert)
        if peer_leg.status == OK:
            peer.done = True
            self._keep_tail(peer, peer_leg)
        elif peer_leg.status not in (CONTINUE, INCOMPLETE):
            peer.failed = True
            self._keep_tail(peer, peer_leg)

    def _complete_token(self, who: int, side: m.Side, leg: _Leg) -> None:
        """CompleteAuthToken on the side's context with the leg's output descriptor.

        The contract monitor has no CompleteAuthToken wrapper (the call has no async twin), so
        it goes to the implementation directly."""
        context = self.handles.get(side.context)
        buffers = (leg.outputs.output if leg.outputs is not None else None) or [SecBuffer(SECBUFFER_TOKEN, leg.output)]
        status = self.actual(self.inner.complete_auth_token(context, buffers))
        if status != OK:
            raise StepFailed(f"handshake: CompleteAuthToken on the {WHO[who]} context after "
                             f"{st.name_of(leg.status)} returned {describe_status(status)}",
                             describe_status(OK), describe_status(status))

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

    # ---- stream helpers shared with the stream steps ------------------------------------------------
    def stream_sizes(self, name: str | None) -> Any:
        sizes = self.sizes.get(name or "")
        if sizes is None:
            status, sizes = self.api.query_context_attributes(self.handle(name), SECPKG_ATTR_STREAM_SIZES)
            if status != OK or sizes is None:
                raise StepFailed(f"QueryContextAttributes(STREAM_SIZES) returned {describe_status(status)}")
            self.sizes[name or ""] = sizes
        return sizes

    def seal(self, context: str | None, data: bytes) -> bytes:
        """One EncryptMessage of ``data`` (MSG-2): header + data + trailer, or StepFailed."""
        sizes = self.stream_sizes(context)
        buffers = [SecBuffer(SECBUFFER_STREAM_HEADER, bytes(sizes.header), sizes.header),
                   SecBuffer(SECBUFFER_DATA, data),
                   SecBuffer(SECBUFFER_STREAM_TRAILER, bytes(sizes.trailer), sizes.trailer),
                   SecBuffer(SECBUFFER_EMPTY)]
        status = self.api.encrypt_message(self.handle(context), 0, buffers)
        if status != OK:
            raise StepFailed(f"EncryptMessage returned {describe_status(status)}", describe_status(OK),
                             describe_status(status))
        return b"".join(b.data[: b.cb] for b in buffers[:3])

    # ---- judging -----------------------------------------------------------------------------------
    @staticmethod
    def _stall_text(parties: tuple[_Party, _Party], legs: list[_Leg]) -> str:
        for who in (0, 1):
            party = parties[who]
            if not party.done and party.final == INCOMPLETE:
                return f"the {WHO[who]} needs more bytes and its peer has nothing left to send"
        for who in (0, 1):
            party = parties[who]
            if not party.done and parties[1 - who].done:
                return "one side finished with no token left for the other"
        last = legs[-1].side if legs else 0
        return f"the {WHO[last]} asked to continue but produced no token"

    def _judge(self, step: m.Step, args: m.Handshake, parties: tuple[_Party, _Party], legs: list[_Leg],
               stalled: str) -> None:
        steps_text = _legs_text(legs)
        expect = step.expect if isinstance(step.expect, m.StatusSet) else OK_SET
        sides = (args.client, args.server)
        # The side that failed first, so the message names the culprit rather than its peer.
        order = sorted((0, 1), key=lambda who: not st.failed(parties[who].final))
        for who in order:
            want = sides[who].expect or expect
            final = parties[who].final
            if not want.matches(final):
                raise StepFailed(f"the {WHO[who]} ended with {describe_status(final)}, expected {want.text} "
                                 f"(legs: {steps_text})", want.text, describe_status(final))
        counted = [leg.status for leg in legs if leg.status != INCOMPLETE]
        if args.legs is not None:
            same = len(args.legs) == len(counted)
            if not same or not all(e.matches(x) for e, x in zip(args.legs, counted, strict=True)):
                want_text = ", ".join(e.text for e in args.legs)
                got_text = ", ".join(st.name_of(x) for x in counted)
                raise StepFailed(f"legs: expected [{want_text}], got [{got_text}]", want_text, got_text)
        problems: list[str] = []
        incomplete = sum(1 for leg in legs if leg.status == INCOMPLETE)
        extra = sum(1 for leg in legs if leg.extra and leg.status != INCOMPLETE)
        for label, want_count, got in (("incomplete legs", args.expect_incomplete, incomplete),
                                       ("legs with EXTRA", args.expect_extra, extra)):
            if want_count is True and not got:
                problems.append(f"{label}: expected at least one, got none")
            elif want_count is False and got:
                problems.append(f"{label}: expected none, got {got}")
            elif type(want_count) is int and got != want_count:
                problems.append(f"{label}: expected {want_count}, got {got}")
        for who, side in enumerate(sides):
            party = parties[who]
            if side.alert == "none" and party.alerts:
                problems.append(f"{WHO[who]} alert: expected none, got {_alert_text(party.alerts[-1])}")
            elif isinstance(side.alert, tuple):
                got_alert = party.alerts[-1] if party.alerts else b""
                if got_alert != bytes(side.alert):
                    problems.append(f"{WHO[who]} alert: expected {_alert_text(bytes(side.alert))}, got "
                                    f"{_alert_text(got_alert) if got_alert else 'none'}")
            if side.final is not None:
                last = party.last
                if last is None:
                    problems.append(f"{WHO[who]} final: the side made no call")
                else:
                    found = bufs.check_outputs(side.final, last.outputs, last.input)
                    problems.extend(f"{WHO[who]} final {text}" for text in found)
        if problems:
            raise StepFailed("; ".join(problems) + f" (legs: {steps_text})")
        if stalled:
            raise StepFailed(f"the handshake stalled: {stalled} (legs: {steps_text})")

    def _record_legs(self, step: m.Step, legs: list[_Leg]) -> None:
        """One StepRecord per leg (runs of incomplete legs of one side collapsed into one)."""
        records = self.records
        i = 0
        number = 0
        while i < len(legs):
            leg = legs[i]
            number += 1
            if leg.status == INCOMPLETE:
                j = i
                while j + 1 < len(legs) and legs[j + 1].status == INCOMPLETE and legs[j + 1].side == leg.side:
                    j += 1
                count = j - i + 1
                text = (f"{WHO[leg.side]} {CALL[leg.side]} x{count} -> SEC_E_INCOMPLETE_MESSAGE "
                        f"(in={legs[i].sent}..{legs[j].sent}, last missing={legs[j].missing})") if count > 1 \
                    else leg.text()
                i = j + 1
            else:
                text = leg.text()
                i += 1
            records.append(StepRecord(step.index, step.line, "leg", f"handshake leg {number}: {text}", True,
                                      "", st.name_of(leg.status)))


def _alert_text(alert: bytes) -> str:
    return "(" + ", ".join(str(b) for b in alert) + ")"


def _legs_text(legs: list[_Leg]) -> str:
    """Leg statuses in call order, runs of one status on one side collapsed (``x12``)."""
    out: list[str] = []
    previous: tuple[int, int] | None = None
    count = 0
    for leg in legs:
        key = (leg.side, leg.status)
        if key == previous:
            count += 1
            continue
        if previous is not None:
            out.append(_run_text(previous, count))
        previous, count = key, 1
    if previous is not None:
        out.append(_run_text(previous, count))
    return ", ".join(out)


def _run_text(key: tuple[int, int], count: int) -> str:
    text = f"{CALL[key[0]]} {st.name_of(key[1])}"
    return f"{text} x{count}" if count > 1 else text
