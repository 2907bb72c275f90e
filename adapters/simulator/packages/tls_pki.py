"""The test PKI behind the simulated Schannel credentials.

Everything is generated at run time with ``trustme`` (nothing secret is committed) and
cached once per process, because key generation and certificate loading dominate the
cost of a handshake otherwise.

Certificate names (the ``"certificate"`` key of the credential auth data):

* ``server``    -- issued by the test CA for ``localhost`` and ``server.test``;
* ``client``    -- issued by the test CA for ``client@client.test`` (clientAuth usage);
* ``expired``   -- issued by the test CA for the server names, validity ended yesterday;
* ``untrusted`` -- issued for the server names by a second CA nobody trusts.

Every SSLContext the package builds trusts only the test CA.
"""

from __future__ import annotations

import datetime
import ssl
import threading
from dataclasses import dataclass

import trustme
from cryptography import x509

SERVER_NAMES = ("localhost", "server.test")
CLIENT_IDENTITY = "client@client.test"
CERTIFICATE_NAMES = ("server", "client", "expired", "untrusted")

# FILETIME epoch (1601-01-01) to Unix epoch, in seconds; TimeStamp counts 100 ns ticks.
_FILETIME_UNIX_OFFSET = 11_644_473_600
_TICKS_PER_SECOND = 10_000_000


@dataclass(frozen=True)
class Pki:
    """The CA everybody trusts and the leaf certificates credentials may carry."""

    ca: trustme.CA
    untrusted_ca: trustme.CA
    leaves: dict[str, trustme.LeafCert]
    expiry_ticks: dict[str, int]  # certificate name -> notAfter as a TimeStamp (SCH-2)

    def configure_certificate(self, context: ssl.SSLContext, name: str) -> None:
        self.leaves[name].configure_cert(context)

    def configure_trust(self, context: ssl.SSLContext) -> None:
        self.ca.configure_trust(context)

    def ca_pem(self) -> bytes:
        return self.ca.cert_pem.bytes()


def timestamp_ticks(moment: datetime.datetime) -> int:
    """A timezone-aware moment as a Windows TimeStamp (100 ns ticks since 1601)."""
    seconds = int(moment.timestamp()) + _FILETIME_UNIX_OFFSET
    return max(0, seconds) * _TICKS_PER_SECOND


_expiry_cache: dict[bytes, int] = {}


def certificate_expiry(der: bytes) -> int:
    """notAfter of a DER certificate as a TimeStamp; parsed once per certificate."""
    ticks = _expiry_cache.get(der)
    if ticks is None:
        ticks = timestamp_ticks(x509.load_der_x509_certificate(der).not_valid_after_utc)
        if len(_expiry_cache) < 256:  # peers in a test run are few; stay bounded anyway
            _expiry_cache[der] = ticks
    return ticks


def _not_after(leaf: trustme.LeafCert) -> datetime.datetime:
    cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    return cert.not_valid_after_utc


_lock = threading.Lock()
_pki: Pki | None = None


def shared_pki() -> Pki:
    """The process-wide test PKI, generated on first use."""
    global _pki
    with _lock:
        if _pki is None:
            _pki = _generate()
        return _pki


def _generate() -> Pki:
    ca = trustme.CA(organization_name="async-sspi-conformance test CA")
    untrusted = trustme.CA(organization_name="async-sspi-conformance untrusted CA")
    now = datetime.datetime.now(datetime.timezone.utc)
    leaves = {
        "server": ca.issue_cert(*SERVER_NAMES),
        "client": ca.issue_cert(CLIENT_IDENTITY, common_name="client.test"),
        "expired": ca.issue_cert(
            *SERVER_NAMES,
            not_before=now - datetime.timedelta(days=30),
            not_after=now - datetime.timedelta(days=1),
        ),
        "untrusted": untrusted.issue_cert(*SERVER_NAMES),
    }
    expiry = {name: timestamp_ticks(_not_after(leaf)) for name, leaf in leaves.items()}
    return Pki(ca=ca, untrusted_ca=untrusted, leaves=leaves, expiry_ticks=expiry)
