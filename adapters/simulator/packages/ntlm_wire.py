"""Structural checks of NTLM messages (MS-NLMP 2.2.1) before pyspnego sees them.

pyspnego decodes messages lazily and trusts the (length, offset) pairs it finds, so a
truncated or forged message can surface as an odd exception deep inside a handshake step,
or not at all.  Checking the frame first lets the package answer every malformed token with
SEC_E_INVALID_TOKEN, and lets it tell "the bytes are broken" apart from "the proof is wrong"
(SEC_E_LOGON_DENIED) on the final ASC leg.

Only the parts of the frame that decide whether the message can be read are checked: the
signature, the message type, the fixed header length (plus the VERSION when the flags
announce one), and that every payload field named by the header lies inside the message.
"""

from __future__ import annotations

import struct

SIGNATURE = b"NTLMSSP\x00"
NEGOTIATE, CHALLENGE, AUTHENTICATE = 1, 2, 3

# NegotiateFlags bits this package reports back as context attributes (MS-NLMP 2.2.2.5).
FLAG_SIGN = 0x00000010
FLAG_SEAL = 0x00000020
# NEGOTIATE_VERSION: an 8-byte VERSION structure follows the fixed header.
FLAG_VERSION = 0x02000000
_VERSION_SIZE = 8

_NAMES = {NEGOTIATE: "NEGOTIATE", CHALLENGE: "CHALLENGE", AUTHENTICATE: "AUTHENTICATE"}

# Per message type: minimum fixed-header length, offset of the NegotiateFlags field, and the
# offsets of its (len:u16, maxlen:u16, offset:u32) payload field descriptors.
_LAYOUT: dict[int, tuple[int, int, tuple[int, ...]]] = {
    NEGOTIATE: (32, 12, (16, 24)),
    CHALLENGE: (48, 20, (12, 40)),
    AUTHENTICATE: (64, 60, (12, 20, 28, 36, 44, 52)),
}
_FIELD = struct.Struct("<HHI")
_U32 = struct.Struct("<I")


class MalformedMessage(ValueError):
    """The token is not a readable NTLM message of the expected type."""


def check(token: bytes, expected: int) -> int:
    """Validate ``token`` as an NTLM message of type ``expected``; return its flags.

    Raises :class:`MalformedMessage` with the reason when it is not one.
    """
    name = _NAMES[expected]
    header, flags_at, fields = _LAYOUT[expected]
    if len(token) < 12 or token[:8] != SIGNATURE:
        raise MalformedMessage(f"{name}: missing NTLMSSP signature")
    (msg_type,) = _U32.unpack_from(token, 8)
    if msg_type != expected:
        raise MalformedMessage(f"{name}: message type {msg_type}, expected {expected}")
    if len(token) < header:
        raise MalformedMessage(f"{name}: {len(token)} bytes, header needs {header}")
    for at in fields:
        length, _maxlen, offset = _FIELD.unpack_from(token, at)
        if length and offset + length > len(token):
            raise MalformedMessage(
                f"{name}: field at header offset {at} spans {offset}+{length}, message has {len(token)} bytes"
            )
    (flags,) = _U32.unpack_from(token, flags_at)
    if flags & FLAG_VERSION and len(token) < header + _VERSION_SIZE:
        raise MalformedMessage(f"{name}: NEGOTIATE_VERSION set but the VERSION is cut off")
    return int(flags)


def flags_of(token: bytes, msg_type: int) -> int:
    """The NegotiateFlags of a message this package produced (already well formed)."""
    (flags,) = _U32.unpack_from(token, _LAYOUT[msg_type][1])
    return int(flags)
