"""TLS record framing, done by the package itself before OpenSSL sees any byte.

Schannel must answer SEC_E_INCOMPLETE_MESSAGE (with a SECBUFFER_MISSING estimate) for a
partial record *without changing state* (SCH-20..22, C.4 #1).  OpenSSL would happily
swallow half a record into its own buffer, so the package hands it complete records only
and keeps the rest in the caller's buffer (reported as EXTRA, SCH-23..25).
"""

from __future__ import annotations

from dataclasses import dataclass

HEADER_SIZE = 5
# Largest TLSCiphertext.length any version allows (TLS 1.2: 2^14 + 2048).
MAX_RECORD_BODY = 16384 + 2048
# Content types: change_cipher_spec, alert, handshake, application_data, heartbeat.
CONTENT_TYPES = frozenset((20, 21, 22, 23, 24))

ALERT_UNEXPECTED_MESSAGE = 10
ALERT_RECORD_OVERFLOW = 22


class FramingError(ValueError):
    """The bytes cannot be a TLS record; ``alert`` is the description to report."""

    def __init__(self, message: str, alert: int, offset: int) -> None:
        super().__init__(f"{message} at byte {offset}")
        self.alert = alert
        self.offset = offset


@dataclass(frozen=True, slots=True)
class Framing:
    """Where the complete records of a byte string end.

    ``ends`` lists the end offset of each complete record in order; ``missing`` is how
    many more bytes the first incomplete record needs (0 when the data ends exactly on a
    record boundary).  When the header itself is cut, the estimate is what the header
    still lacks, as Schannel's MISSING may be an underestimate (SCH-21).
    """

    ends: tuple[int, ...]
    missing: int

    @property
    def complete(self) -> int:
        """Bytes covered by complete records."""
        return self.ends[-1] if self.ends else 0


def record_length(data: bytes | bytearray | memoryview, offset: int) -> int | None:
    """Total size (header included) of the record starting at ``offset``.

    None when fewer than five bytes are available; FramingError when the header is not
    one TLS would send.
    """
    if len(data) - offset < HEADER_SIZE:
        return None
    content_type = data[offset]
    if content_type not in CONTENT_TYPES or data[offset + 1] != 3:
        raise FramingError(
            f"not a TLS record header (type {content_type}, version byte {data[offset + 1]})",
            ALERT_UNEXPECTED_MESSAGE,
            offset,
        )
    body = (data[offset + 3] << 8) | data[offset + 4]
    if body > MAX_RECORD_BODY:
        raise FramingError(f"record length {body} exceeds the TLS maximum", ALERT_RECORD_OVERFLOW, offset)
    return HEADER_SIZE + body


def frame(data: bytes | bytearray | memoryview, limit: int | None = None) -> Framing:
    """Split ``data`` into complete records (at most ``limit`` of them)."""
    ends: list[int] = []
    offset = 0
    size = len(data)
    while offset < size and (limit is None or len(ends) < limit):
        length = record_length(data, offset)
        if length is None:
            return Framing(tuple(ends), HEADER_SIZE - (size - offset))
        if offset + length > size:
            return Framing(tuple(ends), offset + length - size)
        offset += length
        ends.append(offset)
    return Framing(tuple(ends), 0)


HANDSHAKE_CONTENT = 22
CHANGE_CIPHER_SPEC_CONTENT = 20
CERTIFICATE_REQUEST = 13


def scan_handshake(body: bytes | memoryview, carry: int, wanted: int) -> tuple[bool, int]:
    """Look for a plaintext handshake message of type ``wanted`` in a record body.

    ``carry`` is how many bytes of a message begun in an earlier record continue in this
    one.  Returns (found, carry for the next record).
    """
    offset = min(carry, len(body))
    carry -= offset
    while offset + 4 <= len(body):
        if body[offset] == wanted:
            return True, 0
        length = (body[offset + 1] << 16) | (body[offset + 2] << 8) | body[offset + 3]
        end = offset + 4 + length
        if end > len(body):
            return False, end - len(body)
        offset = end
    return False, carry
