"""The simulator's Schannel: a TLS 1.2/1.3 security package over OpenSSL.

OpenSSL (Python's ``ssl`` with ``MemoryBIO``) does all of TLS; this module maps SSPI
calls and SecBuffers onto :class:`tls_connection.TlsConnection` (bytes in, bytes out)
following Section C of the contract.  docs/tls.md explains every mapping and every
choice the documentation leaves open.  Credentials: :mod:`tls_config`.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

from adapters import status as st
from adapters.api import SecBuffer
from adapters.constants import (
    ASC_REQ,
    ASC_RET,
    ISC_REQ,
    ISC_RET,
    SCHANNEL_ALERT,
    SCHANNEL_NAME,
    SCHANNEL_RENEGOTIATE,
    SCHANNEL_SHUTDOWN,
    SECBUFFER_ALERT,
    SECBUFFER_DATA,
    SECBUFFER_EMPTY,
    SECBUFFER_READONLY,
    SECBUFFER_STREAM_HEADER,
    SECBUFFER_STREAM_TRAILER,
    SECBUFFER_TOKEN,
    SECPKG_ATTR_STREAM_SIZES,
    TLS1_ALERT_FATAL,
    TLS1_ALERT_WARNING,
    UNISP_NAME,
)
from adapters.simulator.packages.base import (
    NEVER,
    AcquireResult,
    SecurityPackage,
    StepResult,
    first_buffer,
    report_extra,
    report_missing,
    write_output,
)
from adapters.simulator.packages.tls_config import (
    VERIFY_CHAIN,
    VERIFY_NAME,
    VERIFY_NONE,
    CredentialError,
    TlsCredential,
    acquire,
)
from adapters.simulator.packages.tls_connection import Leg, TlsConnection

SECPKG_ATTR_APPLICATION_PROTOCOL = 35
SECPKG_ATTR_CONNECTION_INFO = 0x5A

_ISC_ALLOCATE = ISC_REQ["ALLOCATE_MEMORY"]
_ISC_EXTENDED_ERROR = ISC_REQ["EXTENDED_ERROR"]
_ISC_MUTUAL = ISC_REQ["MUTUAL_AUTH"]
_ISC_MANUAL = ISC_REQ["MANUAL_CRED_VALIDATION"]
_ASC_ALLOCATE = ASC_REQ["ALLOCATE_MEMORY"]
_ASC_EXTENDED_ERROR = ASC_REQ["EXTENDED_ERROR"]
_ASC_MUTUAL = ASC_REQ["MUTUAL_AUTH"]

# Attribute bits: the non-security ones may be read on any leg, the security ones only
# after the final leg (SCH-14).
_ISC_SECURITY = ISC_RET["CONFIDENTIALITY"] | ISC_RET["REPLAY_DETECT"] | ISC_RET["SEQUENCE_DETECT"]
_ASC_SECURITY = ASC_RET["CONFIDENTIALITY"] | ASC_RET["REPLAY_DETECT"] | ASC_RET["SEQUENCE_DETECT"]

_CONTINUING = (st.SEC_I_CONTINUE_NEEDED, st.SEC_E_OK)


def _token_bytes(buffers: list[SecBuffer] | None) -> bytes | None:
    """The caller's input TOKEN (cbBuffer bytes of it); empty when there is none,
    None when its contents are not bytes at all."""
    buf = first_buffer(buffers, SECBUFFER_TOKEN)
    if buf is None:
        return b""
    data = buf.data
    if not isinstance(data, (bytes, bytearray, memoryview)):
        return None
    if buf.size is not None and 0 <= buf.size < len(data):
        return bytes(data[: buf.size])
    return bytes(data)


def _stream_buffers(
    buffers: list[SecBuffer],
) -> tuple[SecBuffer | None, SecBuffer | None, SecBuffer | None]:
    """EncryptMessage's HEADER, DATA and TRAILER in any order; READONLY ones skipped (MSG-2)."""
    data = header = trailer = None
    for buf in buffers:
        if buf.type & SECBUFFER_READONLY:
            continue
        if buf.type == SECBUFFER_DATA and data is None:
            data = buf
        elif buf.type == SECBUFFER_STREAM_HEADER and header is None:
            header = buf
        elif buf.type == SECBUFFER_STREAM_TRAILER and trailer is None:
            trailer = buf
    return header, data, trailer


