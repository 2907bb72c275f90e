"""Every status value the contract talks about, with its name, as one table.

The values are the 32-bit numbers from the public headers (winerror.h), never the
numbers printed by mistake on some reference pages (see CALL-29 and OQ-23).  Reports
print statuses through :func:`describe`, e.g. ``SEC_I_ASYNC_CALL_PENDING (0x00090368)``.

``SspiReinitAsyncContext`` returns an NTSTATUS, not a SECURITY_STATUS (REINIT-3); the
NTSTATUS values used for it live in the same table so scenarios can name them.
"""

from __future__ import annotations

# (name, value) pairs in header order.  Aliases come after the canonical name so that
# value -> name lookups print the canonical one.
_TABLE: tuple[tuple[str, int], ...] = (
    ("SEC_E_OK", 0x00000000),
    ("SEC_I_CONTINUE_NEEDED", 0x00090312),
    ("SEC_I_COMPLETE_NEEDED", 0x00090313),
    ("SEC_I_COMPLETE_AND_CONTINUE", 0x00090314),
    ("SEC_I_LOCAL_LOGON", 0x00090315),
    ("SEC_I_GENERIC_EXTENSION_RECEIVED", 0x00090316),
    ("SEC_I_CONTEXT_EXPIRED", 0x00090317),
    ("SEC_I_INCOMPLETE_CREDENTIALS", 0x00090320),
    ("SEC_I_RENEGOTIATE", 0x00090321),
    ("SEC_I_NO_LSA_CONTEXT", 0x00090323),
    ("SEC_I_NO_RENEGOTIATION", 0x00090360),
    ("SEC_I_MESSAGE_FRAGMENT", 0x00090364),
    ("SEC_I_CONTINUE_NEEDED_MESSAGE_OK", 0x00090366),
    ("SEC_I_ASYNC_CALL_PENDING", 0x00090368),
    ("SEC_E_INSUFFICIENT_MEMORY", 0x80090300),
    ("SEC_E_INVALID_HANDLE", 0x80090301),
    ("SEC_E_UNSUPPORTED_FUNCTION", 0x80090302),
    ("SEC_E_TARGET_UNKNOWN", 0x80090303),
    ("SEC_E_INTERNAL_ERROR", 0x80090304),
    ("SEC_E_SECPKG_NOT_FOUND", 0x80090305),
    ("SEC_E_NOT_OWNER", 0x80090306),
    ("SEC_E_CANNOT_INSTALL", 0x80090307),
    ("SEC_E_INVALID_TOKEN", 0x80090308),
    ("SEC_E_CANNOT_PACK", 0x80090309),
    ("SEC_E_QOP_NOT_SUPPORTED", 0x8009030A),
    ("SEC_E_NO_IMPERSONATION", 0x8009030B),
    ("SEC_E_LOGON_DENIED", 0x8009030C),
    ("SEC_E_UNKNOWN_CREDENTIALS", 0x8009030D),
    ("SEC_E_NO_CREDENTIALS", 0x8009030E),
    ("SEC_E_MESSAGE_ALTERED", 0x8009030F),
    ("SEC_E_OUT_OF_SEQUENCE", 0x80090310),
    ("SEC_E_NO_AUTHENTICATING_AUTHORITY", 0x80090311),
    ("SEC_E_BAD_PKGID", 0x80090316),
    ("SEC_E_CONTEXT_EXPIRED", 0x80090317),
    ("SEC_E_INCOMPLETE_MESSAGE", 0x80090318),
    ("SEC_E_INCOMPLETE_CREDENTIALS", 0x80090320),
    ("SEC_E_BUFFER_TOO_SMALL", 0x80090321),
    ("SEC_E_WRONG_PRINCIPAL", 0x80090322),
    ("SEC_E_TIME_SKEW", 0x80090324),
    ("SEC_E_UNTRUSTED_ROOT", 0x80090325),
    ("SEC_E_ILLEGAL_MESSAGE", 0x80090326),
    ("SEC_E_CERT_UNKNOWN", 0x80090327),
    ("SEC_E_CERT_EXPIRED", 0x80090328),
    ("SEC_E_ENCRYPT_FAILURE", 0x80090329),
    ("SEC_E_DECRYPT_FAILURE", 0x80090330),
    ("SEC_E_ALGORITHM_MISMATCH", 0x80090331),
    ("SEC_E_SECURITY_QOS_FAILED", 0x80090332),
    ("SEC_E_UNFINISHED_CONTEXT_DELETED", 0x80090333),
    ("SEC_E_NO_TGT_REPLY", 0x80090334),
    ("SEC_E_WRONG_CREDENTIAL_HANDLE", 0x80090336),
    ("SEC_E_CRYPTO_SYSTEM_INVALID", 0x80090337),
    ("SEC_E_CERT_WRONG_USAGE", 0x80090349),
    ("SEC_E_INVALID_PARAMETER", 0x8009035D),
    ("SEC_E_DELEGATION_POLICY", 0x8009035E),
    ("SEC_E_POLICY_NLTM_ONLY", 0x8009035F),
    ("SEC_E_NO_CONTEXT", 0x80090361),
    ("SEC_E_MUTUAL_AUTH_FAILED", 0x80090363),
    ("SEC_E_APPLICATION_PROTOCOL_MISMATCH", 0x80090367),
    ("SEC_E_INVALID_UPN_NAME", 0x80090369),
    ("SEC_E_EXT_BUFFER_TOO_SMALL", 0x8009036A),
    ("SEC_E_INSUFFICIENT_BUFFERS", 0x8009036B),
    ("CRYPT_E_REVOKED", 0x80092010),
    ("SCARD_E_INVALID_HANDLE", 0x80100003),
    # NTSTATUS values (SspiReinitAsyncContext, OQ-8).  STATUS_SUCCESS shares 0 with
    # SEC_E_OK, so it is an alias and never printed for a value.
    ("STATUS_LOGON_FAILURE", 0xC000006D),
    ("STATUS_INVALID_PARAMETER", 0xC000000D),
    ("STATUS_INVALID_DEVICE_STATE", 0xC0000184),
    ("STATUS_SUCCESS", 0x00000000),
    ("SEC_E_NOT_SUPPORTED", 0x80090302),
    ("SEC_E_NO_SPM", 0x80090304),
)

