"""Schannel credentials of the simulator: auth data, validation and SSLContexts.

The auth data passed to AcquireCredentialsHandle stands in for ``SCH_CREDENTIALS``
(OQ-15).  It is a plain mapping; every key is optional:

``version``                    4 (``SCHANNEL_CRED``) or 5 (``SCH_CREDENTIALS``, default).
                               Version 4 cannot enable TLS 1.3 (SCH-3).
``certificate``                ``"none"`` (default), ``"server"``, ``"client"``,
                               ``"expired"`` or ``"untrusted"`` (see :mod:`tls_pki`).
``protocols``                  subset of ``["tls1.2", "tls1.3"]`` (default both).
``require_client_certificate`` server: fail the handshake without a client certificate.
``manual_validation``          client: do not validate the server certificate
                               (SCH_CRED_MANUAL_CRED_VALIDATION).
``alpn``                       list of ALPN protocol names offered / accepted.
``ciphers``                    OpenSSL cipher string for TLS 1.2 suites.
``session_tickets``            server: TLS 1.3 NewSessionTickets sent after the
                               handshake, 0..4 (default 1).

Anything else -- an unknown key, a wrong type, an unknown certificate or protocol -- is
``SEC_E_UNKNOWN_CREDENTIALS``.  A credential usable inbound (INBOUND or BOTH) must carry
a certificate, else ``SEC_E_NO_CREDENTIALS`` (CALL-8, SCH-15).

SSLContexts are expensive (certificate loading, trust store), so they are built once per
distinct (settings, role, verification variant) and shared by every credential of the
process.  They are never mutated after construction.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters import status as st
from adapters.constants import SECPKG_CRED_INBOUND, SECPKG_CRED_OUTBOUND
from adapters.simulator.packages import tls_observer
from adapters.simulator.packages.tls_pki import CERTIFICATE_NAMES, shared_pki

SCHANNEL_CRED_VERSION = 4
SCH_CREDENTIALS_VERSION = 5

PROTOCOL_VERSIONS: dict[str, ssl.TLSVersion] = {
    "tls1.2": ssl.TLSVersion.TLSv1_2,
    "tls1.3": ssl.TLSVersion.TLSv1_3,
}
_KEYS = frozenset(
    (
        "version",
        "certificate",
        "protocols",
        "require_client_certificate",
        "manual_validation",
        "alpn",
        "ciphers",
        "session_tickets",
    )
)
MAX_SESSION_TICKETS = 4

# Client verification variants and server client-certificate modes.
VERIFY_NONE = "none"  # manual validation (SCH_CRED_MANUAL_CRED_VALIDATION)
VERIFY_CHAIN = "chain"  # chain only: no target name was given
VERIFY_NAME = "name"  # chain and target name


class CredentialError(ValueError):
    """Auth data that cannot become a credential; ``status`` is the ACH result."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Validated auth data."""

    certificate: str = "none"
    protocols: tuple[str, ...] = ("tls1.2", "tls1.3")
    require_client_certificate: bool = False
    manual_validation: bool = False
    alpn: tuple[str, ...] = ()
    ciphers: str | None = None
    session_tickets: int = 1


def _fail(message: str) -> CredentialError:
    return CredentialError(st.SEC_E_UNKNOWN_CREDENTIALS, message)


