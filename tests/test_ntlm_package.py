"""The simulator's NTLM package, driven directly (no async layer)."""

from __future__ import annotations

import os
import random
import sys
import tempfile
import threading
from collections.abc import Mapping
from typing import Any

import pytest

spnego = pytest.importorskip("spnego")

from adapters import status as st  # noqa: E402
from adapters.api import SecBuffer  # noqa: E402
from adapters.constants import (  # noqa: E402
    ASC_REQ,
    ASC_RET,
    ISC_REQ,
    ISC_RET,
    SECBUFFER_DATA,
    SECBUFFER_EMPTY,
    SECBUFFER_TOKEN,
    SECPKG_ATTR_SIZES,
    SECPKG_ATTR_STREAM_SIZES,
    SECPKG_CRED_BOTH,
    SECPKG_CRED_INBOUND,
    SECPKG_CRED_OUTBOUND,
)
from adapters.simulator.packages import ntlm_wire as wire  # noqa: E402
from adapters.simulator.packages.base import PackageProfile, StepResult  # noqa: E402
from adapters.simulator.packages.ntlm import ContextSizes, NtlmPackage  # noqa: E402
from adapters.simulator.packages.registry import package_classes  # noqa: E402

SEAL_REQ = ISC_REQ["CONFIDENTIALITY"] | ISC_REQ["INTEGRITY"] | ISC_REQ["CONNECTION"]
ALICE = {"username": "alice", "password": "Secret-1", "domain": "CORP"}


@pytest.fixture
def pkg() -> NtlmPackage:
    return NtlmPackage(PackageProfile())


def cred(pkg: NtlmPackage, use: int, data: Mapping[str, Any] | None) -> Any:
    result = pkg.acquire(None, use, data)
    assert result.status == st.SEC_E_OK, st.describe(result.status)
    return result.credential


def out(capacity: int = 4096) -> list[SecBuffer]:
    return [SecBuffer(SECBUFFER_TOKEN, b"", capacity)]


def tok(data: bytes) -> list[SecBuffer]:
    return [SecBuffer(SECBUFFER_TOKEN, data), SecBuffer(SECBUFFER_EMPTY)]


class Handshake:
    """One client/server pair stepped leg by leg, keeping every token."""

    def __init__(
        self,
        pkg: NtlmPackage,
        client: Mapping[str, Any] | None = ALICE,
        server: Mapping[str, Any] | None = None,
        req: int = SEAL_REQ,
    ) -> None:
        self.pkg, self.req = pkg, req
        self.ccred = cred(pkg, SECPKG_CRED_OUTBOUND, client)
        self.scred = cred(pkg, SECPKG_CRED_INBOUND, server if server is not None else {"accounts": [ALICE]})
        self.cctx: Any = None
        self.sctx: Any = None

    def isc1(self, output: list[SecBuffer] | None = None) -> tuple[StepResult, bytes]:
        output = out() if output is None else output
        r = self.pkg.initialize(self.ccred, None, "HTTP/server", self.req, None, output)
        self.cctx = r.context
        return r, output[0].data if output else b""

    def asc1(self, negotiate: bytes, output: list[SecBuffer] | None = None) -> tuple[StepResult, bytes]:
        output = out() if output is None else output
        r = self.pkg.accept(self.scred, None, tok(negotiate), 0, output)
        self.sctx = r.context
        return r, output[0].data if output else b""

    def isc2(self, challenge: bytes, output: list[SecBuffer] | None = None) -> tuple[StepResult, bytes]:
        output = out() if output is None else output
        r = self.pkg.initialize(None, self.cctx, "HTTP/server", self.req, tok(challenge), output)
        return r, output[0].data if output else b""

    def asc2(self, authenticate: bytes) -> StepResult:
        return self.pkg.accept(None, self.sctx, tok(authenticate), 0, out())

    def run(self) -> tuple[StepResult, StepResult, StepResult, StepResult]:
        r1, negotiate = self.isc1()
        r2, challenge = self.asc1(negotiate)
        r3, authenticate = self.isc2(challenge)
        return r1, r2, r3, self.asc2(authenticate)


def statuses(*results: StepResult) -> list[str]:
    return [st.name_of(r.status) for r in results]


