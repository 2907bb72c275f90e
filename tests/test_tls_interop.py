"""Interop (issue 4): the simulated Schannel against plain Python ``ssl`` over real sockets.

The package's client talks to an ``ssl`` server, and the package's server to an ``ssl``
client, through ``socket.socketpair()`` with the ssl peer in a thread.  Both TLS 1.2 and
TLS 1.3; handshake, application data both ways, and the user-mode shutdown (SHUT-2/3).
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

import pytest

from adapters import status as st
from adapters.api import SecBuffer
from adapters.constants import ASC_REQ, SECBUFFER_TOKEN
from adapters.simulator.packages.base import PackageProfile
from adapters.simulator.packages.tls import TlsPackage
from adapters.simulator.packages.tls_loopback import DEFAULT_ASC_REQ, Endpoint
from adapters.simulator.packages.tls_pki import shared_pki

VERSIONS = {"tls1.2": ssl.TLSVersion.TLSv1_2, "tls1.3": ssl.TLSVersion.TLSv1_3}
TIMEOUT = 10.0
SHUTDOWN = [(SECBUFFER_TOKEN, (1).to_bytes(4, "little"))]


@pytest.fixture(scope="module")
def package() -> TlsPackage:
    return TlsPackage(PackageProfile(kernel_mode=False))


def ssl_context(
    server: bool, version: str, certificate: str | None = None, require_cert: bool = False
) -> ssl.SSLContext:
    pki = shared_pki()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ctx.maximum_version = VERSIONS[version]
    pki.configure_trust(ctx)
    if certificate:
        pki.configure_certificate(ctx, certificate)
    if server and require_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class Wire:
    """The package side of the socket: a receive buffer and the C.2/C.3 read rules."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise AssertionError("peer closed the socket early")
        self.buffer += chunk

    def handshake(self, side: Endpoint) -> None:
        if not side.server:
            self.sock.sendall(side.leg(None).token)
        need_more = True
        for _ in range(64):
            if need_more:
                self.fill()
            leg = side.leg(self.buffer)
            if leg.status == st.SEC_E_INCOMPLETE_MESSAGE:
                need_more = True  # SCH-20: read more, call again with the enlarged buffer
                continue
            assert leg.status in (st.SEC_E_OK, st.SEC_I_CONTINUE_NEEDED), st.describe(leg.status)
            if leg.token:
                self.sock.sendall(leg.token)
            self.buffer = self.buffer[len(self.buffer) - leg.extra :] if leg.extra else b""
            if leg.status == st.SEC_E_OK:
                return  # what is left belongs to the record layer
            need_more = not self.buffer
        raise AssertionError("handshake did not finish")

    def read(self, side: Endpoint, size: int) -> bytes:
        """Decrypt until ``size`` plaintext bytes arrived (RENEGOTIATE handled)."""
        plain = b""
        while len(plain) < size:
            if self.buffer:
                got, self.buffer, status = side.receive(self.buffer)
                plain += got
                assert status in (st.SEC_E_OK, st.SEC_E_INCOMPLETE_MESSAGE), st.describe(status)
                if len(plain) >= size:
                    break
            self.fill()
        return plain

    def close(self, package: TlsPackage, side: Endpoint) -> None:
        """SHUT-2: ApplyControlToken(SCHANNEL_SHUTDOWN), then an ISC/ASC with no input."""
        assert package.apply_control_token(side.context, [SecBuffer(t, d) for t, d in SHUTDOWN]) == st.SEC_E_OK
        leg = side.leg(None if not side.server else b"")
        assert leg.status in (st.SEC_E_OK, st.SEC_I_CONTEXT_EXPIRED)
        assert leg.token
        self.sock.sendall(leg.token)


def run_peer(
    target: Callable[[socket.socket, dict[str, Any]], None], sock: socket.socket
) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def body() -> None:
        try:
            target(sock, result)
        except Exception as error:  # reported by the test thread
            result["error"] = error

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, result