def _flag(data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise _fail(f"{key} must be true or false, not {value!r}")
    return value


def _names(data: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise _fail(f"{key} must be a list of names, not {value!r}")
    for item in value:
        if not isinstance(item, str) or not item or len(item) > 255:
            raise _fail(f"{key} entries must be non-empty strings, not {item!r}")
    return tuple(value)


def parse_auth_data(auth_data: Mapping[str, Any] | None) -> TlsSettings:
    """Validate ACH auth data (see the module docstring); CredentialError otherwise."""
    if auth_data is None:
        return TlsSettings()
    if not isinstance(auth_data, Mapping):
        raise _fail(f"auth data must be a mapping, not {type(auth_data).__name__}")
    unknown = sorted(str(key) for key in auth_data if key not in _KEYS)
    if unknown:
        raise _fail(f"unknown auth data keys: {', '.join(unknown)}")
    version = auth_data.get("version", SCH_CREDENTIALS_VERSION)
    if version not in (SCHANNEL_CRED_VERSION, SCH_CREDENTIALS_VERSION) or isinstance(version, bool):
        raise _fail(f"credential version {version!r} is neither SCHANNEL_CRED (4) nor SCH_CREDENTIALS (5)")
    certificate = auth_data.get("certificate", "none")
    if certificate != "none" and certificate not in CERTIFICATE_NAMES:
        raise _fail(f"unknown certificate {certificate!r}")
    protocols = _names(auth_data, "protocols") or ("tls1.2", "tls1.3")
    for name in protocols:
        if name not in PROTOCOL_VERSIONS:
            raise _fail(f"unknown protocol {name!r}")
    if version == SCHANNEL_CRED_VERSION:
        # SCH-3: TLS 1.3 needs SCH_CREDENTIALS; the legacy structure silently lacks it.
        protocols = tuple(p for p in protocols if p != "tls1.3")
        if not protocols:
            raise _fail("SCHANNEL_CRED (version 4) cannot enable TLS 1.3")
    ciphers = auth_data.get("ciphers")
    if ciphers is not None and (not isinstance(ciphers, str) or not ciphers):
        raise _fail(f"ciphers must be an OpenSSL cipher string, not {ciphers!r}")
    tickets = auth_data.get("session_tickets", 1)
    if isinstance(tickets, bool) or not isinstance(tickets, int) or not 0 <= tickets <= MAX_SESSION_TICKETS:
        raise _fail(f"session_tickets must be an integer 0..{MAX_SESSION_TICKETS}, not {tickets!r}")
    return TlsSettings(
        certificate=certificate,
        protocols=tuple(sorted(set(protocols))),
        require_client_certificate=_flag(auth_data, "require_client_certificate"),
        manual_validation=_flag(auth_data, "manual_validation"),
        alpn=_names(auth_data, "alpn") or (),
        ciphers=ciphers,
        session_tickets=tickets,
    )


# ---- SSLContext factory ----------------------------------------------------------------

_contexts: dict[tuple[TlsSettings, bool, object, bool], ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def _build(settings: TlsSettings, server: bool, variant: object, quiet: bool) -> ssl.SSLContext:
    pki = shared_pki()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    versions = sorted(PROTOCOL_VERSIONS[p] for p in settings.protocols)
    context.minimum_version = versions[0]
    context.maximum_version = versions[-1]
    if settings.ciphers is not None:
        context.set_ciphers(settings.ciphers)
    if settings.alpn:
        context.set_alpn_protocols(list(settings.alpn))
    if settings.certificate != "none":
        pki.configure_certificate(context, settings.certificate)
    pki.configure_trust(context)
    # OQ-18: no TLS 1.2 renegotiation in either direction.
    context.options |= ssl.OP_NO_RENEGOTIATION
    if server:
        assert isinstance(variant, ssl.VerifyMode)
        context.verify_mode = variant
        context.num_tickets = settings.session_tickets
        if settings.session_tickets == 0:
            context.options |= ssl.OP_NO_TICKET
    else:
        context.check_hostname = variant == VERIFY_NAME
        context.verify_mode = ssl.CERT_NONE if variant == VERIFY_NONE else ssl.CERT_REQUIRED
    if not quiet:
        tls_observer.install(context)
    return context


def ssl_context(settings: TlsSettings, server: bool, variant: object, quiet: bool = False) -> ssl.SSLContext:
    """The shared SSLContext for these settings (built on first use).

    ``variant`` is a VERIFY_* name for a client, an ``ssl.VerifyMode`` (how the client
    certificate is requested) for a server.  ``quiet`` gives the identical context
    without the message callback: connections switch to it once the handshake is done,
    so records do not pay for a Python call per record header.  CredentialError when
    OpenSSL rejects the settings (e.g. a cipher string matching nothing).
    """
    key = (settings, server, variant, quiet)
    context = _contexts.get(key)
    if context is not None:
        return context
    with _contexts_lock:
        context = _contexts.get(key)
        if context is None:
            try:
                context = _build(settings, server, variant, quiet)
            except (ssl.SSLError, ValueError) as error:
                raise _fail(f"OpenSSL rejected the credential settings: {error}") from None
            _contexts[key] = context
        return context


class TlsCredential:
    """The package state behind a credential handle."""

    __slots__ = ("expiry", "has_certificate", "inbound", "outbound", "settings")

    def __init__(self, settings: TlsSettings, credential_use: int) -> None:
        self.settings = settings
        self.inbound = bool(credential_use & SECPKG_CRED_INBOUND)
        self.outbound = bool(credential_use & SECPKG_CRED_OUTBOUND)
        self.has_certificate = settings.certificate != "none"
        pki = shared_pki()
        self.expiry: int | None = pki.expiry_ticks[settings.certificate] if self.has_certificate else None

    def client_context(self, variant: str, quiet: bool = False) -> ssl.SSLContext:
        return ssl_context(self.settings, False, variant, quiet)

    def server_context(self, client_certificate: ssl.VerifyMode, quiet: bool = False) -> ssl.SSLContext:
        return ssl_context(self.settings, True, client_certificate, quiet)


def acquire(credential_use: int, auth_data: Mapping[str, Any] | None) -> TlsCredential:
    """Build a credential, or raise CredentialError with the ACH status."""
    if credential_use not in (1, 2, 3):
        raise CredentialError(st.SEC_E_UNKNOWN_CREDENTIALS, f"credential use {credential_use!r} is not 1, 2 or 3")
    settings = parse_auth_data(auth_data)
    credential = TlsCredential(settings, credential_use)
    if credential.inbound and not credential.has_certificate:
        raise CredentialError(st.SEC_E_NO_CREDENTIALS, "an inbound (server) credential needs a certificate")
    # Build the default SSLContext now so bad settings fail here, not in the handshake.
    if credential.inbound:
        default_mode = ssl.CERT_REQUIRED if settings.require_client_certificate else ssl.CERT_NONE
        credential.server_context(default_mode)
    if credential.outbound:
        credential.client_context(VERIFY_NONE if settings.manual_validation else VERIFY_NAME)
    return credential