# ---- handshake ---------------------------------------------------------------------------


def test_registry_offers_ntlm() -> None:
    assert NtlmPackage in package_classes()
    assert NtlmPackage.names == ("NTLM",)
    assert NtlmPackage.features == {"client", "server"}


def test_three_leg_handshake(pkg: NtlmPackage) -> None:
    hs = Handshake(pkg)
    r1, negotiate = hs.isc1()
    r2, challenge = hs.asc1(negotiate)
    r3, authenticate = hs.isc2(challenge)
    out4 = [SecBuffer(SECBUFFER_TOKEN, b"stale", 64)]
    r4 = pkg.accept(None, hs.sctx, tok(authenticate), 0, out4)
    assert statuses(r1, r2, r3, r4) == [
        "SEC_I_CONTINUE_NEEDED",
        "SEC_I_CONTINUE_NEEDED",
        "SEC_E_OK",
        "SEC_E_OK",
    ]
    assert wire.check(negotiate, wire.NEGOTIATE) and wire.check(challenge, wire.CHALLENGE)
    assert wire.check(authenticate, wire.AUTHENTICATE)
    assert r1.context is not None and r2.context is not None
    assert r3.context is r1.context and r4.context is r2.context
    assert out4[0].data == b"" and out4[0].size == 0  # final ASC leg sends nothing
    for r, table in ((r3, ISC_RET), (r4, ASC_RET)):
        for bit in ("CONFIDENTIALITY", "INTEGRITY", "REPLAY_DETECT", "SEQUENCE_DETECT"):
            assert r.attributes & table[bit], bit
    assert r3.attributes & ISC_RET["CONNECTION"]
    assert not r4.attributes & ASC_RET["CONNECTION"]  # the server did not ask for it


def test_no_sign_or_seal_requested_gives_no_protection_bits(pkg: NtlmPackage) -> None:
    _, _, r3, r4 = Handshake(pkg, req=0).run()
    assert statuses(r3, r4) == ["SEC_E_OK", "SEC_E_OK"]
    assert r3.attributes & (ISC_RET["CONFIDENTIALITY"] | ISC_RET["INTEGRITY"]) == 0
    assert r4.attributes & (ASC_RET["CONFIDENTIALITY"] | ASC_RET["INTEGRITY"]) == 0


@pytest.mark.parametrize(
    ("client", "account"),
    [
        (ALICE, {"username": "ALICE", "password": "Secret-1", "domain": "corp"}),  # case
        (ALICE, {"username": "alice", "password": "Secret-1"}),  # local account: any domain
        ({"username": "CORP\\alice", "password": "Secret-1"}, ALICE),  # DOMAIN\\user form
        ({"username": "bob", "password": ""}, {"username": "bob", "password": ""}),  # empty pw
        ({"username": "zoë", "password": "pässwörd€"}, {"username": "ZOË", "password": "pässwörd€"}),
    ],
)
def test_accepted_identities(pkg: NtlmPackage, client: dict[str, str], account: dict[str, str]) -> None:
    *_, r4 = Handshake(pkg, client=client, server={"accounts": [account]}).run()
    assert r4.status == st.SEC_E_OK


@pytest.mark.parametrize(
    "server",
    [
        {"accounts": [{**ALICE, "password": "Secret-2"}]},  # wrong password
        {"accounts": [{**ALICE, "username": "mallory"}]},  # unknown user
        {"accounts": [{**ALICE, "domain": "OTHER"}]},  # same user, other domain
        {"accounts": []},
        {},  # INBOUND without auth data: no accounts
    ],
)
def test_logon_denied_at_final_asc(pkg: NtlmPackage, server: dict[str, Any]) -> None:
    hs = Handshake(pkg, server=server)
    r1, r2, r3, r4 = hs.run()
    assert statuses(r1, r2, r3, r4)[:3] == ["SEC_I_CONTINUE_NEEDED"] * 2 + ["SEC_E_OK"]
    assert r4.status == st.SEC_E_LOGON_DENIED
    # the handle exists since leg 1: the caller still owns it (OQ-20), but it is dead
    assert r4.context is hs.sctx
    again = pkg.accept(None, hs.sctx, tok(b"x"), 0, out())
    assert again.status == st.SEC_E_INVALID_HANDLE
    assert pkg.delete(hs.sctx) == st.SEC_E_OK