BY_NAME: dict[str, int] = {}
BY_VALUE: dict[int, str] = {}
for _name, _value in _TABLE:
    BY_NAME[_name] = _value
    BY_VALUE.setdefault(_value, _name)
    globals()[_name] = _value

SEC_E_OK: int
SEC_I_CONTINUE_NEEDED: int
SEC_I_COMPLETE_NEEDED: int
SEC_I_COMPLETE_AND_CONTINUE: int
SEC_I_CONTEXT_EXPIRED: int
SEC_I_INCOMPLETE_CREDENTIALS: int
SEC_I_RENEGOTIATE: int
SEC_I_ASYNC_CALL_PENDING: int
SEC_I_CONTINUE_NEEDED_MESSAGE_OK: int
SEC_E_INSUFFICIENT_MEMORY: int
SEC_E_INVALID_HANDLE: int
SEC_E_UNSUPPORTED_FUNCTION: int
SEC_E_TARGET_UNKNOWN: int
SEC_E_INTERNAL_ERROR: int
SEC_E_SECPKG_NOT_FOUND: int
SEC_E_NOT_OWNER: int
SEC_E_INVALID_TOKEN: int
SEC_E_QOP_NOT_SUPPORTED: int
SEC_E_LOGON_DENIED: int
SEC_E_UNKNOWN_CREDENTIALS: int
SEC_E_NO_CREDENTIALS: int
SEC_E_MESSAGE_ALTERED: int
SEC_E_OUT_OF_SEQUENCE: int
SEC_E_NO_AUTHENTICATING_AUTHORITY: int
SEC_E_CONTEXT_EXPIRED: int
SEC_E_INCOMPLETE_MESSAGE: int
SEC_E_BUFFER_TOO_SMALL: int
SEC_E_WRONG_PRINCIPAL: int
SEC_E_UNTRUSTED_ROOT: int
SEC_E_ILLEGAL_MESSAGE: int
SEC_E_CERT_UNKNOWN: int
SEC_E_CERT_EXPIRED: int
SEC_E_DECRYPT_FAILURE: int
SEC_E_ALGORITHM_MISMATCH: int
SEC_E_UNFINISHED_CONTEXT_DELETED: int
SEC_E_CRYPTO_SYSTEM_INVALID: int
SEC_E_INVALID_PARAMETER: int
SEC_E_APPLICATION_PROTOCOL_MISMATCH: int
CRYPT_E_REVOKED: int
STATUS_SUCCESS: int
STATUS_INVALID_PARAMETER: int
STATUS_INVALID_DEVICE_STATE: int


def name_of(value: int) -> str:
    """The canonical symbol for a status value, or its hex form when unknown."""
    value &= 0xFFFFFFFF
    return BY_VALUE.get(value, f"0x{value:08X}")


def describe(value: int) -> str:
    """``NAME (0xXXXXXXXX)``, the form every report prints."""
    value &= 0xFFFFFFFF
    name = BY_VALUE.get(value)
    return f"{name} (0x{value:08X})" if name else f"0x{value:08X}"


def parse(text: str | int) -> int:
    """A status from a name or a number (int, ``0x...`` string); KeyError when unknown."""
    if isinstance(text, int):
        return text & 0xFFFFFFFF
    stripped = text.strip()
    if stripped in BY_NAME:
        return BY_NAME[stripped]
    if stripped.lower().startswith("0x"):
        try:
            return int(stripped, 16) & 0xFFFFFFFF
        except ValueError:
            pass
    raise KeyError(stripped)


def failed(value: int) -> bool:
    """FAILED(): the severity bit is set (true for SEC_E_INCOMPLETE_MESSAGE, CALL-30)."""
    return bool(value & 0x80000000)


def nt_success(value: int) -> bool:
    """NT_SUCCESS(): severity is success or informational (REINIT-3, OQ-8)."""
    return (value & 0xC0000000) in (0x00000000, 0x40000000)
