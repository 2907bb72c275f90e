"""How OpenSSL failures and TLS alerts become SSPI statuses (spec B.1, alert table).

Three sources, in priority order:

1. a certificate verification failure of our own (OpenSSL's verify code) -- the precise
   Schannel status (UNTRUSTED_ROOT, CERT_EXPIRED, WRONG_PRINCIPAL...);
2. a fatal alert received from the peer -- the B.1 received-alert table;
3. another local failure -- a few OpenSSL reasons with a well-known Schannel twin
   (no shared cipher -> ALGORITHM_MISMATCH, no shared protocol -> UNSUPPORTED_FUNCTION),
   otherwise the status the alert we sent would give the peer.
"""

from __future__ import annotations

import ssl

from adapters import status as st

# B.1 "Received-alert -> status mapping" (alert 120 per OQ-23).
RECEIVED_ALERT_STATUS: dict[int, int] = {
    10: st.SEC_E_ILLEGAL_MESSAGE,
    20: st.SEC_E_MESSAGE_ALTERED,
    21: st.SEC_E_DECRYPT_FAILURE,
    22: st.SEC_E_ILLEGAL_MESSAGE,
    30: st.SEC_E_MESSAGE_ALTERED,
    40: st.SEC_E_ILLEGAL_MESSAGE,
    42: st.SEC_E_CERT_UNKNOWN,
    43: st.SEC_E_CERT_UNKNOWN,
    44: st.CRYPT_E_REVOKED,
    45: st.SEC_E_CERT_EXPIRED,
    46: st.SEC_E_CERT_UNKNOWN,
    47: st.SEC_E_ILLEGAL_MESSAGE,
    48: st.SEC_E_UNTRUSTED_ROOT,
    49: st.SEC_E_LOGON_DENIED,
    50: st.SEC_E_ILLEGAL_MESSAGE,
    51: st.SEC_E_DECRYPT_FAILURE,
    60: st.SEC_E_ILLEGAL_MESSAGE,
    70: st.SEC_E_UNSUPPORTED_FUNCTION,
    71: st.SEC_E_ALGORITHM_MISMATCH,
    80: st.SEC_E_INTERNAL_ERROR,
    90: st.SEC_E_UNFINISHED_CONTEXT_DELETED,
    100: st.SEC_E_ILLEGAL_MESSAGE,
    110: st.SEC_E_ILLEGAL_MESSAGE,
    115: st.SEC_E_ILLEGAL_MESSAGE,
    120: st.SEC_E_APPLICATION_PROTOCOL_MISMATCH,
}

# X509_V_ERR_* codes (x509_vfy.h) -> what Schannel reports for the same chain problem.
_VERIFY_STATUS: dict[int, int] = {
    2: st.SEC_E_UNTRUSTED_ROOT,  # unable to get issuer certificate
    9: st.SEC_E_CERT_EXPIRED,  # not yet valid (Schannel folds both into the time check)
    10: st.SEC_E_CERT_EXPIRED,  # has expired
    18: st.SEC_E_UNTRUSTED_ROOT,  # depth zero self-signed
    19: st.SEC_E_UNTRUSTED_ROOT,  # self-signed in chain
    20: st.SEC_E_UNTRUSTED_ROOT,  # unable to get local issuer
    21: st.SEC_E_UNTRUSTED_ROOT,  # unable to verify leaf signature
    23: st.CRYPT_E_REVOKED,
    26: st.BY_NAME["SEC_E_CERT_WRONG_USAGE"],  # invalid purpose
    62: st.SEC_E_WRONG_PRINCIPAL,  # hostname mismatch
}

