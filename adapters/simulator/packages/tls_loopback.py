"""A reference caller of the TLS package, synchronous and in-process.

It drives :class:`tls.TlsPackage` exactly as an SSPI program drives Schannel (the C.2 and
C.3 loops: input ``TOKEN + EMPTY``, output ``TOKEN + ALERT``, EXTRA tails kept, MISSING
read), so tests, interop checks and benchmarks share one careful caller instead of
re-implementing the buffer dance each time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from adapters import status as st
from adapters.api import SecBuffer
from adapters.constants import (
    ASC_REQ,
    ISC_REQ,
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
from adapters.simulator.packages.tls import TlsPackage

DEFAULT_ISC_REQ = (
    ISC_REQ["ALLOCATE_MEMORY"]
    | ISC_REQ["CONFIDENTIALITY"]
    | ISC_REQ["REPLAY_DETECT"]
    | ISC_REQ["SEQUENCE_DETECT"]
    | ISC_REQ["STREAM"]
    | ISC_REQ["EXTENDED_ERROR"]
)
DEFAULT_ASC_REQ = (
    ASC_REQ["ALLOCATE_MEMORY"]
    | ASC_REQ["CONFIDENTIALITY"]
    | ASC_REQ["REPLAY_DETECT"]
    | ASC_REQ["SEQUENCE_DETECT"]
    | ASC_REQ["STREAM"]
    | ASC_REQ["EXTENDED_ERROR"]
)
_KEEP = object()


class LoopbackError(AssertionError):
    """The package answered something a conforming caller cannot continue from."""


@dataclass(slots=True)
class LegResult:
    status: int
    token: bytes = b""
    alert: bytes = b""
    extra: int = 0
    missing: int | None = None
    attributes: int = 0
    expiry: int | None = None


@dataclass(slots=True)
class Opened:
    """DecryptMessage outcome."""

    status: int
    data: bytes = b""
    extra: int = 0
    missing: int | None = None


def _slot(buffers: list[SecBuffer], buffer_type: int) -> SecBuffer | None:
    for buf in buffers:
        if buf.type == buffer_type:
            return buf
    return None


@dataclass
class Endpoint:
    """One side of a connection: a credential, a context handle and its request flags."""

    package: TlsPackage
    credential: Any
    server: bool
    target: str | None = None
    context_req: int | None = None
    token_capacity: int = 0  # output TOKEN cbBuffer when ALLOCATE_MEMORY is not requested
    context: Any = None
    history: list[int] = field(default_factory=list)

    @property
    def request(self) -> int:
        if self.context_req is not None:
            return self.context_req
        return DEFAULT_ASC_REQ if self.server else DEFAULT_ISC_REQ

    def leg(self, data: bytes | None, credential: Any = _KEEP) -> LegResult:
        """One ISC/ASC call with ``data`` as TOKEN (None: no input descriptor)."""
        inputs = None if data is None else [SecBuffer(SECBUFFER_TOKEN, data), SecBuffer(SECBUFFER_EMPTY)]
        outputs = [SecBuffer(SECBUFFER_TOKEN, size=self.token_capacity), SecBuffer(SECBUFFER_ALERT, size=2)]
        cred = self.credential if credential is _KEEP else credential
        if self.server:
            result = self.package.accept(cred, self.context, inputs, self.request, outputs)
        else:
            result = self.package.initialize(cred, self.context, self.target, self.request, inputs, outputs)
        if result.context is not None:
            self.context = result.context
        self.history.append(result.status)
        leg = LegResult(result.status, outputs[0].data, outputs[1].data, attributes=result.attributes)
        leg.expiry = result.expiry
        if inputs is not None:
            extra = _slot(inputs, SECBUFFER_EXTRA)
            missing = _slot(inputs, SECBUFFER_MISSING)
            leg.extra = extra.cb if extra is not None else 0
            leg.missing = missing.cb if missing is not None else None
        return leg

    def seal(self, plaintext: bytes) -> bytes:
        """EncryptMessage -> the bytes to send (LoopbackError on failure)."""
        status, sizes = self.package.query_attributes(self.context, SECPKG_ATTR_STREAM_SIZES)
        if status != st.SEC_E_OK:
            raise LoopbackError(f"QueryContextAttributes(STREAM_SIZES) -> {st.describe(status)}")
        out = bytearray()
        for start in range(0, max(1, len(plaintext)), sizes.maximum_message):
            chunk = plaintext[start : start + sizes.maximum_message]
            buffers = [
                SecBuffer(SECBUFFER_STREAM_HEADER, size=sizes.header),
                SecBuffer(SECBUFFER_DATA, chunk),
                SecBuffer(SECBUFFER_STREAM_TRAILER, size=sizes.trailer),
                SecBuffer(SECBUFFER_EMPTY),
            ]
            status = self.package.encrypt(self.context, 0, buffers)
            if status != st.SEC_E_OK:
                raise LoopbackError(f"EncryptMessage -> {st.describe(status)}")
            out += buffers[0].data + buffers[1].data + buffers[2].data
        return bytes(out)

    def open(self, data: bytes) -> Opened:
        """One DecryptMessage call on ``data``."""
        buffers = [SecBuffer(SECBUFFER_DATA, data), SecBuffer(SECBUFFER_EMPTY), SecBuffer(SECBUFFER_EMPTY)]
        buffers.append(SecBuffer(SECBUFFER_EMPTY))
        status, _qop = self.package.decrypt(self.context, buffers)
        plain = _slot(buffers, SECBUFFER_DATA)
        extra = _slot(buffers, SECBUFFER_EXTRA)
        missing = _slot(buffers, SECBUFFER_MISSING)
        opened = Opened(status, extra=extra.cb if extra is not None else 0)
        if status != st.SEC_E_INCOMPLETE_MESSAGE and plain is not None and plain is not buffers[0]:
            opened.data = plain.data
        opened.missing = missing.cb if missing is not None else None
        return opened

    def receive(self, data: bytes) -> tuple[bytes, bytes, int]:
        """Decrypt every complete record of ``data``, answering SEC_I_RENEGOTIATE with an
        ISC/ASC leg (MSG-9).  Returns (plaintext, unconsumed tail, last status)."""
        plaintext = bytearray()
        status = st.SEC_E_OK
        while data:
            opened = self.open(data)
            status = opened.status
            if status == st.SEC_E_INCOMPLETE_MESSAGE:
                break
            if status == st.SEC_I_RENEGOTIATE:
                leg = self.leg(opened.data)
                if leg.status != st.SEC_E_OK:
                    raise LoopbackError(f"post-handshake leg -> {st.describe(leg.status)}")
                status = st.SEC_E_OK  # handled; the record layer runs again
            elif status == st.SEC_E_OK:
                plaintext += opened.data
            else:
                data = data[len(data) - opened.extra :] if opened.extra else b""
                break
            data = data[len(data) - opened.extra :] if opened.extra else b""
        return bytes(plaintext), data, status


CONTINUING = (st.SEC_E_OK, st.SEC_I_CONTINUE_NEEDED)


def handshake(client: Endpoint, server: Endpoint, max_legs: int = 16) -> tuple[bytes, bytes]:
    """Run ISC/ASC until both sides return SEC_E_OK.

    Returns the bytes each side still has to read through DecryptMessage:
    (towards the client, towards the server).  LoopbackError on any failure.
    """
    first = client.leg(None)
    if first.status != st.SEC_I_CONTINUE_NEEDED:
        raise LoopbackError(f"first ISC -> {st.describe(first.status)}")
    return continue_handshake(client, server, first.token, max_legs=max_legs)


def continue_handshake(
    client: Endpoint, server: Endpoint, to_server: bytes, client_done: bool = False, max_legs: int = 16
) -> tuple[bytes, bytes]:
    """Finish a handshake whose client leg produced ``to_server`` (see :func:`handshake`)."""
    to_client = b""
    server_done = False
    for _ in range(max_legs):
        if to_server and not server_done:
            side, data = server, to_server
        elif to_client and not client_done:
            side, data = client, to_client
        else:
            break
        leg = side.leg(data)
        if leg.status not in CONTINUING:
            raise LoopbackError(f"{'ASC' if side.server else 'ISC'} -> {st.describe(leg.status)}")
        tail = data[len(data) - leg.extra :] if leg.extra else b""
        if side.server:
            to_server, to_client = tail, to_client + leg.token
            server_done = leg.status == st.SEC_E_OK
        else:
            to_client, to_server = tail, to_server + leg.token
            client_done = leg.status == st.SEC_E_OK
    if not (client_done and server_done):
        raise LoopbackError("handshake did not finish")
    return to_client, to_server