def test_server_keys_as_client_form(pkg: NtlmPackage) -> None:
    *_, r4 = Handshake(pkg, server=dict(ALICE)).run()
    assert r4.status == st.SEC_E_OK


def test_both_credential_serves_both_roles(pkg: NtlmPackage) -> None:
    both = cred(pkg, SECPKG_CRED_BOTH, ALICE)
    o1, o2, o3 = out(), out(), out()
    r1 = pkg.initialize(both, None, None, SEAL_REQ, None, o1)
    r2 = pkg.accept(both, None, tok(o1[0].data), 0, o2)
    r3 = pkg.initialize(None, r1.context, None, SEAL_REQ, tok(o2[0].data), o3)
    r4 = pkg.accept(None, r2.context, tok(o3[0].data), 0, out())
    assert statuses(r1, r2, r3, r4) == ["SEC_I_CONTINUE_NEEDED"] * 2 + ["SEC_E_OK"] * 2


# ---- malformed tokens --------------------------------------------------------------------


def _tokens(pkg: NtlmPackage) -> tuple[bytes, bytes, bytes]:
    hs = Handshake(pkg)
    _, negotiate = hs.isc1()
    _, challenge = hs.asc1(negotiate)
    _, authenticate = hs.isc2(challenge)
    return negotiate, challenge, authenticate


GARBAGE = [b"\x00", b"garbage" * 10, b"NTLMSSP\x00", b"NTLMSSP\x00\x09\x00\x00\x00" + b"\x00" * 80]


@pytest.mark.parametrize("leg", ["asc1", "isc2", "asc2"])
def test_garbage_truncated_and_wrong_type_tokens(pkg: NtlmPackage, leg: str) -> None:
    negotiate, challenge, authenticate = _tokens(pkg)
    good = {"asc1": negotiate, "isc2": challenge, "asc2": authenticate}[leg]
    wrong_type = {"asc1": authenticate, "isc2": negotiate, "asc2": challenge}[leg]
    bad = [*GARBAGE, wrong_type] + [good[:n] for n in range(1, len(good))]
    hs = Handshake(pkg)
    _, hs_negotiate = hs.isc1()
    _, hs_challenge = hs.asc1(hs_negotiate)
    _, hs_authenticate = hs.isc2(hs_challenge) if leg == "asc2" else (None, b"")
    for token in bad:
        if leg == "asc1":
            r = pkg.accept(hs.scred, None, tok(token), 0, out())
            assert r.context is None  # OQ-20: failed first leg, no handle
        elif leg == "isc2":
            r = pkg.initialize(None, hs.cctx, None, SEAL_REQ, tok(token), out())
            assert r.context is hs.cctx
        else:
            r = pkg.accept(None, hs.sctx, tok(token), 0, out())
            assert r.context is hs.sctx
        assert r.status == st.SEC_E_INVALID_TOKEN, (len(token), st.describe(r.status))
    # a rejected frame was not consumed: the real message still completes the leg
    if leg == "isc2":
        assert hs.isc2(hs_challenge)[0].status == st.SEC_E_OK
    elif leg == "asc2":
        assert hs.asc2(hs_authenticate).status == st.SEC_E_OK


def test_missing_input_token(pkg: NtlmPackage) -> None:
    hs = Handshake(pkg)
    _, negotiate = hs.isc1()
    assert pkg.accept(hs.scred, None, None, 0, out()).status == st.SEC_E_INVALID_TOKEN
    assert pkg.accept(hs.scred, None, [SecBuffer(SECBUFFER_DATA, negotiate)], 0, out()).status == (
        st.SEC_E_INVALID_TOKEN
    )
    assert pkg.initialize(None, hs.cctx, None, SEAL_REQ, None, out()).status == st.SEC_E_INVALID_TOKEN