# OpenSSL reason codes of local failures with a well-known Schannel status.
_REASON_STATUS: dict[str, int] = {
    "NO_SHARED_CIPHER": st.SEC_E_ALGORITHM_MISMATCH,
    "NO_SHARED_GROUPS": st.SEC_E_ALGORITHM_MISMATCH,
    "NO_SUITABLE_SIGNATURE_ALGORITHM": st.SEC_E_ALGORITHM_MISMATCH,
    "NO_CIPHERS_AVAILABLE": st.SEC_E_ALGORITHM_MISMATCH,
    "UNSUPPORTED_PROTOCOL": st.SEC_E_UNSUPPORTED_FUNCTION,
    "NO_PROTOCOLS_AVAILABLE": st.SEC_E_UNSUPPORTED_FUNCTION,
    "TLSV1_ALERT_PROTOCOL_VERSION": st.SEC_E_UNSUPPORTED_FUNCTION,
    "NO_APPLICATION_PROTOCOL": st.SEC_E_APPLICATION_PROTOCOL_MISMATCH,
    # A server that requires a client certificate and got none: the certificate
    # exchange failed, Schannel's closest status is CERT_UNKNOWN (documented choice).
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": st.SEC_E_CERT_UNKNOWN,
    "DECRYPTION_FAILED_OR_BAD_RECORD_MAC": st.SEC_E_MESSAGE_ALTERED,
    "BAD_RECORD_MAC": st.SEC_E_MESSAGE_ALTERED,
    "DECRYPTION_FAILED": st.SEC_E_DECRYPT_FAILURE,
}


# Alert descriptions by the name OpenSSL puts into its reason codes
# ("SSLV3_ALERT_BAD_RECORD_MAC", "TLSV1_ALERT_UNKNOWN_CA", "TLSV13_ALERT_...").
ALERT_NUMBERS: dict[str, int] = {
    "CLOSE_NOTIFY": 0,
    "UNEXPECTED_MESSAGE": 10,
    "BAD_RECORD_MAC": 20,
    "DECRYPTION_FAILED": 21,
    "RECORD_OVERFLOW": 22,
    "DECOMPRESSION_FAILURE": 30,
    "HANDSHAKE_FAILURE": 40,
    "NO_CERTIFICATE": 41,
    "BAD_CERTIFICATE": 42,
    "UNSUPPORTED_CERTIFICATE": 43,
    "CERTIFICATE_REVOKED": 44,
    "CERTIFICATE_EXPIRED": 45,
    "CERTIFICATE_UNKNOWN": 46,
    "ILLEGAL_PARAMETER": 47,
    "UNKNOWN_CA": 48,
    "ACCESS_DENIED": 49,
    "DECODE_ERROR": 50,
    "DECRYPT_ERROR": 51,
    "EXPORT_RESTRICTION": 60,
    "PROTOCOL_VERSION": 70,
    "INSUFFICIENT_SECURITY": 71,
    "INTERNAL_ERROR": 80,
    "INAPPROPRIATE_FALLBACK": 86,
    "USER_CANCELLED": 90,
    "NO_RENEGOTIATION": 100,
    "MISSING_EXTENSION": 109,
    "UNSUPPORTED_EXTENSION": 110,
    "CERTIFICATE_UNOBTAINABLE": 111,
    "UNRECOGNIZED_NAME": 112,
    "BAD_CERTIFICATE_STATUS_RESPONSE": 113,
    "BAD_CERTIFICATE_HASH_VALUE": 114,
    "UNKNOWN_PSK_IDENTITY": 115,
    "CERTIFICATE_REQUIRED": 116,
    "NO_APPLICATION_PROTOCOL": 120,
}


def alert_in_reason(reason: str | None) -> int | None:
    """The alert number an OpenSSL reason like ``TLSV1_ALERT_UNKNOWN_CA`` names."""
    if not reason or "_ALERT_" not in reason:
        return None
    return ALERT_NUMBERS.get(reason.split("_ALERT_", 1)[1])


def received_alert_status(description: int) -> int:
    """Status for a fatal alert received from the peer (B.1; default ILLEGAL_MESSAGE)."""
    return RECEIVED_ALERT_STATUS.get(description, st.SEC_E_ILLEGAL_MESSAGE)


def failure_status(
    error: ssl.SSLError,
    sent: tuple[int, int] | None,
    received: tuple[int, int] | None,
) -> int:
    """The SSPI status for an OpenSSL handshake or record failure."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return _VERIFY_STATUS.get(error.verify_code, st.SEC_E_CERT_UNKNOWN)
    if received is not None and received[0] == 2:
        return received_alert_status(received[1])
    reason = error.reason or ""
    if received is None:
        # After the handshake the message callback is off (see tls_config.ssl_context);
        # OpenSSL's reason still names a received alert.
        number = alert_in_reason(reason)
        if number is not None:
            return received_alert_status(number)
    mapped = _REASON_STATUS.get(reason)
    if mapped is not None:
        return mapped
    if sent is not None:
        return received_alert_status(sent[1])
    return st.SEC_E_ILLEGAL_MESSAGE
