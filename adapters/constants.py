"""SecBuffer types, request/return flags and other numeric constants (spec Section B.2).

Flag tables are dicts so scenarios can name flags and reports can print them back.
"""

from __future__ import annotations

# SecBuffer types
SECBUFFER_VERSION = 0
SECBUFFER_EMPTY = 0
SECBUFFER_DATA = 1
SECBUFFER_TOKEN = 2
SECBUFFER_PKG_PARAMS = 3
SECBUFFER_MISSING = 4
SECBUFFER_EXTRA = 5
SECBUFFER_STREAM_TRAILER = 6
SECBUFFER_STREAM_HEADER = 7
SECBUFFER_ALERT = 17
SECBUFFER_APPLICATION_PROTOCOLS = 18
SECBUFFER_READONLY = 0x80000000
SECBUFFER_ATTRMASK = 0xF0000000

BUFFER_TYPES: dict[str, int] = {
    "EMPTY": SECBUFFER_EMPTY,
    "DATA": SECBUFFER_DATA,
    "TOKEN": SECBUFFER_TOKEN,
    "PKG_PARAMS": SECBUFFER_PKG_PARAMS,
    "MISSING": SECBUFFER_MISSING,
    "EXTRA": SECBUFFER_EXTRA,
    "STREAM_TRAILER": SECBUFFER_STREAM_TRAILER,
    "STREAM_HEADER": SECBUFFER_STREAM_HEADER,
    "ALERT": SECBUFFER_ALERT,
    "APPLICATION_PROTOCOLS": SECBUFFER_APPLICATION_PROTOCOLS,
}
BUFFER_TYPE_NAMES: dict[int, str] = {v: k for k, v in BUFFER_TYPES.items()}

# Credential use
SECPKG_CRED_INBOUND = 0x1
SECPKG_CRED_OUTBOUND = 0x2
SECPKG_CRED_BOTH = 0x3
CRED_USE: dict[str, int] = {
    "inbound": SECPKG_CRED_INBOUND,
    "outbound": SECPKG_CRED_OUTBOUND,
    "both": SECPKG_CRED_BOTH,
}

SECURITY_NATIVE_DREP = 0x10
SECURITY_NETWORK_DREP = 0x0

# QueryContextAttributes
SECPKG_ATTR_SIZES = 0
SECPKG_ATTR_STREAM_SIZES = 4

# ApplyControlToken payloads (schannel.h)
SCHANNEL_RENEGOTIATE = 0
SCHANNEL_SHUTDOWN = 1
SCHANNEL_ALERT = 2
TLS1_ALERT_WARNING = 1
TLS1_ALERT_FATAL = 2
SECQOP_WRAP_OOB_DATA = 0x40000000

# Package names (OQ-16: both Schannel names are accepted, case-insensitively)
UNISP_NAME = "Microsoft Unified Security Protocol Provider"
SCHANNEL_NAME = "Schannel"