def test_bit_flipped_tokens_never_raise(pkg: NtlmPackage) -> None:
    """Hostile but well-framed messages get a status, never an exception."""
    rng = random.Random(4)
    allowed = {st.SEC_E_OK, st.SEC_I_CONTINUE_NEEDED, st.SEC_E_INVALID_TOKEN, st.SEC_E_LOGON_DENIED}
    for _ in range(40):
        hs = Handshake(pkg)
        _, negotiate = hs.isc1()
        _, challenge = hs.asc1(negotiate)
        flipped = bytearray(challenge)
        for _ in range(3):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        r3, authenticate = hs.isc2(bytes(flipped))
        assert r3.status in allowed
        if r3.status != st.SEC_E_OK:
            continue
        flipped = bytearray(authenticate)
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        assert hs.asc2(bytes(flipped)).status in allowed


# ---- output buffers ----------------------------------------------------------------------


def test_undersized_first_leg_outputs_create_no_handle(pkg: NtlmPackage) -> None:
    hs = Handshake(pkg)
    _, negotiate = hs.isc1()
    r, _ = hs.isc1(out(len(negotiate) - 1))
    assert (r.status, r.context) == (st.SEC_E_INSUFFICIENT_MEMORY, None)
    r, _ = hs.isc1([])  # no output TOKEN buffer at all
    assert (r.status, r.context) == (st.SEC_E_INSUFFICIENT_MEMORY, None)
    r, _ = hs.asc1(negotiate, out(8))
    assert (r.status, r.context) == (st.SEC_E_INSUFFICIENT_MEMORY, None)


def test_exact_capacity_and_allocate_memory(pkg: NtlmPackage) -> None:
    hs = Handshake(pkg)
    _, negotiate = hs.isc1()
    r, again = hs.isc1(out(len(negotiate)))
    assert r.status == st.SEC_I_CONTINUE_NEEDED and len(again) == len(negotiate)
    hs.req = SEAL_REQ | ISC_REQ["ALLOCATE_MEMORY"]
    r, allocated = hs.isc1(out(0))
    assert r.status == st.SEC_I_CONTINUE_NEEDED and allocated
    assert r.attributes & ISC_RET["ALLOCATED_MEMORY"]
    output = out(0)
    r = pkg.accept(hs.scred, None, tok(allocated), ASC_REQ["ALLOCATE_MEMORY"], output)
    assert r.status == st.SEC_I_CONTINUE_NEEDED and output[0].data
    assert r.attributes & ASC_RET["ALLOCATED_MEMORY"]


def test_undersized_authenticate_output_kills_context(pkg: NtlmPackage) -> None:
    hs = Handshake(pkg)
    _, negotiate = hs.isc1()
    _, challenge = hs.asc1(negotiate)
    r, _ = hs.isc2(challenge, out(64))
    assert (r.status, r.context) == (st.SEC_E_INSUFFICIENT_MEMORY, hs.cctx)
    assert hs.isc2(challenge)[0].status == st.SEC_E_INVALID_HANDLE


# ---- credentials and handles -------------------------------------------------------------


@pytest.mark.parametrize(
    ("use", "data"),
    [
        (SECPKG_CRED_OUTBOUND, {"username": "alice"}),  # no password
        (SECPKG_CRED_OUTBOUND, {"password": "x"}),  # no username
        (SECPKG_CRED_OUTBOUND, {"username": "", "password": "x"}),
        (SECPKG_CRED_OUTBOUND, {"username": 7, "password": "x"}),
        (SECPKG_CRED_OUTBOUND, {"username": "a", "password": b"x"}),
        (SECPKG_CRED_OUTBOUND, {"username": "a\x00b", "password": "x"}),
        (SECPKG_CRED_OUTBOUND, {"username": "D\\a", "password": "x", "domain": "D"}),
        (SECPKG_CRED_OUTBOUND, {"username": "D\\", "password": "x"}),
        (SECPKG_CRED_OUTBOUND, {**ALICE, "flags": 2}),  # unknown key
        (SECPKG_CRED_OUTBOUND, {**ALICE, "accounts": [ALICE]}),  # server key, client cred
        (SECPKG_CRED_OUTBOUND, "alice:Secret-1"),  # not a mapping
        (SECPKG_CRED_INBOUND, {"accounts": ALICE}),  # not a list
        (SECPKG_CRED_INBOUND, {"accounts": ["alice"]}),
        (SECPKG_CRED_INBOUND, {"accounts": [{"username": "a"}]}),
    ],
)
def test_malformed_auth_data(pkg: NtlmPackage, use: int, data: Any) -> None:
    r = pkg.acquire(None, use, data)
    assert (r.status, r.credential) == (st.SEC_E_UNKNOWN_CREDENTIALS, None)


