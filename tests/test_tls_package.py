"""The simulator's Schannel package driven directly (synchronously, both sides in-process).

Each test names the contract rules it checks (Section C: SCH-*, MSG-*, SHUT-*, C.4, OQ-*).
"""

from __future__ import annotations

from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.strategies import binary as st_bytes
from hypothesis.strategies import integers

from adapters import status as st
from adapters.api import SecBuffer, StreamSizes
from adapters.constants import (
    ASC_REQ,
    ASC_RET,
    ISC_REQ,
    ISC_RET,
    SECBUFFER_ALERT,
    SECBUFFER_DATA,
    SECBUFFER_EMPTY,
    SECBUFFER_EXTRA,
    SECBUFFER_MISSING,
    SECBUFFER_STREAM_HEADER,
    SECBUFFER_STREAM_TRAILER,
    SECBUFFER_TOKEN,
    SECPKG_ATTR_STREAM_SIZES,
)
from adapters.simulator.packages.base import NEVER, PackageProfile
from adapters.simulator.packages.tls import TlsPackage
from adapters.simulator.packages.tls_loopback import (
    DEFAULT_ASC_REQ,
    DEFAULT_ISC_REQ,
    Endpoint,
    LegResult,
    continue_handshake,
    handshake,
)
from adapters.simulator.packages.tls_pki import shared_pki

VERSIONS = ("tls1.2", "tls1.3")
SHUTDOWN_TOKEN = (1).to_bytes(4, "little")


@pytest.fixture(scope="module")
def user() -> TlsPackage:
    return TlsPackage(PackageProfile(kernel_mode=False))


@pytest.fixture(scope="module")
def kernel() -> TlsPackage:
    return TlsPackage(PackageProfile(kernel_mode=True))


def cred(pkg: TlsPackage, use: int, **auth: object) -> object:
    result = pkg.acquire(None, use, auth)
    assert result.status == st.SEC_E_OK, st.describe(result.status)
    return result.credential


def pair(
    pkg: TlsPackage,
    version: str,
    client_auth: dict[str, object] | None = None,
    server_auth: dict[str, object] | None = None,
    target: str | None = "localhost",
    isc_req: int | None = None,
    asc_req: int | None = None,
) -> tuple[Endpoint, Endpoint]:
    c_auth = {"protocols": [version], **(client_auth or {})}
    s_auth = {"protocols": [version], "certificate": "server", **(server_auth or {})}
    client = Endpoint(pkg, cred(pkg, 2, **c_auth), server=False, target=target, context_req=isc_req)
    server = Endpoint(pkg, cred(pkg, 1, **s_auth), server=True, context_req=asc_req)
    return client, server


def established(pkg: TlsPackage, version: str, **kw: object) -> tuple[Endpoint, Endpoint, bytes]:
    client, server = pair(pkg, version, **kw)  # type: ignore[arg-type]
    to_client, to_server = handshake(client, server)
    assert to_server == b""
    return client, server, to_client


def settle(client: Endpoint, pending: bytes) -> None:
    """Feed the server's post-handshake bytes (TLS 1.3 tickets) through the client."""
    plain, rest, _status = client.receive(pending)
    assert plain == b"" and rest == b""


def expected_missing(data: bytes) -> int:
    """Bytes the first incomplete record of ``data`` still lacks (test's own framing)."""
    offset = 0
    while True:
        if len(data) - offset < 5:
            return 5 - (len(data) - offset)
        end = offset + 5 + int.from_bytes(data[offset + 3 : offset + 5], "big")
        if end > len(data):
            return end - len(data)
        offset = end


# ---- identity and credentials --------------------------------------------------------------


def test_names_and_features(user: TlsPackage) -> None:
    assert user.names == ("Microsoft Unified Security Protocol Provider", "Schannel")  # OQ-16
    assert user.features == {"client", "server", "stream", "tls1.2", "tls1.3"}


@pytest.mark.parametrize(
    ("use", "auth", "expected"),
    [
        (1, {}, st.SEC_E_NO_CREDENTIALS),  # CALL-8: a server needs a certificate
        (3, {"certificate": "none"}, st.SEC_E_NO_CREDENTIALS),
        (2, {"colour": "blue"}, st.SEC_E_UNKNOWN_CREDENTIALS),
        (2, {"certificate": "stolen"}, st.SEC_E_UNKNOWN_CREDENTIALS),
        (2, {"protocols": ["ssl3"]}, st.SEC_E_UNKNOWN_CREDENTIALS),
        (2, {"protocols": "tls1.2"}, st.SEC_E_UNKNOWN_CREDENTIALS),
        (2, {"version": 3}, st.SEC_E_UNKNOWN_CREDENTIALS),  # OQ-15
        (2, {"version": 4, "protocols": ["tls1.3"]}, st.SEC_E_UNKNOWN_CREDENTIALS),  # SCH-3
        (2, {"ciphers": "NO-SUCH-CIPHER"}, st.SEC_E_UNKNOWN_CREDENTIALS),
        (2, {"manual_validation": "yes"}, st.SEC_E_UNKNOWN_CREDENTIALS),
        (2, {"session_tickets": 99}, st.SEC_E_UNKNOWN_CREDENTIALS),
        (7, {}, st.SEC_E_UNKNOWN_CREDENTIALS),
    ],
)
def test_bad_credentials(user: TlsPackage, use: int, auth: dict[str, object], expected: int) -> None:
    result = user.acquire(None, use, auth)
    assert result.status == expected, st.describe(result.status)
    assert result.credential is None