def finish(thread: threading.Thread, result: dict[str, Any]) -> dict[str, Any]:
    thread.join(TIMEOUT)
    assert not thread.is_alive(), "the ssl peer hung"
    if "error" in result:
        raise AssertionError(f"ssl peer failed: {result['error']!r}")
    return result


@pytest.mark.parametrize("client_certificate", [False, True], ids=["anonymous", "client-cert"])
@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_package_client_with_ssl_server(package: TlsPackage, version: str, client_certificate: bool) -> None:
    ours, theirs = socket.socketpair()
    ours.settimeout(TIMEOUT)
    theirs.settimeout(TIMEOUT)
    server_ctx = ssl_context(True, version, "server", require_cert=client_certificate)

    def ssl_server(sock: socket.socket, result: dict[str, Any]) -> None:
        with server_ctx.wrap_socket(sock, server_side=True) as tls:
            result["version"] = tls.version()
            result["peer"] = tls.getpeercert()
            data = b""
            while len(data) < 5000:
                data += tls.recv(65536)
            tls.sendall(data.upper())
            result["eof"] = tls.recv(1024)  # b"" once our close_notify arrives
            tls.unwrap()

    thread, result = run_peer(ssl_server, theirs)
    auth: dict[str, object] = {"protocols": [version]}
    if client_certificate:
        auth["certificate"] = "client"
    credential = package.acquire(None, 2, auth).credential
    client = Endpoint(package, credential, server=False, target="localhost")
    wire = Wire(ours)
    try:
        wire.handshake(client)
        message = b"interop " * 625
        ours.sendall(client.seal(message))
        assert wire.read(client, len(message)) == message.upper()
        wire.close(package, client)
        wire.fill()  # the server's close_notify
        assert client.open(wire.buffer).status == st.SEC_E_CONTEXT_EXPIRED  # C.4 #5: we closed first
    finally:
        ours.close()
    outcome = finish(thread, result)
    assert outcome["version"] == {"tls1.2": "TLSv1.2", "tls1.3": "TLSv1.3"}[version]
    assert outcome["eof"] == b""
    if client_certificate:
        assert ("email", "client@client.test") in outcome["peer"]["subjectAltName"]


@pytest.mark.parametrize("client_certificate", [False, True], ids=["anonymous", "client-cert"])
@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_package_server_with_ssl_client(package: TlsPackage, version: str, client_certificate: bool) -> None:
    ours, theirs = socket.socketpair()
    ours.settimeout(TIMEOUT)
    theirs.settimeout(TIMEOUT)
    client_ctx = ssl_context(False, version, "client" if client_certificate else None)

    def ssl_client(sock: socket.socket, result: dict[str, Any]) -> None:
        with client_ctx.wrap_socket(sock, server_hostname="server.test") as tls:
            result["version"] = tls.version()
            tls.sendall(b"ping" * 1000)
            reply = b""
            while len(reply) < 4000:
                reply += tls.recv(65536)
            result["reply"] = reply
            tls.unwrap()  # sends close_notify, waits for the package's

    thread, result = run_peer(ssl_client, theirs)
    credential = package.acquire(None, 1, {"certificate": "server", "protocols": [version]}).credential
    request = DEFAULT_ASC_REQ | (ASC_REQ["MUTUAL_AUTH"] if client_certificate else 0)
    server = Endpoint(package, credential, server=True, context_req=request)
    wire = Wire(ours)
    try:
        wire.handshake(server)
        assert server.context.peer_certificate_verified() == client_certificate  # SCH-18
        assert wire.read(server, 4000) == b"ping" * 1000
        ours.sendall(server.seal(b"PONG" * 1000))
        wire.fill()  # the client's close_notify
        opened = server.open(wire.buffer)
        assert opened.status == st.SEC_I_CONTEXT_EXPIRED  # SHUT-3
        wire.buffer = b""
        wire.close(package, server)  # the responder answers with its own close_notify
    finally:
        ours.close()
    outcome = finish(thread, result)
    assert outcome["reply"] == b"PONG" * 1000
    assert outcome["version"] == {"tls1.2": "TLSv1.2", "tls1.3": "TLSv1.3"}[version]