def test_acquire_without_identity_or_direction(pkg: NtlmPackage) -> None:
    assert pkg.acquire(None, SECPKG_CRED_OUTBOUND, None).status == st.SEC_E_NO_CREDENTIALS
    assert pkg.acquire(None, 0, ALICE).status == st.SEC_E_NO_CREDENTIALS
    assert pkg.acquire(None, SECPKG_CRED_INBOUND, None).status == st.SEC_E_OK


def test_credential_direction_mismatch(pkg: NtlmPackage) -> None:
    """CALL-8/SCH-4: ISC needs OUTBOUND, ASC needs INBOUND; first legs need a credential."""
    hs = Handshake(pkg)
    _, negotiate = hs.isc1()
    cases = [
        pkg.initialize(None, None, None, SEAL_REQ, None, out()),
        pkg.initialize(hs.scred, None, None, SEAL_REQ, None, out()),
        pkg.accept(None, None, tok(negotiate), 0, out()),
        pkg.accept(hs.ccred, None, tok(negotiate), 0, out()),
    ]
    for r in cases:
        assert (r.status, r.context) == (st.SEC_E_NO_CREDENTIALS, None)


def test_wrong_role_and_foreign_handles(pkg: NtlmPackage) -> None:
    hs = Handshake(pkg)
    _, negotiate = hs.isc1()
    _, challenge = hs.asc1(negotiate)
    assert pkg.initialize(None, hs.sctx, None, 0, tok(challenge), out()).status == st.SEC_E_INVALID_HANDLE
    assert pkg.accept(None, hs.cctx, tok(negotiate), 0, out()).status == st.SEC_E_INVALID_HANDLE
    assert pkg.initialize(None, object(), None, 0, tok(challenge), out()).status == st.SEC_E_INVALID_HANDLE
    assert pkg.initialize(object(), None, None, 0, None, out()).status == st.SEC_E_INVALID_HANDLE


def test_completed_context_called_again(pkg: NtlmPackage) -> None:
    hs = Handshake(pkg)
    _, negotiate = hs.isc1()
    _, challenge = hs.asc1(negotiate)
    r3, authenticate = hs.isc2(challenge)
    r4 = hs.asc2(authenticate)
    again_c, _ = hs.isc2(challenge)
    again_s = hs.asc2(authenticate)
    assert (again_c.status, again_s.status) == (st.SEC_E_INVALID_HANDLE, st.SEC_E_INVALID_HANDLE)
    assert (again_c.attributes, again_s.attributes) == (r3.attributes, r4.attributes)
    _roundtrip(pkg, hs.cctx, hs.sctx, b"still usable")


def test_freed_credentials(pkg: NtlmPackage) -> None:
    hs = Handshake(pkg)
    _, negotiate = hs.isc1()
    _, challenge = hs.asc1(negotiate)
    assert pkg.free_credentials(hs.ccred) == st.SEC_E_OK
    assert pkg.free_credentials(hs.scred) == st.SEC_E_OK
    assert pkg.free_credentials(hs.scred) == st.SEC_E_INVALID_HANDLE
    # contexts built earlier finish their handshake (they hold what they need)
    r3, authenticate = hs.isc2(challenge)
    assert (r3.status, hs.asc2(authenticate).status) == (st.SEC_E_OK, st.SEC_E_OK)
    # but a freed credential cannot start a new one
    assert hs.isc1()[0].status == st.SEC_E_INVALID_HANDLE
    assert hs.asc1(negotiate)[0].status == st.SEC_E_INVALID_HANDLE


def test_delete(pkg: NtlmPackage) -> None:
    hs = Handshake(pkg)
    _, negotiate = hs.isc1()
    _, challenge = hs.asc1(negotiate)
    assert pkg.delete(hs.cctx) == st.SEC_E_OK
    assert pkg.delete(hs.cctx) == st.SEC_E_INVALID_HANDLE
    assert hs.isc2(challenge)[0].status == st.SEC_E_INVALID_HANDLE
    assert pkg.delete(object()) == st.SEC_E_INVALID_HANDLE