def test_credential_expiry_is_certificate_expiry(user: TlsPackage) -> None:
    # SCH-2: the certificate's notAfter, the maximum time without a certificate.
    assert user.acquire(None, 2, None).expiry == NEVER
    server = user.acquire(None, 1, {"certificate": "server"})
    assert server.expiry == shared_pki().expiry_ticks["server"] < NEVER
    expired = user.acquire(None, 1, {"certificate": "expired"})
    assert expired.status == st.SEC_E_OK and expired.expiry is not None and expired.expiry < server.expiry


def test_credentials_of_the_wrong_direction(user: TlsPackage) -> None:
    out = [SecBuffer(SECBUFFER_TOKEN), SecBuffer(SECBUFFER_ALERT)]
    inbound = cred(user, 1, certificate="server")
    outbound = cred(user, 2)
    # SCH-4: ISC needs OUTBOUND; SCH-15: ASC needs INBOUND.  No handle either way (OQ-20).
    r = user.initialize(inbound, None, "localhost", DEFAULT_ISC_REQ, None, out)
    assert (r.status, r.context) == (st.SEC_E_NO_CREDENTIALS, None)
    r = user.accept(outbound, None, [SecBuffer(SECBUFFER_TOKEN, b"\x16\x03\x01"), SecBuffer(0)], 0, out)
    assert (r.status, r.context) == (st.SEC_E_NO_CREDENTIALS, None)


# ---- handshakes -------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_full_handshake_and_round_trip(user: TlsPackage, version: str) -> None:
    client, server = pair(user, version)
    to_client, _ = handshake(client, server)
    c, s = client.context, server.context
    assert c.protocol == s.protocol == {"tls1.2": "TLSv1.2", "tls1.3": "TLSv1.3"}[version]
    # C.2/C.3 status sequences.
    if version == "tls1.3":
        assert client.history == [st.SEC_I_CONTINUE_NEEDED, st.SEC_E_OK]
        assert to_client, "the server's final ASC token carries the NewSessionTicket"
    else:
        assert client.history == [st.SEC_I_CONTINUE_NEEDED] * 2 + [st.SEC_E_OK]
        assert to_client == b""
    assert server.history == [st.SEC_I_CONTINUE_NEEDED, st.SEC_E_OK]
    settle(client, to_client)
    for message in (b"x", b"hello world" * 100, bytes(range(256)) * 64):
        plain, rest, status = server.receive(client.seal(message))
        assert (plain, rest, status) == (message, b"", st.SEC_E_OK)
        plain, rest, status = client.receive(server.seal(message[::-1]))
        assert (plain, rest, status) == (message[::-1], b"", st.SEC_E_OK)


@pytest.mark.parametrize("version", VERSIONS)
def test_final_legs_report_attributes_and_expiry(user: TlsPackage, version: str) -> None:
    client, server = pair(user, version, isc_req=DEFAULT_ISC_REQ | ISC_REQ["MUTUAL_AUTH"])
    first = client.leg(None)
    # SCH-14: only non-security bits before the final leg; SCH-17: no expiry yet.
    assert first.attributes & ISC_RET["ALLOCATED_MEMORY"] and not first.attributes & ISC_RET["CONFIDENTIALITY"]
    assert first.expiry is None
    leg = server.leg(first.token)
    assert leg.status == st.SEC_I_CONTINUE_NEEDED and leg.expiry is None
    assert not leg.attributes & ASC_RET["CONFIDENTIALITY"]
    data = leg.token
    final_client = final_server = None
    while final_client is None or final_server is None:
        if final_client is None:
            c_leg = client.leg(data)
            data = c_leg.token
            if c_leg.status == st.SEC_E_OK:
                final_client = c_leg
            if not data:
                continue
        s_leg = server.leg(data)
        data = s_leg.token
        if s_leg.status == st.SEC_E_OK:
            final_server = s_leg
    want_isc = ISC_RET["CONFIDENTIALITY"] | ISC_RET["REPLAY_DETECT"] | ISC_RET["SEQUENCE_DETECT"]
    want_isc |= ISC_RET["STREAM"] | ISC_RET["ALLOCATED_MEMORY"] | ISC_RET["MUTUAL_AUTH"]
    assert final_client.attributes & want_isc == want_isc
    assert final_server.attributes & ASC_RET["STREAM"] and final_server.attributes & ASC_RET["CONFIDENTIALITY"]
    assert not final_server.attributes & ASC_RET["MUTUAL_AUTH"]  # no client certificate (SCH-18)
    assert final_server.expiry == shared_pki().expiry_ticks["server"]  # SCH-2
    assert final_client.expiry == shared_pki().expiry_ticks["server"]
    if version == "tls1.3":
        assert final_client.token, "SCH-10: SEC_E_OK with a token that must still be sent"


@pytest.mark.parametrize("version", VERSIONS)
def test_byte_by_byte_delivery(user: TlsPackage, version: str) -> None:
    """SCH-20..22, C.4 #1: every split inside a record is INCOMPLETE_MESSAGE with an exact
    MISSING, emits nothing and changes nothing; whole records are consumed."""
    client, server = pair(user, version)
    flight = client.leg(None).token
    sides = [server, client]
    turn = 0
    done = set()
    while flight:
        side = sides[turn % 2]
        buffered = b""
        produced = b""
        before = side.context
        for byte in flight:
            buffered += bytes([byte])
            leg = side.leg(buffered)
            if leg.status == st.SEC_E_INCOMPLETE_MESSAGE:
                assert leg.missing == expected_missing(buffered)
                assert (leg.token, leg.alert, leg.extra) == (b"", b"", 0)
                assert side.context is before  # OQ-20: no handle from an incomplete first leg
                continue
            assert leg.status in (st.SEC_I_CONTINUE_NEEDED, st.SEC_E_OK), st.describe(leg.status)
            assert leg.extra == 0 and expected_missing(buffered) == 5  # ended on a record boundary
            produced += leg.token
            before = side.context
            buffered = b""
            if leg.status == st.SEC_E_OK:
                done.add(side.server)
        assert buffered == b""
        flight = produced
        turn += 1
        if len(done) == 2:
            break
    assert done == {True, False}
    last_was_server = (turn - 1) % 2 == 0
    assert bool(flight) == (version == "tls1.3" and last_was_server)  # the TLS 1.3 ticket
    settle(client, flight)
    plain, _, status = server.receive(client.seal(b"after a slow handshake"))
    assert (plain, status) == (b"after a slow handshake", st.SEC_E_OK)
    assert client.receive(server.seal(b"and back"))[0] == b"and back"


