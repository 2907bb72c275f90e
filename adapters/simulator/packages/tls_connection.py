"""One Schannel security context: an OpenSSL ``SSLObject`` between two MemoryBIOs.

This module works on plain bytes and returns results; :mod:`tls` maps them onto SSPI
buffers.  Every byte on the wire is produced or checked by OpenSSL; what this class adds
is Schannel's calling convention on top:

* complete records only reach OpenSSL (framing in :mod:`tls_records`), so a partial
  record changes nothing (SCH-20..22, C.4 #1);
* the handshake stops feeding records once it completes and returns the rest as EXTRA
  (SCH-23); mid-handshake a partial tail after complete records is EXTRA too;
* a CertificateRequest met by a credential without a certificate pauses the leg with
  SEC_I_INCOMPLETE_CREDENTIALS before OpenSSL answers it (SCH-12);
* post-handshake handshake messages stall the record layer (SEC_I_RENEGOTIATE, MSG-8/9);
* close_notify in either direction ends the record layer (SHUT-2/3, C.4 #5).

Phases (C.2/C.3): HANDSHAKE (C1/C2, S1/S2), ESTABLISHED (C3/S3), STALLED (C4/S4),
PEER_CLOSED (after SEC_I_CONTEXT_EXPIRED), SHUTDOWN (C5/S5, close requested),
CLOSED (close_notify produced), FAILED (any fatal error; the caller must delete).
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass

from adapters import status as st
from adapters.api import SecBuffer, StreamSizes
from adapters.constants import (
    SECBUFFER_DATA,
    SECBUFFER_EXTRA,
    SECBUFFER_MISSING,
    SECBUFFER_STREAM_HEADER,
    SECBUFFER_STREAM_TRAILER,
)
from adapters.simulator.packages.base import NEVER
from adapters.simulator.packages.tls_alerts import failure_status
from adapters.simulator.packages.tls_config import VERIFY_NONE, TlsCredential
from adapters.simulator.packages.tls_observer import ObservedSSLObject, Recorder
from adapters.simulator.packages.tls_pki import certificate_expiry
from adapters.simulator.packages.tls_records import (
    CERTIFICATE_REQUEST,
    CHANGE_CIPHER_SPEC_CONTENT,
    CONTENT_TYPES,
    HANDSHAKE_CONTENT,
    HEADER_SIZE,
    MAX_RECORD_BODY,
    FramingError,
    frame,
    scan_handshake,
)

HANDSHAKE, ESTABLISHED, STALLED, PEER_CLOSED, SHUTDOWN, CLOSED, FAILED = range(7)
PHASE_NAMES = ("handshake", "established", "stalled", "peer-closed", "shutdown", "closed", "failed")

MAX_MESSAGE = 16384  # TLS plaintext fragment limit, cbMaximumMessage (MSG-1)
_READ_SIZE = MAX_MESSAGE + 1024
_FATAL = 2
_OK = st.SEC_E_OK
_EMPTY_RECORD = -1  # internal marker: a record without plaintext that is not a close
_INCOMPLETE = st.SEC_E_INCOMPLETE_MESSAGE
_INVALID_PARAMETER = st.SEC_E_INVALID_PARAMETER
_BUFFER_TOO_SMALL = st.SEC_E_BUFFER_TOO_SMALL
_EMPTY_TLS13_BODY = 17  # inner content type + AEAD tag


@dataclass(slots=True)
class Leg:
    """Result of one ISC/ASC leg on bytes."""

    status: int
    output: bytes = b""
    alert: tuple[int, int] | None = None  # alert this side generated (SCH-9/29)
    extra: int = 0  # unconsumed trailing input bytes (SCH-23)
    missing: int = 0  # bytes still needed with SEC_E_INCOMPLETE_MESSAGE (SCH-21)
    final: bool = False  # the handshake (or post-handshake exchange) completed


def _stream_sizes(cipher: tuple[str, str, int] | None) -> StreamSizes:
    """Header/trailer sizes of the negotiated record protection.

    TLS 1.3 (any AEAD): 5-byte header; trailer = inner content type + 16-byte tag.
    TLS 1.2 GCM/CCM: header carries the 8-byte explicit nonce; ChaCha20 has none.
    TLS 1.2 CBC: header carries the IV; trailer = MAC + at most one block of padding.
    """
    name, version, _bits = cipher if cipher else ("", "", 0)
    block = 16 if "AES" in name else (8 if "DES" in name else 1)
    if version == "TLSv1.3":
        return StreamSizes(HEADER_SIZE, 17, MAX_MESSAGE, 4, block)
    if "GCM" in name or "CCM" in name:
        return StreamSizes(HEADER_SIZE + 8, 16, MAX_MESSAGE, 4, block)
    if "CHACHA20" in name:
        return StreamSizes(HEADER_SIZE, 16, MAX_MESSAGE, 4, block)
    mac = 48 if name.endswith("SHA384") else (32 if name.endswith("SHA256") else 20)
    return StreamSizes(HEADER_SIZE + block, mac + block, MAX_MESSAGE, 4, block)


class TlsConnection:
    """Package state behind one security context handle."""

    __slots__ = (
        "_awaiting_credentials",
        "_certificate_request_answered",
        "_consumed_prefix",
        "_handshake_carry",
        "_header_size",
        "_incoming",
        "_lock",
        "_loud",
        "_outgoing",
        "_pending_output",
        "_read",
        "_recorder",
        "_scan_plaintext",
        "_sizes",
        "_sslobj",
        "_stall_message",
        "_tls13",
        "_write",
        "client_certificate_mode",
        "credential",
        "failure",
        "manual_validation",
        "peer_closed",
        "phase",
        "server",
        "variant",
    )

    def __init__(
        self,
        credential: TlsCredential,
        server: bool,
        context: ssl.SSLContext,
        target: str | None = None,
        variant: str = VERIFY_NONE,
        client_certificate_mode: ssl.VerifyMode = ssl.CERT_NONE,
    ) -> None:
        self._lock = threading.Lock()
        self.credential = credential
        self.server = server
        self.variant = variant
        self.manual_validation = variant == VERIFY_NONE
        self.client_certificate_mode = client_certificate_mode
        self.phase = HANDSHAKE
        self.failure = st.SEC_E_OK
        self.peer_closed = False
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._recorder = Recorder()
        # ValueError here (bad target name) is the caller's to map.
        sslobj = context.wrap_bio(self._incoming, self._outgoing, server_side=server, server_hostname=target)
        assert isinstance(sslobj, ObservedSSLObject)
        sslobj.recorder = self._recorder
        self._sslobj = sslobj
        self._awaiting_credentials = False
        self._certificate_request_answered = False
        self._consumed_prefix = b""
        self._pending_output = b""
        self._stall_message = b""
        self._header_size = HEADER_SIZE
        self._loud = True  # the message callback is on (handshake phase)
        self._tls13 = False
        # The C-level read/write skip a Python wrapper frame per record.
        raw = getattr(sslobj, "_sslobj", sslobj)
        self._read = raw.read
        self._write = raw.write
        # Client without a certificate: watch plaintext records for a CertificateRequest.
        self._scan_plaintext = not server and not credential.has_certificate
        self._handshake_carry = 0
        self._sizes: StreamSizes | None = None

    # ---- constructors ---------------------------------------------------------------------
    @classmethod
    def client(cls, credential: TlsCredential, variant: str, target: str | None) -> TlsConnection:
        context = credential.client_context(variant)
        return cls(credential, False, context, target=target, variant=variant)

    @classmethod
    def server_side(cls, credential: TlsCredential, client_certificate_mode: ssl.VerifyMode) -> TlsConnection:
        context = credential.server_context(client_certificate_mode)
        return cls(credential, True, context, client_certificate_mode=client_certificate_mode)

    # ---- facts the package reports -----------------------------------------------------
    @property
    def protocol(self) -> str | None:
        return self._sslobj.version()

    def cipher(self) -> tuple[str, str, int] | None:
        return self._sslobj.cipher()

    def selected_alpn(self) -> str | None:
        return self._sslobj.selected_alpn_protocol()

    def peer_certificate_verified(self) -> bool:
        """A peer certificate was presented *and* validated by OpenSSL (SCH-18)."""
        if self.server:
            verifying = self.client_certificate_mode != ssl.CERT_NONE
        else:
            verifying = not self.manual_validation
        return verifying and self._sslobj.getpeercert(binary_form=True) is not None

    def expiry(self) -> int:
        """TimeStamp for the final leg (SCH-2): the certificate's notAfter."""
        if self.server:
            return self.credential.expiry if self.credential.expiry is not None else NEVER
        if not self.manual_validation:
            der = self._sslobj.getpeercert(binary_form=True)
            if der:
                return certificate_expiry(der)
        return NEVER

    def stream_sizes(self) -> tuple[int, StreamSizes | None]:
        """MSG-1; only a context whose handshake completed has record sizes."""
        if self._sizes is None:
            return st.SEC_E_INVALID_HANDLE, None
        return st.SEC_E_OK, self._sizes

    # ---- handshake legs ------------------------------------------------------------------
    def start(self) -> Leg:
        """First ISC leg: the ClientHello."""
        with self._lock:
            try:
                self._sslobj.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as error:
                return self._fail(error)
            return Leg(st.SEC_I_CONTINUE_NEEDED, self._outgoing.read())

    def step(self, data: bytes, credential: TlsCredential | None = None) -> Leg:
        """One ISC/ASC leg with ``data`` as the input TOKEN."""
        with self._lock:
            phase = self.phase
            if phase == HANDSHAKE:
                return self._handshake(data, credential)
            if phase == STALLED:
                return self._resume(data)
            if phase == SHUTDOWN:
                return self._close()
            if phase == FAILED:
                return Leg(self.failure)
            if phase == ESTABLISHED:
                # SCH-13: a new ISC/ASC on an established context asks for
                # renegotiation, which this implementation never starts (OQ-18).
                return Leg(st.SEC_E_UNSUPPORTED_FUNCTION)
            return Leg(st.SEC_E_CONTEXT_EXPIRED)

    def _handshake(self, data: bytes, credential: TlsCredential | None) -> Leg:
        if self._awaiting_credentials:
            # SCH-12: the retry after SEC_I_INCOMPLETE_CREDENTIALS.  A credential with a
            # certificate replaces the context's; anything else continues without one.
            self._awaiting_credentials = False
            self._certificate_request_answered = True
            if credential is not None and credential.outbound and credential.has_certificate:
                if credential is not self.credential:
                    self._sslobj.context = credential.client_context(self.variant)
                    self.credential = credential
        start = 0
        prefix = self._consumed_prefix
        if prefix and data[: len(prefix)] == prefix:
            start = len(prefix)  # the same input again: skip what was already consumed
        view = memoryview(data)[start:]
        try:
            framing = frame(view)
        except FramingError as error:
            return self._fail_framing(error)
        if not framing.ends:
            return Leg(st.SEC_E_INCOMPLETE_MESSAGE, missing=framing.missing or HEADER_SIZE)
        self._consumed_prefix = b""
        incoming = self._incoming
        sslobj = self._sslobj
        recorder = self._recorder
        position = 0
        done = False
        for end in framing.ends:
            if self._scan_plaintext and self._certificate_request_ahead(view[position:end]):
                # TLS 1.2: pause *before* OpenSSL reads the CertificateRequest, since it
                # fixes the usable client keys when it reads it (SCH-12).
                self._awaiting_credentials = True
                self._consumed_prefix = bytes(data[: start + position])
                return Leg(st.SEC_I_INCOMPLETE_CREDENTIALS)
            incoming.write(view[position:end])
            position = end
            try:
                sslobj.do_handshake()
                done = True
                break
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as error:
                return self._fail(error)
            if recorder.certificate_request and not self._certificate_request_answered and not self.server:
                if self.credential.has_certificate:
                    self._certificate_request_answered = True
                else:
                    # Pause before OpenSSL builds its Certificate message: it does so only
                    # after the rest of the server's flight, which we have not fed yet.
                    self._awaiting_credentials = True
                    self._consumed_prefix = bytes(data[: start + position])
                    return Leg(st.SEC_I_INCOMPLETE_CREDENTIALS)
        output = self._outgoing.read()
        extra = len(view) - position
        if done:
            self._established()
            return Leg(st.SEC_E_OK, output, extra=extra, final=True)
        return Leg(st.SEC_I_CONTINUE_NEEDED, output, extra=extra)

    def _established(self) -> None:
        self.phase = ESTABLISHED
        self._recorder.established = True
        self._tls13 = self._sslobj.version() == "TLSv1.3"
        self._sizes = _stream_sizes(self._sslobj.cipher())
        self._header_size = self._sizes.header
        # A TLS 1.3 client keeps the message callback for its first DecryptMessage, so
        # the server's first NewSessionTicket is reported byte-exact (MSG-8); everybody
        # else switches to the callback-free twin context now (see _quiet_down).
        if self.server or not self._tls13:
            self._quiet_down()

    def _quiet_down(self) -> None:
        """Move the connection to the identical SSLContext without message callback."""
        if self._loud:
            if self.server:
                twin = self.credential.server_context(self.client_certificate_mode, quiet=True)
            else:
                twin = self.credential.client_context(self.variant, quiet=True)
            self._sslobj.context = twin
            self._loud = False

    def _certificate_request_ahead(self, record: memoryview) -> bool:
        """Does this plaintext record carry a CertificateRequest we cannot answer?"""
        content_type = record[0]
        if content_type == CHANGE_CIPHER_SPEC_CONTENT:
            self._scan_plaintext = False  # from here on handshake records are encrypted
            return False
        if content_type != HANDSHAKE_CONTENT:
            return False
        found, self._handshake_carry = scan_handshake(record[HEADER_SIZE:], self._handshake_carry, CERTIFICATE_REQUEST)
        if found:
            self._scan_plaintext = False
        return found

    def _resume(self, data: bytes) -> Leg:
        """The ISC/ASC that consumes a post-handshake message (MSG-9, C.4 #4).

        OpenSSL already processed the message inside DecryptMessage; this call releases
        the stall and returns whatever OpenSSL queued in reply (a KeyUpdate answer).
        The caller may pass the DATA buffer DecryptMessage returned (current docs) or,
        as older docs say, the bytes after it: those are TLS records this call does not
        consume, so they come back as EXTRA for DecryptMessage.
        """
        try:
            self._sslobj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as error:
            return self._fail(error)
        self.phase = ESTABLISHED
        output = self._pending_output + self._outgoing.read()
        self._pending_output = b""
        extra = 0
        if data and data != self._stall_message:
            try:
                if frame(data, limit=1).ends:
                    extra = len(data)
            except FramingError:
                pass
        self._stall_message = b""
        return Leg(st.SEC_E_OK, output, extra=extra, final=True)

    def _close(self) -> Leg:
        """SHUT-2: produce close_notify.  SEC_I_CONTEXT_EXPIRED when the peer already
        closed (the exchange is complete), SEC_E_OK when we are the initiator."""
        try:
            self._sslobj.unwrap()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError:
            pass  # e.g. the peer's close_notify was processed already; nothing to add
        self.phase = CLOSED
        output = self._outgoing.read()
        return Leg(st.SEC_I_CONTEXT_EXPIRED if self.peer_closed else st.SEC_E_OK, output)

    def _fail(self, error: ssl.SSLError) -> Leg:
        recorder = self._recorder
        status = failure_status(error, recorder.alert_sent, recorder.alert_received)
        self.phase = FAILED
        self.failure = status
        # Only an alert this side generated goes into SECBUFFER_ALERT (SCH-9, C.4 #3).
        alert = recorder.alert_sent if recorder.alert_sent and recorder.alert_sent[0] == _FATAL else None
        return Leg(status, self._outgoing.read(), alert=alert)

    def _fail_framing(self, error: FramingError) -> Leg:
        self.phase = FAILED
        self.failure = st.SEC_E_ILLEGAL_MESSAGE
        return Leg(st.SEC_E_ILLEGAL_MESSAGE, alert=(_FATAL, error.alert))

    def fail(self, status: int) -> None:
        """Mark the context dead (e.g. its output did not fit the caller's buffer)."""
        with self._lock:
            self.phase = FAILED
            self.failure = status

    # ---- shutdown request ------------------------------------------------------------------
    def request_shutdown(self) -> int:
        """ApplyControlToken(SCHANNEL_SHUTDOWN) in the user-mode profile (SHUT-2)."""
        with self._lock:
            if self.phase in (ESTABLISHED, STALLED, PEER_CLOSED, SHUTDOWN):
                self.phase = SHUTDOWN
                return st.SEC_E_OK
            if self.phase == HANDSHAKE:
                # OpenSSL cannot send close_notify before the handshake finished.
                return st.SEC_E_UNSUPPORTED_FUNCTION
            return st.SEC_E_CONTEXT_EXPIRED

    # ---- records -----------------------------------------------------------------------------
    def _record_layer_status(self) -> int:
        if self.phase == ESTABLISHED:
            return st.SEC_E_OK
        if self.phase == HANDSHAKE:
            return st.SEC_E_INVALID_HANDLE
        return st.SEC_E_CONTEXT_EXPIRED  # stalled, closing, closed, failed (MSG-9, C.4 #4/#5)

    # The two record calls below write straight into the caller's SecBuffers: they are
    # the hot path of every TLS user, and each avoided allocation or call shows.

    def encrypt_into(self, header: SecBuffer | None, data: SecBuffer, trailer: SecBuffer | None) -> int:
        """EncryptMessage in place (MSG-2/3): HEADER, ciphertext in DATA, TRAILER."""
        plaintext = data.data
        if type(plaintext) is not bytes:
            if not isinstance(plaintext, (bytearray, memoryview)):
                return st.SEC_E_INVALID_TOKEN
            plaintext = bytes(plaintext)
        if data.size is not None and data.size != len(plaintext):
            plaintext = plaintext[: max(0, data.size)]
        count = len(plaintext)
        with self._lock:
            if self.phase != ESTABLISHED:
                return self._record_layer_status()
            sizes = self._sizes
            assert sizes is not None
            if count > MAX_MESSAGE:
                return _INVALID_PARAMETER
            if (
                header is None
                or trailer is None
                or (len(header.data) if header.size is None else header.size) < sizes.header
                or (len(trailer.data) if trailer.size is None else trailer.size) < sizes.trailer
            ):
                return _BUFFER_TOO_SMALL
            if not count:
                # OpenSSL does not emit empty application records: nothing to send.
                header.data, header.size, trailer.data, trailer.size = b"", 0, b"", 0
                return _OK
            try:
                self._write(plaintext)
            except ssl.SSLError:
                self.phase = FAILED
                self.failure = st.SEC_E_CONTEXT_EXPIRED
                return st.SEC_E_CONTEXT_EXPIRED
            record = self._outgoing.read()
        cut = sizes.header
        split = cut + count
        header.data = record[:cut]
        header.size = cut
        data.data = record[cut:split]
        data.size = count
        trailer.data = record[split:]
        trailer.size = len(record) - split
        return _OK

    def decrypt_into(self, source: SecBuffer, plain: SecBuffer, tail: SecBuffer, rest: SecBuffer) -> int:
        """DecryptMessage in place, one record per call (MSG-4..9, OQ-21).

        On success ``source`` becomes STREAM_HEADER, ``plain`` DATA (the plaintext, or
        the handshake message with SEC_I_RENEGOTIATE), ``tail`` STREAM_TRAILER and
        ``rest`` EXTRA when more bytes follow.  With SEC_E_INCOMPLETE_MESSAGE ``plain``
        becomes MISSING and nothing else changes.
        """
        data = source.data
        if type(data) is not bytes:
            if not isinstance(data, (bytearray, memoryview)):
                return st.SEC_E_INVALID_TOKEN
            data = bytes(data)
        if source.size is not None and source.size != len(data):
            data = data[: max(0, source.size)]
        size = len(data)
        with self._lock:
            if self.phase != ESTABLISHED:
                return self._record_layer_status()
            if size < HEADER_SIZE:
                plain.type, plain.data, plain.size = SECBUFFER_MISSING, b"", HEADER_SIZE - size
                return _INCOMPLETE
            content_type = data[0]
            length = HEADER_SIZE + ((data[3] << 8) | data[4])
            if content_type not in CONTENT_TYPES or data[1] != 3 or length > HEADER_SIZE + MAX_RECORD_BODY:
                return st.SEC_E_INVALID_TOKEN  # not a TLS record: nothing consumed
            if length > size:
                plain.type, plain.data, plain.size = SECBUFFER_MISSING, b"", length - size
                return _INCOMPLETE
            self._incoming.write(data if length == size else data[:length])
            try:
                payload = self._read(_READ_SIZE)
                status = _OK
            except ssl.SSLWantReadError:
                status, payload = self._no_application_data(content_type, length)
            except ssl.SSLZeroReturnError:
                payload = b""
                status = _OK
            except ssl.SSLError as error:
                return self._record_failure(error)
            if status == _EMPTY_RECORD:
                status = _OK  # MSG-5: success with an empty plaintext
            elif status == _OK:
                if not payload:
                    # SHUT-3: the peer's close_notify (CPython's read() returns b"" for it).
                    self.peer_closed = True
                    self.phase = PEER_CLOSED
                    status = st.SEC_I_CONTEXT_EXPIRED
                elif self._loud:
                    self._quiet_down()
            cut = self._header_size
        if cut > length:
            cut = length
        end = cut + len(payload)
        if end > length:
            end = length
        source.type, source.data, source.size = SECBUFFER_STREAM_HEADER, data[:cut], cut
        plain.type, plain.data, plain.size = SECBUFFER_DATA, payload, len(payload)
        tail.type, tail.data, tail.size = SECBUFFER_STREAM_TRAILER, data[end:length], length - end
        if size > length:
            rest.type, rest.data, rest.size = SECBUFFER_EXTRA, b"", size - length
        return status

    def _record_failure(self, error: ssl.SSLError) -> int:
        recorder = self._recorder
        status = failure_status(error, recorder.alert_sent, recorder.alert_received)
        self.phase = FAILED
        self.failure = status
        self._outgoing.read()  # OpenSSL's alert; DecryptMessage has no output for it
        return status

    def _no_application_data(self, content_type: int, length: int) -> tuple[int, bytes]:
        """A record that produced no plaintext: an empty application-data record (MSG-5)
        or a post-handshake handshake message (MSG-8)."""
        if self._loud:
            messages = self._recorder.post_handshake
            handshake = bool(messages)
            message = b"".join(messages)
            messages.clear()
            self._quiet_down()
        else:
            # Without the callback the record itself tells: a TLS 1.2 handshake record,
            # or a TLS 1.3 record longer than an empty one (content type + 16-byte tag;
            # OpenSSL-style peers do not pad).  The message bytes are not available.
            body = length - HEADER_SIZE
            handshake = content_type == HANDSHAKE_CONTENT or (self._tls13 and body > _EMPTY_TLS13_BODY)
            message = b""
        if not handshake:
            return _EMPTY_RECORD, b""
        self.phase = STALLED
        self._stall_message = message
        self._pending_output += self._outgoing.read()
        return st.SEC_I_RENEGOTIATE, message

    def release(self) -> None:
        """DeleteSecurityContext: drop OpenSSL state; later use reports CONTEXT_EXPIRED."""
        with self._lock:
            self.phase = CLOSED
            self._recorder.post_handshake.clear()

    def __repr__(self) -> str:
        role = "server" if self.server else "client"
        return f"<TlsConnection {role} {PHASE_NAMES[self.phase]} {self.protocol or '-'}>"