# ---- isolation: no files, no environment, threads ------------------------------------------


def test_no_temp_files_and_environment_untouched(pkg: NtlmPackage, monkeypatch: pytest.MonkeyPatch) -> None:
    decoy = tempfile.NamedTemporaryFile("w", suffix=".ntlm", delete=False)
    try:
        decoy.write("CORP:alice:decoy-password\n")
        decoy.close()
        monkeypatch.setenv("NTLM_USER_FILE", decoy.name)
        tmp = tempfile.gettempdir()
        before = set(os.listdir(tmp))
        hs = Handshake(pkg)
        *_, r4 = hs.run()
        # the credential's own accounts decide, not the process-wide user file
        assert r4.status == st.SEC_E_OK
        *_, r4 = Handshake(pkg, client={**ALICE, "password": "decoy-password"}).run()
        assert r4.status == st.SEC_E_LOGON_DENIED
        assert pkg.free_credentials(hs.scred) == st.SEC_E_OK
        assert set(os.listdir(tmp)) == before
        assert os.environ["NTLM_USER_FILE"] == decoy.name
        # pyspnego's own acceptor, outside the package, still reads the user file
        client = spnego.client(
            "CORP\\alice", "decoy-password", protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm
        )
        server = spnego.server(protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm)
        server.step(client.step(server.step(client.step())))
        assert server.complete
    finally:
        os.unlink(decoy.name)


def test_concurrent_handshakes_use_their_own_accounts(pkg: NtlmPackage) -> None:
    """Two server credentials with different passwords for the same user, in two threads."""
    rounds = 30
    barrier = threading.Barrier(2)
    results: dict[str, list[tuple[int, int]]] = {"one": [], "two": []}
    errors: list[BaseException] = []

    def worker(name: str, password: str, other: str) -> None:
        try:
            server = {"accounts": [{**ALICE, "password": password}]}
            barrier.wait()
            for _ in range(rounds):
                good = Handshake(pkg, client={**ALICE, "password": password}, server=server).run()[3]
                bad = Handshake(pkg, client={**ALICE, "password": other}, server=server).run()[3]
                results[name].append((good.status, bad.status))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [
        threading.Thread(target=worker, args=("one", "pw-one", "pw-two")),
        threading.Thread(target=worker, args=("two", "pw-two", "pw-one")),
    ]
    # Switch threads very often so the two account tables are in use at the same moments.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors
    for name in results:
        assert results[name] == [(st.SEC_E_OK, st.SEC_E_LOGON_DENIED)] * rounds, name


# ---- after the handshake -----------------------------------------------------------------


def _roundtrip(pkg: NtlmPackage, sender: Any, receiver: Any, message: bytes) -> list[SecBuffer]:
    bufs = [SecBuffer(SECBUFFER_TOKEN, b"", 16), SecBuffer(SECBUFFER_DATA, message)]
    assert pkg.encrypt(sender, 0, bufs) == st.SEC_E_OK
    assert bufs[0].size == 16 and bufs[1].data != message and len(bufs[1].data) == len(message)
    assert pkg.decrypt(receiver, bufs) == (st.SEC_E_OK, 0)
    assert bufs[1].data == message
    return bufs


def _established(pkg: NtlmPackage, req: int = SEAL_REQ) -> Handshake:
    hs = Handshake(pkg, req=req)
    assert [r.status for r in hs.run()][2:] == [st.SEC_E_OK, st.SEC_E_OK]
    return hs


def test_sizes_and_sealing_both_directions(pkg: NtlmPackage) -> None:
    hs = _established(pkg)
    status, sizes = pkg.query_attributes(hs.cctx, SECPKG_ATTR_SIZES)
    assert status == st.SEC_E_OK and isinstance(sizes, ContextSizes)
    assert (sizes.max_signature, sizes.security_trailer) == (16, 16)
    assert pkg.query_attributes(hs.cctx, SECPKG_ATTR_STREAM_SIZES)[0] == st.SEC_E_UNSUPPORTED_FUNCTION
    for i in range(3):
        _roundtrip(pkg, hs.cctx, hs.sctx, b"to server %d" % i)
        _roundtrip(pkg, hs.sctx, hs.cctx, b"to client %d" % i)