def test_coalesced_input_reports_extra_tls13(user: TlsPackage) -> None:
    """SCH-23/24: the server's last leg holds the client Finished plus application data."""
    client, server = pair(user, "tls1.3")
    hello = client.leg(None).token
    server_flight = server.leg(hello).token
    finished = client.leg(server_flight)
    assert finished.status == st.SEC_E_OK
    early = client.seal(b"data right behind Finished")
    leg = server.leg(finished.token + early)
    assert leg.status == st.SEC_E_OK and leg.extra == len(early)
    plain, rest, status = server.receive(early)
    assert (plain, rest, status) == (b"data right behind Finished", b"", st.SEC_E_OK)


def test_coalesced_input_reports_extra_tls12(user: TlsPackage) -> None:
    client, server = pair(user, "tls1.2")
    token = server.leg(client.leg(None).token).token
    token = client.leg(token).token
    last = server.leg(token)
    assert last.status == st.SEC_E_OK
    data = server.seal(b"x" * 3000)
    leg = client.leg(last.token + data)
    assert leg.status == st.SEC_E_OK and leg.extra == len(data) and leg.token == b""
    assert client.receive(data)[0] == b"x" * 3000


def test_partial_tail_after_complete_records_is_extra(user: TlsPackage) -> None:
    client, server = pair(user, "tls1.3")
    hello = client.leg(None).token
    leg = server.leg(hello + hello[:3])
    assert leg.status == st.SEC_I_CONTINUE_NEEDED and leg.extra == 3 and leg.token
    again = server.leg(hello[:3])
    assert again.status == st.SEC_E_INCOMPLETE_MESSAGE and again.missing == 2