def _decrypt_slots(buffers: list[SecBuffer]) -> tuple[SecBuffer, SecBuffer, SecBuffer, SecBuffer] | None:
    """DecryptMessage's DATA and the three EMPTY slots it fills, wherever they are."""
    source = None
    empties: list[SecBuffer] = []
    for buf in buffers:
        if buf.type == SECBUFFER_DATA and source is None:
            source = buf
        elif buf.type == SECBUFFER_EMPTY:
            empties.append(buf)
    if source is None or len(empties) < 3:
        return None
    return source, empties[0], empties[1], empties[2]


class TlsPackage(SecurityPackage):
    """Schannel (UNISP_NAME / SCHANNEL_NAME, OQ-16)."""

    names = (UNISP_NAME, SCHANNEL_NAME)
    features = frozenset({"client", "server", "stream", "tls1.2", "tls1.3"})

    # ---- credentials ------------------------------------------------------------------------
    def acquire(self, principal: str | None, credential_use: int, auth_data: Mapping[str, Any] | None) -> AcquireResult:
        # SCH-1: the principal is unused by Schannel.
        try:
            credential = acquire(credential_use, auth_data)
        except CredentialError as error:
            return AcquireResult(error.status, None, None)
        expiry = credential.expiry if credential.expiry is not None else NEVER
        return AcquireResult(st.SEC_E_OK, credential, expiry)

    # ---- handshake legs -------------------------------------------------------------------
    def initialize(
        self,
        credential: Any,
        context: Any,
        target: str | None,
        context_req: int,
        input: list[SecBuffer] | None,
        output: list[SecBuffer] | None,
    ) -> StepResult:
        cred = credential if isinstance(credential, TlsCredential) else None
        if context is None:
            if cred is None or not cred.outbound:
                return StepResult(st.SEC_E_NO_CREDENTIALS)  # SCH-4
            manual = cred.settings.manual_validation or bool(context_req & _ISC_MANUAL)
            variant = VERIFY_NONE if manual else (VERIFY_NAME if target else VERIFY_CHAIN)
            try:
                conn = TlsConnection.client(cred, variant, target or None)
            except ValueError:
                return StepResult(st.SEC_E_TARGET_UNKNOWN)
            return self._finish(conn, conn.start(), True, context_req, input, output)
        if not isinstance(context, TlsConnection) or context.server:
            return StepResult(st.SEC_E_INVALID_HANDLE, context)
        data = _token_bytes(input)
        if data is None:
            return StepResult(st.SEC_E_INVALID_TOKEN, context)
        leg = context.step(data, cred)
        return self._finish(context, leg, False, context_req, input, output)

    def accept(
        self,
        credential: Any,
        context: Any,
        input: list[SecBuffer] | None,
        context_req: int,
        output: list[SecBuffer] | None,
    ) -> StepResult:
        if context is None:
            cred = credential if isinstance(credential, TlsCredential) else None
            if cred is None or not cred.inbound or not cred.has_certificate:
                return StepResult(st.SEC_E_NO_CREDENTIALS)  # SCH-15, CALL-8
            if cred.settings.require_client_certificate:
                mode = ssl.CERT_REQUIRED
            elif context_req & _ASC_MUTUAL:
                mode = ssl.CERT_OPTIONAL  # SCH-18: request it; the caller judges the result
            else:
                mode = ssl.CERT_NONE
            data = _token_bytes(input)
            if data is None:
                return StepResult(st.SEC_E_INVALID_TOKEN)
            conn = TlsConnection.server_side(cred, mode)
            return self._finish(conn, conn.step(data), True, context_req, input, output)
        if not isinstance(context, TlsConnection) or not context.server:
            return StepResult(st.SEC_E_INVALID_HANDLE, context)
        data = _token_bytes(input)
        if data is None:
            return StepResult(st.SEC_E_INVALID_TOKEN, context)
        leg = context.step(data)
        return self._finish(context, leg, False, context_req, input, output)

    def _finish(
        self,
        conn: TlsConnection,
        leg: Leg,
        first: bool,
        context_req: int,
        input: list[SecBuffer] | None,
        output: list[SecBuffer] | None,
    ) -> StepResult:
        """Write a leg's results into the caller's buffers and build the StepResult."""
        server = conn.server
        allocate = bool(context_req & (_ASC_ALLOCATE if server else _ISC_ALLOCATE))
        extended = bool(context_req & (_ASC_EXTENDED_ERROR if server else _ISC_EXTENDED_ERROR))
        status = leg.status
        failed = st.failed(status) and status != st.SEC_E_INCOMPLETE_MESSAGE
        # SCH-27: the alert record reaches the peer only with EXTENDED_ERROR.
        token = leg.output if not failed or extended else b""
        if not write_output(output, SECBUFFER_TOKEN, token, allocate):
            write_output(output, SECBUFFER_TOKEN, b"", True)
            status = st.SEC_E_INSUFFICIENT_MEMORY
            failed = True
            conn.fail(status)
        # SCH-9/29: two bytes (level, description); empty whenever no alert was made, so a
        # caller that checks ALERT after every call (C.4 #3) sees nothing on success.
        alert = bytes(leg.alert) if leg.alert is not None and failed else b""
        if not write_output(output, SECBUFFER_ALERT, alert, allocate):
            write_output(output, SECBUFFER_ALERT, b"", True)
        if status == st.SEC_E_INCOMPLETE_MESSAGE:
            report_missing(input, leg.missing)
        elif leg.extra and not failed:
            report_extra(input, leg.extra)
        attributes = self._attributes(conn, leg, status, context_req, allocate, extended)
        # OQ-20: a first leg that fails or is incomplete creates no handle.
        keep = None if first and status not in _CONTINUING else conn
        expiry = conn.expiry() if leg.final and status == st.SEC_E_OK else None
        return StepResult(status, keep, attributes, expiry)

    @staticmethod
    def _attributes(
        conn: TlsConnection, leg: Leg, status: int, context_req: int, allocate: bool, extended: bool
    ) -> int:
        if conn.server:
            attributes = ASC_RET["STREAM"]
            if allocate:
                attributes |= ASC_RET["ALLOCATED_MEMORY"]
            if extended:
                attributes |= ASC_RET["EXTENDED_ERROR"]
            if leg.final and status == st.SEC_E_OK:
                attributes |= _ASC_SECURITY
                if conn.peer_certificate_verified():
                    attributes |= ASC_RET["MUTUAL_AUTH"]  # SCH-18
            return attributes
        attributes = ISC_RET["STREAM"]
        if allocate:
            attributes |= ISC_RET["ALLOCATED_MEMORY"]
        if extended:
            attributes |= ISC_RET["EXTENDED_ERROR"]
        if leg.final and status == st.SEC_E_OK:
            attributes |= _ISC_SECURITY
            if conn.manual_validation:
                attributes |= ISC_RET["MANUAL_CRED_VALIDATION"]
            elif context_req & _ISC_MUTUAL and conn.peer_certificate_verified():
                attributes |= ISC_RET["MUTUAL_AUTH"]
        return attributes

    def delete(self, context: Any) -> int:
        if isinstance(context, TlsConnection):
            context.release()
        return st.SEC_E_OK

    # ---- after the handshake ----------------------------------------------------------------
    def query_attributes(self, context: Any, attribute: int) -> tuple[int, Any]:
        if not isinstance(context, TlsConnection):
            return st.SEC_E_INVALID_HANDLE, None
        if attribute == SECPKG_ATTR_STREAM_SIZES:
            return context.stream_sizes()
        status, _sizes = context.stream_sizes()
        if status != st.SEC_E_OK:
            return status, None
        if attribute == SECPKG_ATTR_APPLICATION_PROTOCOL:
            return st.SEC_E_OK, context.selected_alpn()
        if attribute == SECPKG_ATTR_CONNECTION_INFO:
            name, _version, bits = context.cipher() or ("", "", 0)
            return st.SEC_E_OK, {"protocol": context.protocol, "cipher": name, "cipher_strength": bits}
        return st.SEC_E_UNSUPPORTED_FUNCTION, None

    def encrypt(self, context: Any, qop: int, buffers: list[SecBuffer]) -> int:
        if type(context) is not TlsConnection:
            return st.SEC_E_INVALID_HANDLE
        if qop != 0:
            # SECQOP_WRAP_OOB_DATA would send an arbitrary alert; Python's ssl cannot.
            return st.SEC_E_QOP_NOT_SUPPORTED
        header: SecBuffer | None
        data: SecBuffer | None
        trailer: SecBuffer | None
        if (
            len(buffers) >= 3
            and buffers[0].type == SECBUFFER_STREAM_HEADER
            and buffers[1].type == SECBUFFER_DATA
            and buffers[2].type == SECBUFFER_STREAM_TRAILER
        ):
            header, data, trailer = buffers[0], buffers[1], buffers[2]  # MSG-2 order: fast path
        else:
            header, data, trailer = _stream_buffers(buffers)
        if data is None:
            return st.SEC_E_INVALID_TOKEN  # MSG-3
        return context.encrypt_into(header, data, trailer)

    def decrypt(self, context: Any, buffers: list[SecBuffer]) -> tuple[int, int]:
        if type(context) is not TlsConnection:
            return st.SEC_E_INVALID_HANDLE, 0
        if (
            len(buffers) == 4
            and buffers[0].type == SECBUFFER_DATA
            and buffers[1].type == SECBUFFER_EMPTY
            and buffers[2].type == SECBUFFER_EMPTY
            and buffers[3].type == SECBUFFER_EMPTY
        ):
            source, plain, tail, rest = buffers  # MSG-4 layout: fast path
        else:
            slots = _decrypt_slots(buffers)
            if slots is None:
                return st.SEC_E_INVALID_TOKEN, 0  # MSG-4: one DATA and three EMPTY buffers
            source, plain, tail, rest = slots
        return context.decrypt_into(source, plain, tail, rest), 0

    def apply_control_token(self, context: Any, buffers: list[SecBuffer]) -> int:
        if self.profile.kernel_mode:
            return st.SEC_E_UNSUPPORTED_FUNCTION  # SHUT-4, OQ-17
        if not isinstance(context, TlsConnection):
            return st.SEC_E_INVALID_HANDLE
        payload = _token_bytes(buffers)
        if payload is None or len(payload) < 4:
            return st.SEC_E_INVALID_TOKEN
        kind = int.from_bytes(payload[:4], "little")
        if kind == SCHANNEL_SHUTDOWN:
            return context.request_shutdown()  # SHUT-2
        if kind == SCHANNEL_ALERT:
            # SCH-28: SCHANNEL_ALERT_TOKEN {dwTokenType, dwAlertType, dwAlertNumber}.
            if len(payload) < 12:
                return st.SEC_E_INVALID_TOKEN
            level = int.from_bytes(payload[4:8], "little")
            number = int.from_bytes(payload[8:12], "little")
            if level not in (TLS1_ALERT_WARNING, TLS1_ALERT_FATAL) or number > 255:
                return st.SEC_E_INVALID_TOKEN
            if number == 0:
                return context.request_shutdown()  # close_notify is the shutdown alert
            # OpenSSL (through Python) can only send the alerts it decides on itself.
            return st.SEC_E_UNSUPPORTED_FUNCTION
        if kind == SCHANNEL_RENEGOTIATE:
            return st.SEC_E_UNSUPPORTED_FUNCTION  # never initiated (OQ-18)
        return st.SEC_E_INVALID_TOKEN