def test_tampered_or_replayed_message_is_altered(pkg: NtlmPackage) -> None:
    hs = _established(pkg)
    bufs = [SecBuffer(SECBUFFER_TOKEN, b"", 16), SecBuffer(SECBUFFER_DATA, b"payload")]
    assert pkg.encrypt(hs.cctx, 0, bufs) == st.SEC_E_OK
    data = bytearray(bufs[1].data)
    data[0] ^= 0xFF
    tampered = [SecBuffer(SECBUFFER_TOKEN, bufs[0].data), SecBuffer(SECBUFFER_DATA, bytes(data))]
    assert pkg.decrypt(hs.sctx, tampered)[0] == st.SEC_E_MESSAGE_ALTERED


def test_out_of_order_message_is_altered(pkg: NtlmPackage) -> None:
    hs = _established(pkg)
    first = [SecBuffer(SECBUFFER_TOKEN, b"", 16), SecBuffer(SECBUFFER_DATA, b"one")]
    second = [SecBuffer(SECBUFFER_TOKEN, b"", 16), SecBuffer(SECBUFFER_DATA, b"two")]
    assert pkg.encrypt(hs.cctx, 0, first) == st.SEC_E_OK
    assert pkg.encrypt(hs.cctx, 0, second) == st.SEC_E_OK
    assert pkg.decrypt(hs.sctx, second)[0] == st.SEC_E_MESSAGE_ALTERED


def test_sealing_misuse(pkg: NtlmPackage) -> None:
    hs = _established(pkg)
    assert pkg.encrypt(hs.cctx, 1, [SecBuffer(SECBUFFER_TOKEN, b"", 16), SecBuffer(SECBUFFER_DATA, b"x")]) == (
        st.SEC_E_QOP_NOT_SUPPORTED
    )
    assert pkg.encrypt(hs.cctx, 0, [SecBuffer(SECBUFFER_TOKEN, b"", 15), SecBuffer(SECBUFFER_DATA, b"x")]) == (
        st.SEC_E_BUFFER_TOO_SMALL
    )
    assert pkg.encrypt(hs.cctx, 0, [SecBuffer(SECBUFFER_DATA, b"x")]) == st.SEC_E_INVALID_TOKEN
    assert pkg.decrypt(hs.sctx, [SecBuffer(SECBUFFER_TOKEN, b"short"), SecBuffer(SECBUFFER_DATA, b"x")])[0] == (
        st.SEC_E_INVALID_TOKEN
    )
    half = Handshake(pkg)
    half.isc1()
    assert pkg.encrypt(half.cctx, 0, [SecBuffer(SECBUFFER_TOKEN, b"", 16)]) == st.SEC_E_INVALID_HANDLE
    assert pkg.query_attributes(half.cctx, SECPKG_ATTR_SIZES)[0] == st.SEC_E_INVALID_HANDLE
    unsealed = _established(pkg, req=ISC_REQ["INTEGRITY"])
    bufs = [SecBuffer(SECBUFFER_TOKEN, b"", 16), SecBuffer(SECBUFFER_DATA, b"x")]
    assert pkg.encrypt(unsealed.cctx, 0, bufs) == st.SEC_E_UNSUPPORTED_FUNCTION


# ---- wire checks -------------------------------------------------------------------------


def test_wire_check_reports_the_reason(pkg: NtlmPackage) -> None:
    negotiate, challenge, _ = _tokens(pkg)
    assert wire.check(negotiate, wire.NEGOTIATE) == wire.flags_of(negotiate, wire.NEGOTIATE)
    with pytest.raises(wire.MalformedMessage, match="signature"):
        wire.check(b"NTLMSSQ\x00" + negotiate[8:], wire.NEGOTIATE)
    with pytest.raises(wire.MalformedMessage, match="message type 1, expected 2"):
        wire.check(negotiate, wire.CHALLENGE)
    with pytest.raises(wire.MalformedMessage, match="header needs 48"):
        wire.check(challenge[:40], wire.CHALLENGE)
    with pytest.raises(wire.MalformedMessage, match="spans"):
        wire.check(challenge[:-1], wire.CHALLENGE)