def test_garbage_first_leg_creates_no_handle(user: TlsPackage) -> None:
    server = Endpoint(user, cred(user, 1, certificate="server"), server=True)
    leg = server.leg(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert leg.status == st.SEC_E_ILLEGAL_MESSAGE and server.context is None  # OQ-20
    assert leg.alert == bytes([2, 10])  # fatal unexpected_message


# ---- alerts and failures ------------------------------------------------------------------


def run_until_failure(client: Endpoint, server: Endpoint) -> tuple[Endpoint, LegResult, Endpoint, LegResult | None]:
    """Drive legs until one fails; then give the failing side's token to the other side."""
    token = client.leg(None).token
    side, other = server, client
    for _ in range(8):
        leg = side.leg(token)
        if leg.status == st.SEC_I_INCOMPLETE_CREDENTIALS:
            leg = side.leg(token, credential=None)  # SCH-12: go on without a certificate
        if st.failed(leg.status):
            reply = other.leg(leg.token) if leg.token else None
            return side, leg, other, reply
        token = leg.token
        side, other = other, side
    raise AssertionError("no failure")


class AlertCase(NamedTuple):
    name: str
    version: str
    client_auth: dict[str, object]
    server_auth: dict[str, object]
    target: str
    failing: str  # the side that detects the problem and sends the alert
    status: int  # its status
    alert: int  # the alert description it reports in SECBUFFER_ALERT
    peer_status: int | None  # what the other side makes of the alert record (B.1)


ALERT_CASES = [
    AlertCase("untrusted-server", "tls1.3", {}, {"certificate": "untrusted"}, "localhost", "client",
              st.SEC_E_UNTRUSTED_ROOT, 48, st.SEC_E_UNTRUSTED_ROOT),
    AlertCase("untrusted-server", "tls1.2", {}, {"certificate": "untrusted"}, "localhost", "client",
              st.SEC_E_UNTRUSTED_ROOT, 48, st.SEC_E_UNTRUSTED_ROOT),
    AlertCase("expired-server", "tls1.3", {}, {"certificate": "expired"}, "localhost", "client",
              st.SEC_E_CERT_EXPIRED, 45, st.SEC_E_CERT_EXPIRED),
    AlertCase("wrong-name", "tls1.2", {}, {}, "elsewhere.test", "client",
              st.SEC_E_WRONG_PRINCIPAL, 42, st.SEC_E_CERT_UNKNOWN),
    AlertCase("wrong-name", "tls1.3", {}, {}, "elsewhere.test", "client",
              st.SEC_E_WRONG_PRINCIPAL, 42, st.SEC_E_CERT_UNKNOWN),
    AlertCase("untrusted-client", "tls1.3", {"certificate": "untrusted"}, {"require_client_certificate": True},
              "localhost", "server", st.SEC_E_UNTRUSTED_ROOT, 48, None),
    AlertCase("no-client-certificate", "tls1.2", {}, {"require_client_certificate": True}, "localhost", "server",
              st.SEC_E_CERT_UNKNOWN, 40, None),
    AlertCase("no-shared-cipher", "tls1.2", {"ciphers": "ECDHE-ECDSA-CHACHA20-POLY1305"},
              {"ciphers": "ECDHE-ECDSA-AES128-GCM-SHA256"}, "localhost", "server",
              st.SEC_E_ALGORITHM_MISMATCH, 40, st.SEC_E_ILLEGAL_MESSAGE),
]  # fmt: skip


@pytest.mark.parametrize("case", ALERT_CASES, ids=lambda c: f"{c.name}-{c.version}")
def test_alerts(user: TlsPackage, case: AlertCase) -> None:
    client, server = pair(user, case.version, case.client_auth, case.server_auth, target=case.target)
    side, leg, _other, reply = run_until_failure(client, server)
    assert ("server" if side.server else "client") == case.failing
    assert leg.status == case.status, st.describe(leg.status)
    assert leg.alert == bytes([2, case.alert])  # SCH-9/SCH-29
    assert leg.token, "SCH-27: EXTENDED_ERROR puts the alert record into the output"
    if case.peer_status is not None:
        assert reply is not None and reply.status == case.peer_status, reply and st.describe(reply.status)
        assert reply.alert == b""  # C.4 #3: a received alert is not ours to report
    status = case.status
    if side.context is None:
        assert side.history == [status]  # OQ-20: a failed first leg made no handle
    else:
        # SCH-26: the failed context stays failed and never had record sizes (MSG-1).
        assert user.query_attributes(side.context, SECPKG_ATTR_STREAM_SIZES)[0] == st.SEC_E_INVALID_HANDLE
        assert side.leg(b"\x16\x03\x03\x00\x01\x00").status == status


def test_no_shared_protocol(user: TlsPackage) -> None:
    client = Endpoint(user, cred(user, 2, protocols=["tls1.3"]), server=False, target="localhost")
    server = Endpoint(user, cred(user, 1, certificate="server", protocols=["tls1.2"]), server=True)
    leg = server.leg(client.leg(None).token)
    assert leg.status == st.SEC_E_UNSUPPORTED_FUNCTION and leg.alert == bytes([2, 70])
    assert server.context is None  # OQ-20: failed first ASC
    reply = client.leg(leg.token)
    assert reply.status == st.SEC_E_UNSUPPORTED_FUNCTION  # B.1: alert 70


def test_alert_token_needs_extended_error(user: TlsPackage) -> None:
    client, server = pair(
        user, "tls1.3", server_auth={"certificate": "untrusted"}, isc_req=DEFAULT_ISC_REQ & ~ISC_REQ["EXTENDED_ERROR"]
    )
    leg = client.leg(server.leg(client.leg(None).token).token)
    assert leg.status == st.SEC_E_UNTRUSTED_ROOT
    assert leg.alert == bytes([2, 48]) and leg.token == b""


def test_manual_validation_accepts_untrusted_server(user: TlsPackage) -> None:
    client, server = pair(
        user, "tls1.3", client_auth={"manual_validation": True}, server_auth={"certificate": "untrusted"}
    )
    handshake(client, server)
    assert client.context.phase == 1
    isc = client.history
    assert isc[-1] == st.SEC_E_OK


# ---- client certificates ------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_incomplete_credentials_then_certificate(user: TlsPackage, version: str) -> None:
    """SCH-12: CertificateRequest + credential without a certificate pauses the leg; the
    retry with the same input and a certificate credential completes mutual auth."""
    client, server = pair(user, version, server_auth={"require_client_certificate": True})
    server_flight = server.leg(client.leg(None).token).token
    paused = client.leg(server_flight)
    assert paused.status == st.SEC_I_INCOMPLETE_CREDENTIALS
    assert (paused.token, paused.alert, paused.extra) == (b"", b"", 0)
    with_cert = cred(user, 2, protocols=[version], certificate="client")
    resumed = client.leg(server_flight, credential=with_cert)
    assert resumed.status in (st.SEC_E_OK, st.SEC_I_CONTINUE_NEEDED)
    to_client, _ = continue_handshake(client, server, resumed.token, client_done=resumed.status == st.SEC_E_OK)
    assert server.history[-1] == st.SEC_E_OK
    assert server.context.peer_certificate_verified()
    settle(client, to_client)
    assert server.receive(client.seal(b"mutual"))[0] == b"mutual"


@pytest.mark.parametrize("version", VERSIONS)
def test_incomplete_credentials_then_none(user: TlsPackage, version: str) -> None:
    """Retrying without a certificate continues anonymously; the server asked with
    ASC_REQ_MUTUAL_AUTH, succeeds, and does not report ASC_RET_MUTUAL_AUTH (SCH-18)."""
    client, server = pair(user, version, asc_req=DEFAULT_ASC_REQ | ASC_REQ["MUTUAL_AUTH"])
    server_flight = server.leg(client.leg(None).token).token
    assert client.leg(server_flight).status == st.SEC_I_INCOMPLETE_CREDENTIALS
    resumed = client.leg(server_flight, credential=None)
    assert resumed.status in (st.SEC_E_OK, st.SEC_I_CONTINUE_NEEDED)
    leg = server.leg(resumed.token)
    while leg.status == st.SEC_I_CONTINUE_NEEDED:
        leg = server.leg(client.leg(leg.token).token)
    assert leg.status == st.SEC_E_OK
    assert not leg.attributes & ASC_RET["MUTUAL_AUTH"]


@pytest.mark.parametrize("version", VERSIONS)
def test_mutual_auth_with_client_certificate(user: TlsPackage, version: str) -> None:
    client, server = pair(
        user, version, client_auth={"certificate": "client"}, asc_req=DEFAULT_ASC_REQ | ASC_REQ["MUTUAL_AUTH"]
    )
    handshake(client, server)
    assert server.history[-1] == st.SEC_E_OK
    assert server.context.peer_certificate_verified()  # ASC_RET_MUTUAL_AUTH on the final leg


# ---- records -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_stream_sizes(user: TlsPackage, version: str) -> None:
    client, _server, _ = established(user, version)
    status, sizes = user.query_attributes(client.context, SECPKG_ATTR_STREAM_SIZES)
    assert status == st.SEC_E_OK and isinstance(sizes, StreamSizes)
    assert sizes.maximum_message == 16384 and sizes.buffers == 4
    assert (sizes.header, sizes.trailer) == ((5, 17) if version == "tls1.3" else (13, 16))


def test_encrypt_buffer_rules(user: TlsPackage) -> None:
    client, server, pending = established(user, "tls1.3")
    settle(client, pending)
    ctx = client.context

    def bufs(header: int, data: bytes, trailer: int) -> list[SecBuffer]:
        return [
            SecBuffer(SECBUFFER_STREAM_HEADER, size=header),
            SecBuffer(SECBUFFER_DATA, data),
            SecBuffer(SECBUFFER_STREAM_TRAILER, size=trailer),
            SecBuffer(SECBUFFER_EMPTY),
        ]

    assert user.encrypt(ctx, 0, bufs(4, b"abc", 17)) == st.SEC_E_BUFFER_TOO_SMALL  # MSG-3
    assert user.encrypt(ctx, 0, bufs(5, b"abc", 16)) == st.SEC_E_BUFFER_TOO_SMALL
    assert user.encrypt(ctx, 0, [SecBuffer(SECBUFFER_STREAM_HEADER, size=5)]) == st.SEC_E_INVALID_TOKEN
    assert user.encrypt(ctx, 0x40000000, bufs(5, b"abc", 17)) == st.SEC_E_QOP_NOT_SUPPORTED
    assert user.encrypt(ctx, 0, bufs(5, b"a" * 16385, 17)) == st.SEC_E_INVALID_PARAMETER
    ok = bufs(5, b"a" * 16384, 17)
    assert user.encrypt(ctx, 0, ok) == st.SEC_E_OK  # the failures above changed nothing
    assert (ok[0].cb, ok[1].cb, ok[2].cb) == (5, 16384, 17)
    wire = ok[0].data + ok[1].data + ok[2].data
    assert server.receive(wire)[0] == b"a" * 16384


def test_decrypt_several_records_partial_and_misuse(user: TlsPackage) -> None:
    client, server, _pending = established(user, "tls1.2")
    one, two = client.seal(b"first"), client.seal(b"second")
    wire = one + two
    # MSG-4: one record per call, the rest as EXTRA.
    opened = server.open(wire)
    assert (opened.status, opened.data, opened.extra) == (st.SEC_E_OK, b"first", len(two))
    # OQ-21: a partial record is INCOMPLETE + MISSING and leaves the context untouched.
    for cut in (1, 4, 5, len(two) - 1):
        partial = server.open(two[:cut])
        assert partial.status == st.SEC_E_INCOMPLETE_MESSAGE
        assert partial.missing == expected_missing(two[:cut])
    assert server.open(two).data == b"second"
    # MSG-4 buffer shape: one DATA and three EMPTY.
    short = [SecBuffer(SECBUFFER_DATA, one), SecBuffer(SECBUFFER_EMPTY)]
    assert user.decrypt(server.context, short)[0] == st.SEC_E_INVALID_TOKEN
    assert short[0].type == SECBUFFER_DATA


def test_decrypt_result_buffer_layout(user: TlsPackage) -> None:
    client, server, _ = established(user, "tls1.2")
    wire = client.seal(b"layout") + b"\x17\x03"
    buffers = [SecBuffer(SECBUFFER_DATA, wire)] + [SecBuffer(SECBUFFER_EMPTY) for _ in range(3)]
    status, qop = user.decrypt(server.context, buffers)
    assert (status, qop) == (st.SEC_E_OK, 0)
    assert [b.type for b in buffers] == [
        SECBUFFER_STREAM_HEADER,
        SECBUFFER_DATA,
        SECBUFFER_STREAM_TRAILER,
        SECBUFFER_EXTRA,
    ]
    assert buffers[1].data == b"layout" and buffers[3].cb == 2
    assert buffers[0].cb + buffers[1].cb + buffers[2].cb == len(wire) - 2


@pytest.mark.parametrize("version", VERSIONS)
def test_tampered_record(user: TlsPackage, version: str) -> None:
    client, server, pending = established(user, version)
    settle(client, pending)
    record = bytearray(client.seal(b"integrity matters"))
    record[-3] ^= 0x01
    opened = server.open(bytes(record))
    assert opened.status == st.SEC_E_MESSAGE_ALTERED  # MSG-7
    assert server.open(client.seal(b"late")).status == st.SEC_E_CONTEXT_EXPIRED
    with pytest.raises(AssertionError):
        server.seal(b"no more")


def test_new_session_ticket_renegotiate_path(user: TlsPackage) -> None:
    """MSG-8/9, C.4 #4, OQ-18: the server's ticket reaches the client's first decrypt."""
    client, server, pending = established(user, "tls1.3", server_auth={"session_tickets": 2})
    data = pending + server.seal(b"after tickets")
    opened = client.open(data)
    assert opened.status == st.SEC_I_RENEGOTIATE
    assert opened.data[:1] == b"\x04"  # the NewSessionTicket handshake message
    assert opened.extra > 0
    tail = data[len(data) - opened.extra :]
    # Stalled: both directions are CONTEXT_EXPIRED until ISC consumes the message.
    assert client.open(tail).status == st.SEC_E_CONTEXT_EXPIRED
    status = user.encrypt(
        client.context,
        0,
        [
            SecBuffer(SECBUFFER_STREAM_HEADER, size=5),
            SecBuffer(SECBUFFER_DATA, b"x"),
            SecBuffer(SECBUFFER_STREAM_TRAILER, size=17),
            SecBuffer(SECBUFFER_EMPTY),
        ],
    )
    assert status == st.SEC_E_CONTEXT_EXPIRED
    leg = client.leg(opened.data)
    assert leg.status == st.SEC_E_OK and leg.token == b""
    second = client.open(tail)
    # The second ticket arrives after the record layer went callback-free: it is
    # recognised from its record, without the message bytes (docs/tls.md).
    assert second.status == st.SEC_I_RENEGOTIATE and second.data == b""
    assert client.leg(second.data).status == st.SEC_E_OK
    plain, rest, status = client.receive(tail[len(tail) - second.extra :])
    assert (plain, rest, status) == (b"after tickets", b"", st.SEC_E_OK)


def test_no_tickets_means_no_renegotiate(user: TlsPackage) -> None:
    client, server, pending = established(user, "tls1.3", server_auth={"session_tickets": 0})
    assert pending == b""
    assert client.open(server.seal(b"direct")).data == b"direct"


def test_records_before_handshake(user: TlsPackage) -> None:
    client = Endpoint(user, cred(user, 2), server=False, target="localhost")
    client.leg(None)
    assert client.open(b"\x17\x03\x03\x00\x01\x00").status == st.SEC_E_INVALID_HANDLE
    assert user.query_attributes(client.context, SECPKG_ATTR_STREAM_SIZES)[0] == st.SEC_E_INVALID_HANDLE


# ---- shutdown --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_user_mode_shutdown(user: TlsPackage, version: str) -> None:
    """SHUT-2/SHUT-3, C.4 #5: initiator and responder."""
    client, server, pending = established(user, version)
    settle(client, pending)
    token = [SecBuffer(SECBUFFER_TOKEN, SHUTDOWN_TOKEN)]
    assert user.apply_control_token(client.context, token) == st.SEC_E_OK
    close = client.leg(None)
    assert close.status == st.SEC_E_OK and close.token
    with pytest.raises(AssertionError):
        client.seal(b"closed")
    opened = server.open(close.token)
    assert opened.status == st.SEC_I_CONTEXT_EXPIRED
    assert server.open(close.token).status == st.SEC_E_CONTEXT_EXPIRED  # C.4 #5
    assert user.apply_control_token(server.context, token) == st.SEC_E_OK
    reply = server.leg(b"")
    assert reply.status == st.SEC_I_CONTEXT_EXPIRED and reply.token
    assert client.open(reply.token).status == st.SEC_E_CONTEXT_EXPIRED  # already closed
    assert user.delete(client.context) == st.SEC_E_OK


def test_kernel_mode_shutdown_is_unsupported(kernel: TlsPackage) -> None:
    client, server, pending = established(kernel, "tls1.3")
    settle(client, pending)
    token = [SecBuffer(SECBUFFER_TOKEN, SHUTDOWN_TOKEN)]
    assert kernel.apply_control_token(client.context, token) == st.SEC_E_UNSUPPORTED_FUNCTION  # OQ-17
    assert server.receive(client.seal(b"still open"))[0] == b"still open"


def test_control_token_validation(user: TlsPackage) -> None:
    client, _server, _ = established(user, "tls1.2")
    ctx = client.context
    assert user.apply_control_token(ctx, [SecBuffer(SECBUFFER_TOKEN, b"\x01")]) == st.SEC_E_INVALID_TOKEN
    assert (
        user.apply_control_token(ctx, [SecBuffer(SECBUFFER_TOKEN, (9).to_bytes(4, "little"))]) == st.SEC_E_INVALID_TOKEN
    )
    assert user.apply_control_token(ctx, [SecBuffer(SECBUFFER_TOKEN, bytes(4))]) == st.SEC_E_UNSUPPORTED_FUNCTION
    alert = b"".join(x.to_bytes(4, "little") for x in (2, 2, 40))
    assert user.apply_control_token(ctx, [SecBuffer(SECBUFFER_TOKEN, alert)]) == st.SEC_E_UNSUPPORTED_FUNCTION
    bad_level = b"".join(x.to_bytes(4, "little") for x in (2, 7, 0))
    assert user.apply_control_token(ctx, [SecBuffer(SECBUFFER_TOKEN, bad_level)]) == st.SEC_E_INVALID_TOKEN
    close_alert = b"".join(x.to_bytes(4, "little") for x in (2, 1, 0))
    assert user.apply_control_token(ctx, [SecBuffer(SECBUFFER_TOKEN, close_alert)]) == st.SEC_E_OK
    assert client.leg(None).status == st.SEC_E_OK


def test_shutdown_during_handshake_is_refused(user: TlsPackage) -> None:
    client = Endpoint(user, cred(user, 2), server=False, target="localhost")
    client.leg(None)
    token = [SecBuffer(SECBUFFER_TOKEN, SHUTDOWN_TOKEN)]
    assert user.apply_control_token(client.context, token) == st.SEC_E_UNSUPPORTED_FUNCTION


# ---- caller-sized output buffers ---------------------------------------------------------------


def test_undersized_first_output_creates_no_handle(user: TlsPackage) -> None:
    req = DEFAULT_ISC_REQ & ~ISC_REQ["ALLOCATE_MEMORY"]
    small = Endpoint(user, cred(user, 2), server=False, target="localhost", context_req=req, token_capacity=16)
    leg = small.leg(None)
    assert leg.status == st.SEC_E_INSUFFICIENT_MEMORY and small.context is None and leg.token == b""
    roomy = Endpoint(user, cred(user, 2), server=False, target="localhost", context_req=req, token_capacity=4096)
    leg = roomy.leg(None)
    assert leg.status == st.SEC_I_CONTINUE_NEEDED and 0 < len(leg.token) <= 4096
    assert not leg.attributes & ISC_RET["ALLOCATED_MEMORY"]


def test_undersized_later_output_kills_the_context(user: TlsPackage) -> None:
    req = DEFAULT_ASC_REQ & ~ASC_REQ["ALLOCATE_MEMORY"]
    client, server = pair(user, "tls1.3", asc_req=req)
    server.token_capacity = 64  # far below a certificate flight
    hello = client.leg(None).token
    leg = server.leg(hello)
    assert leg.status == st.SEC_E_INSUFFICIENT_MEMORY and server.context is None
    server.token_capacity = 8192
    client, _ = pair(user, "tls1.3")
    leg = server.leg(client.leg(None).token)
    assert leg.status == st.SEC_I_CONTINUE_NEEDED
    server.token_capacity = 4  # the final leg's ticket does not fit
    finished = client.leg(leg.token).token
    last = server.leg(finished)
    assert last.status == st.SEC_E_INSUFFICIENT_MEMORY and server.context is not None
    assert server.leg(finished).status == st.SEC_E_INSUFFICIENT_MEMORY  # dead for good


def test_alert_buffer_cleared_on_success(user: TlsPackage) -> None:
    client = Endpoint(user, cred(user, 2), server=False, target="localhost")
    out = [SecBuffer(SECBUFFER_TOKEN), SecBuffer(SECBUFFER_ALERT, b"\x02\x28", size=2)]
    r = user.initialize(client.credential, None, "localhost", DEFAULT_ISC_REQ, None, out)
    assert r.status == st.SEC_I_CONTINUE_NEEDED
    assert out[1].cb == 0  # no stale alert for callers that always check it (C.4 #3)


def test_missing_goes_into_the_empty_slot(user: TlsPackage) -> None:
    server_cred = cred(user, 1, certificate="server")
    inputs = [SecBuffer(SECBUFFER_TOKEN, b"\x16\x03\x01\x00"), SecBuffer(SECBUFFER_EMPTY)]
    out = [SecBuffer(SECBUFFER_TOKEN), SecBuffer(SECBUFFER_ALERT)]
    r = user.accept(server_cred, None, inputs, DEFAULT_ASC_REQ, out)
    assert (r.status, r.context) == (st.SEC_E_INCOMPLETE_MESSAGE, None)
    assert inputs[1].type == SECBUFFER_MISSING and inputs[1].cb == 1  # SCH-21/25
    assert inputs[0].type == SECBUFFER_TOKEN and out[0].cb == 0


def test_renegotiate_leg_given_the_following_records(user: TlsPackage) -> None:
    """Older docs pass the bytes after the message (the EXTRA) to ISC: the leg consumes
    none of them and hands them back as EXTRA for DecryptMessage (MSG-9)."""
    client, server, pending = established(user, "tls1.3")
    data = pending + server.seal(b"behind the ticket")
    opened = client.open(data)
    assert opened.status == st.SEC_I_RENEGOTIATE
    tail = data[len(data) - opened.extra :]
    leg = client.leg(tail)
    assert leg.status == st.SEC_E_OK and leg.extra == len(tail)
    assert client.receive(tail)[0] == b"behind the ticket"


def test_empty_plaintext_encrypts_to_nothing(user: TlsPackage) -> None:
    client, server, _ = established(user, "tls1.2")
    buffers = [
        SecBuffer(SECBUFFER_STREAM_HEADER, size=13),
        SecBuffer(SECBUFFER_DATA, b""),
        SecBuffer(SECBUFFER_STREAM_TRAILER, size=16),
        SecBuffer(SECBUFFER_EMPTY),
    ]
    assert user.encrypt(client.context, 0, buffers) == st.SEC_E_OK
    assert (buffers[0].cb, buffers[1].cb, buffers[2].cb) == (0, 0, 0)
    assert server.receive(client.seal(b"still in sequence"))[0] == b"still in sequence"


def test_decrypt_rejects_non_records(user: TlsPackage) -> None:
    client, server, _ = established(user, "tls1.2")
    assert server.open(b"HTTP/1.1 200 OK\r\n").status == st.SEC_E_INVALID_TOKEN
    assert server.receive(client.seal(b"unharmed"))[0] == b"unharmed"  # nothing was consumed


def test_alpn_is_negotiated(user: TlsPackage) -> None:
    client, server, _ = established(
        user, "tls1.3", client_auth={"alpn": ["h2", "http/1.1"]}, server_auth={"alpn": ["http/1.1"]}
    )
    assert user.query_attributes(client.context, 35) == (st.SEC_E_OK, "http/1.1")
    status, info = user.query_attributes(server.context, 0x5A)
    assert status == st.SEC_E_OK and info["protocol"] == "TLSv1.3"
    assert user.query_attributes(server.context, 0x999)[0] == st.SEC_E_UNSUPPORTED_FUNCTION


@pytest.mark.parametrize("completion", ["deferred", "threaded"])
def test_through_the_simulator_adapter(completion: str) -> None:
    """The package behind the async API: ACH/ISC/ASC queued, completed, statuses read."""
    import threading

    from adapters.api import CallOutputs
    from adapters.simulator import SimulatorAdapter

    adapter = SimulatorAdapter(completion=completion, kernel_mode=False, max_delay_ms=0.5)
    done = threading.Event()

    def call(queue: object, *args: object) -> tuple[int, CallOutputs]:
        ctx = adapter.create_async_context()
        adapter.set_async_notify_callback(ctx, lambda _c, _d: done.set(), None)
        done.clear()
        outputs = args[-1] if isinstance(args[-1], CallOutputs) else CallOutputs()
        assert queue(ctx, *args) == st.SEC_E_OK  # type: ignore[operator]
        if completion == "deferred":
            adapter.control.complete_all()
        assert done.wait(5)
        status = adapter.get_async_call_status(ctx)
        adapter.free_async_context(ctx)
        return status, outputs

    def token_out() -> CallOutputs:
        return CallOutputs(output=[SecBuffer(SECBUFFER_TOKEN, size=0), SecBuffer(SECBUFFER_ALERT, size=0)])

    status, c_cred = call(adapter.acquire_credentials_handle_async, None, "schannel", 2, {}, CallOutputs())
    assert status == st.SEC_E_OK
    status, s_cred = call(
        adapter.acquire_credentials_handle_async, None, "SCHANNEL", 1, {"certificate": "server"}, CallOutputs()
    )
    assert status == st.SEC_E_OK
    isc = adapter.initialize_security_context_async
    asc = adapter.accept_security_context_async
    status, out = call(isc, c_cred.credential, None, "server.test", DEFAULT_ISC_REQ, None, token_out())
    client = out.new_context
    token = out.output[0].data  # type: ignore[index]
    server = None
    while True:
        inp = [SecBuffer(SECBUFFER_TOKEN, token), SecBuffer(SECBUFFER_EMPTY)]
        status, out = call(asc, s_cred.credential, server, inp, DEFAULT_ASC_REQ, token_out())
        server, token = out.new_context, out.output[0].data  # type: ignore[index]
        if status == st.SEC_E_OK:
            break
        assert status == st.SEC_I_CONTINUE_NEEDED
        inp = [SecBuffer(SECBUFFER_TOKEN, token), SecBuffer(SECBUFFER_EMPTY)]
        status, out = call(isc, None, client, None, DEFAULT_ISC_REQ, inp, token_out())
        token = out.output[0].data  # type: ignore[index]
        assert status in (st.SEC_E_OK, st.SEC_I_CONTINUE_NEEDED)
    assert adapter.query_context_attributes(client, SECPKG_ATTR_STREAM_SIZES)[0] == st.SEC_E_OK
    shutdown = [SecBuffer(SECBUFFER_TOKEN, SHUTDOWN_TOKEN)]
    assert adapter.apply_control_token(server, shutdown) == st.SEC_E_OK  # user profile
    status, out = call(asc, None, server, None, DEFAULT_ASC_REQ, token_out())
    assert status == st.SEC_E_OK and out.output[0].data  # type: ignore[index]  # close_notify
    for handle in (client, server):
        assert call(adapter.delete_security_context_async, handle)[0] == st.SEC_E_OK
    adapter.close()


# ---- hostile input --------------------------------------------------------------------------

_HANDSHAKE_STATUSES = {
    st.SEC_E_INCOMPLETE_MESSAGE,
    st.SEC_I_CONTINUE_NEEDED,
    st.SEC_E_ILLEGAL_MESSAGE,
    st.SEC_E_UNSUPPORTED_FUNCTION,
    st.SEC_E_ALGORITHM_MISMATCH,
    st.SEC_E_DECRYPT_FAILURE,
    st.SEC_E_MESSAGE_ALTERED,
    st.SEC_E_INTERNAL_ERROR,
    st.SEC_E_INVALID_TOKEN,
    st.SEC_E_CERT_UNKNOWN,
}


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st_bytes(max_size=300), prefix=integers(min_value=0, max_value=6))
def test_garbage_handshake_input_gives_statuses(user: TlsPackage, garbage: bytes, prefix: int) -> None:
    """Random bytes, bare or behind a plausible record header, never raise."""
    hello_header = bytes([22, 3, 1, len(garbage) >> 8, len(garbage) & 0xFF])
    data = hello_header[:prefix] + garbage if prefix < 5 else hello_header + garbage
    server = Endpoint(user, cred(user, 1, certificate="server"), server=True)
    leg = server.leg(data)
    assert leg.status in _HANDSHAKE_STATUSES, st.describe(leg.status)
    if leg.status != st.SEC_I_CONTINUE_NEEDED:
        assert server.context is None  # OQ-20
    client = Endpoint(user, cred(user, 2), server=False, target="localhost")
    client.leg(None)
    assert client.leg(data).status in _HANDSHAKE_STATUSES | {st.SEC_E_UNTRUSTED_ROOT}


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st_bytes(max_size=200))
def test_garbage_records_give_statuses(user: TlsPackage, garbage: bytes) -> None:
    _client, server, _ = established(user, "tls1.2")
    record = bytes([23, 3, 3, len(garbage) >> 8, len(garbage) & 0xFF]) + garbage
    for data in (garbage, record):
        opened = server.open(data)
        assert opened.status in {
            st.SEC_E_INCOMPLETE_MESSAGE,
            st.SEC_E_INVALID_TOKEN,
            st.SEC_E_MESSAGE_ALTERED,
            st.SEC_E_DECRYPT_FAILURE,
            st.SEC_E_ILLEGAL_MESSAGE,
            st.SEC_E_CONTEXT_EXPIRED,
        }, st.describe(opened.status)


