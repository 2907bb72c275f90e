"""What OpenSSL read and wrote, message by message, for Schannel's extra signals.

Python's ``ssl`` does not report a CertificateRequest (needed for
SEC_I_INCOMPLETE_CREDENTIALS, SCH-12), a post-handshake handshake message such as a
TLS 1.3 NewSessionTicket (SEC_I_RENEGOTIATE, MSG-8) or the alert it sent (the
SECBUFFER_ALERT output, SCH-9/SCH-29).  OpenSSL's message callback does, including the
encrypted TLS 1.3 handshake messages.  CPython exposes it as the (private, but present
since 3.8) ``_msg_callback`` attribute of ``_ssl._SSLContext``; we install the raw C-level
callback, bypassing the enum-converting wrapper of ``ssl.SSLContext`` because it runs for
every record header.

The callback receives the ``SSLObject`` owning the connection; our subclass carries a
:class:`Recorder` there.
"""

from __future__ import annotations

import _ssl
import ssl
from typing import Any

_CONTENT_ALERT = 21
_CONTENT_HANDSHAKE = 22
_CERTIFICATE_REQUEST = 13

_RAW_MSG_CALLBACK: Any = getattr(_ssl._SSLContext, "_msg_callback", None)
if _RAW_MSG_CALLBACK is None:  # pragma: no cover - every CPython >= 3.8 has it
    raise ImportError("this Python's ssl module has no message callback")


class Recorder:
    """Events of one connection, filled by :func:`observe` while OpenSSL runs."""

    __slots__ = ("alert_received", "alert_sent", "certificate_request", "established", "post_handshake")

    def __init__(self) -> None:
        self.established = False
        self.certificate_request = False
        self.post_handshake: list[bytes] = []
        self.alert_sent: tuple[int, int] | None = None
        self.alert_received: tuple[int, int] | None = None


class ObservedSSLObject(ssl.SSLObject):
    """An SSLObject that carries its :class:`Recorder` for the message callback."""

    recorder: Recorder | None = None


def observe(conn: Any, direction: str, version: int, content_type: int, msg_type: int, data: bytes) -> None:
    """OpenSSL's message callback.  Must never raise (the error would surface later)."""
    recorder = getattr(conn, "recorder", None)
    if recorder is None:
        return
    if content_type == _CONTENT_HANDSHAKE:
        if direction != "read":
            return
        if recorder.established:
            recorder.post_handshake.append(bytes(data))
        elif msg_type == _CERTIFICATE_REQUEST:
            recorder.certificate_request = True
    elif content_type == _CONTENT_ALERT and len(data) >= 2:
        alert = (data[0], data[1])
        if direction == "read":
            recorder.alert_received = alert
        else:
            recorder.alert_sent = alert


def install(context: ssl.SSLContext) -> None:
    """Make every connection made from ``context`` report to its recorder."""
    context.sslobject_class = ObservedSSLObject
    _RAW_MSG_CALLBACK.__set__(context, observe)