ISC_REQ: dict[str, int] = {
    "DELEGATE": 0x1,
    "MUTUAL_AUTH": 0x2,
    "REPLAY_DETECT": 0x4,
    "SEQUENCE_DETECT": 0x8,
    "CONFIDENTIALITY": 0x10,
    "USE_SESSION_KEY": 0x20,
    "PROMPT_FOR_CREDS": 0x40,
    "USE_SUPPLIED_CREDS": 0x80,
    "ALLOCATE_MEMORY": 0x100,
    "USE_DCE_STYLE": 0x200,
    "DATAGRAM": 0x400,
    "CONNECTION": 0x800,
    "CALL_LEVEL": 0x1000,
    "FRAGMENT_SUPPLIED": 0x2000,
    "EXTENDED_ERROR": 0x4000,
    "STREAM": 0x8000,
    "INTEGRITY": 0x10000,
    "IDENTIFY": 0x20000,
    "NULL_SESSION": 0x40000,
    "MANUAL_CRED_VALIDATION": 0x80000,
    "FRAGMENT_TO_FIT": 0x200000,
    "FORWARD_CREDENTIALS": 0x400000,
    "NO_INTEGRITY": 0x800000,
    "USE_HTTP_STYLE": 0x1000000,
    "UNVERIFIED_TARGET_NAME": 0x20000000,
    "CONFIDENTIALITY_ONLY": 0x40000000,
}
ISC_RET: dict[str, int] = {
    "DELEGATE": 0x1,
    "MUTUAL_AUTH": 0x2,
    "REPLAY_DETECT": 0x4,
    "SEQUENCE_DETECT": 0x8,
    "CONFIDENTIALITY": 0x10,
    "USE_SESSION_KEY": 0x20,
    "USED_COLLECTED_CREDS": 0x40,
    "USED_SUPPLIED_CREDS": 0x80,
    "ALLOCATED_MEMORY": 0x100,
    "USED_DCE_STYLE": 0x200,
    "DATAGRAM": 0x400,
    "CONNECTION": 0x800,
    "INTERMEDIATE_RETURN": 0x1000,
    "CALL_LEVEL": 0x2000,
    "EXTENDED_ERROR": 0x4000,
    "STREAM": 0x8000,
    "INTEGRITY": 0x10000,
    "IDENTIFY": 0x20000,
    "NULL_SESSION": 0x40000,
    "MANUAL_CRED_VALIDATION": 0x80000,
    "FRAGMENT_ONLY": 0x200000,
    "FORWARD_CREDENTIALS": 0x400000,
    "USED_HTTP_STYLE": 0x1000000,
    "NO_ADDITIONAL_TOKEN": 0x2000000,
    "REAUTHENTICATION": 0x8000000,
    "CONFIDENTIALITY_ONLY": 0x40000000,
}
ASC_REQ: dict[str, int] = {
    "DELEGATE": 0x1,
    "MUTUAL_AUTH": 0x2,
    "REPLAY_DETECT": 0x4,
    "SEQUENCE_DETECT": 0x8,
    "CONFIDENTIALITY": 0x10,
    "USE_SESSION_KEY": 0x20,
    "SESSION_TICKET": 0x40,
    "ALLOCATE_MEMORY": 0x100,
    "USE_DCE_STYLE": 0x200,
    "DATAGRAM": 0x400,
    "CONNECTION": 0x800,
    "CALL_LEVEL": 0x1000,
    "FRAGMENT_SUPPLIED": 0x2000,
    "EXTENDED_ERROR": 0x8000,
    "STREAM": 0x10000,
    "INTEGRITY": 0x20000,
    "LICENSING": 0x40000,
    "IDENTIFY": 0x80000,
    "ALLOW_NULL_SESSION": 0x100000,
    "ALLOW_NON_USER_LOGONS": 0x200000,
    "ALLOW_CONTEXT_REPLAY": 0x400000,
    "FRAGMENT_TO_FIT": 0x800000,
    "NO_TOKEN": 0x1000000,
    "PROXY_BINDINGS": 0x4000000,
    "ALLOW_MISSING_BINDINGS": 0x10000000,
}
ASC_RET: dict[str, int] = {
    "DELEGATE": 0x1,
    "MUTUAL_AUTH": 0x2,
    "REPLAY_DETECT": 0x4,
    "SEQUENCE_DETECT": 0x8,
    "CONFIDENTIALITY": 0x10,
    "USE_SESSION_KEY": 0x20,
    "SESSION_TICKET": 0x40,
    "ALLOCATED_MEMORY": 0x100,
    "USED_DCE_STYLE": 0x200,
    "DATAGRAM": 0x400,
    "CONNECTION": 0x800,
    "CALL_LEVEL": 0x2000,
    "THIRD_LEG_FAILED": 0x4000,
    "EXTENDED_ERROR": 0x8000,
    "STREAM": 0x10000,
    "INTEGRITY": 0x20000,
    "LICENSING": 0x40000,
    "IDENTIFY": 0x80000,
    "NULL_SESSION": 0x100000,
    "ALLOW_NON_USER_LOGONS": 0x200000,
    "ALLOW_CONTEXT_REPLAY": 0x400000,
    "FRAGMENT_ONLY": 0x800000,
    "NO_TOKEN": 0x1000000,
    "NO_ADDITIONAL_TOKEN": 0x2000000,
}


def flags_value(names: list[str] | int, table: dict[str, int]) -> int:
    """OR together named flags (KeyError on an unknown name); ints pass through."""
    if isinstance(names, int):
        return names
    value = 0
    for name in names:
        value |= table[name]
    return value


def flag_names(value: int, table: dict[str, int]) -> list[str]:
    """The names of the bits set in ``value`` (unknown bits as hex)."""
    names = [name for name, bit in table.items() if value & bit]
    rest = value & ~sum(table.values())
    if rest:
        names.append(f"0x{rest:X}")
    return names