def test_non_bytes_buffers_are_invalid_tokens(user: TlsPackage) -> None:
    client, server, _ = established(user, "tls1.2")
    text = [SecBuffer(SECBUFFER_STREAM_HEADER, size=13), SecBuffer(SECBUFFER_DATA, "text"),  # type: ignore[arg-type]
            SecBuffer(SECBUFFER_STREAM_TRAILER, size=16), SecBuffer(SECBUFFER_EMPTY)]  # fmt: skip
    assert user.encrypt(client.context, 0, text) == st.SEC_E_INVALID_TOKEN
    incoming = [SecBuffer(SECBUFFER_DATA, 42)] + [SecBuffer(SECBUFFER_EMPTY) for _ in range(3)]  # type: ignore[arg-type]
    assert user.decrypt(server.context, incoming) == (st.SEC_E_INVALID_TOKEN, 0)
    token = [SecBuffer(SECBUFFER_TOKEN, None), SecBuffer(SECBUFFER_EMPTY)]  # type: ignore[arg-type]
    out = [SecBuffer(SECBUFFER_TOKEN), SecBuffer(SECBUFFER_ALERT)]
    result = user.accept(cred(user, 1, certificate="server"), None, token, DEFAULT_ASC_REQ, out)
    assert (result.status, result.context) == (st.SEC_E_INVALID_TOKEN, None)
