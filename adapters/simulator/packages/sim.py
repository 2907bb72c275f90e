"""``Sim``: a deterministic, crypto-free handshake package.

It exists so that every status the contract lists for ACH, ISC, ASC, Delete and
FreeCredentials can be produced on demand, quickly and without real cryptography.

Wire format of one token (all integers big-endian)::

    b"SIM1" | leg:u8 | legs:u8 | kind:u8 | name_len:u8 | name | pad_len:u16 | pad | crc32:u32

``kind`` is 1 for a client message and 2 for a server message.  ``name`` is the user
(client messages) or the server's principal name (server messages).  The client's last
message carries ``proof`` = crc32(password) in place of the padding's first 4 bytes.
Messages alternate client, server, client... for ``legs`` messages in total; the side that
sends the last one returns SEC_E_OK with it (a final token, CALL-16/SCH-10), the side that
receives it returns SEC_E_OK with no output.

Credentials (``auth_data``), all keys optional:

client:  ``user`` ("alice"), ``password`` ("secret"), ``legs`` (2, 1..8),
         ``token_size`` (padding bytes, 16, 0..65000), ``stream`` (False; True makes partial
         input SEC_E_INCOMPLETE_MESSAGE + MISSING and surplus input EXTRA, as Schannel does;
         False makes it SEC_E_INVALID_TOKEN, as NTLM does), ``inject`` (below).
server:  ``name`` ("server.test"), ``accounts`` ({"alice": "secret"}), ``legs``, ``token_size``,
         ``stream``, ``authority`` ("reachable" or "unreachable": CALL-9), ``inject``.

``inject`` maps a leg number (as a string, "1"..) or "acquire" to a status name that the
package returns at that point instead of doing the work (e.g. {"2": "SEC_I_COMPLETE_NEEDED"}).

Natural failures: unknown package (simulator), malformed auth_data -> SEC_E_UNKNOWN_CREDENTIALS,
``principal`` given and different from ``user`` -> SEC_E_NOT_OWNER, no usable credential for
the direction -> SEC_E_NO_CREDENTIALS, ISC/ASC_REQ_DELEGATE or ISC_REQ_PROMPT_FOR_CREDS ->
SEC_E_UNSUPPORTED_FUNCTION (CALL-17/22), empty target -> SEC_E_TARGET_UNKNOWN, mutual auth
with a target other than the server's name -> SEC_E_WRONG_PRINCIPAL, wrong password or unknown
user -> SEC_E_LOGON_DENIED, garbage -> SEC_E_INVALID_TOKEN, output buffer too small ->
SEC_E_INSUFFICIENT_MEMORY, completed context called again -> SEC_E_INVALID_TOKEN... see code.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters import status as st
from adapters.api import SecBuffer
from adapters.constants import (
    ASC_REQ,
    ASC_RET,
    ISC_REQ,
    ISC_RET,
    SECBUFFER_TOKEN,
    SECPKG_CRED_INBOUND,
    SECPKG_CRED_OUTBOUND,
)
from adapters.simulator.packages.base import (
    NEVER,
    AcquireResult,
    PackageProfile,
    SecurityPackage,
    StepResult,
    first_buffer,
    report_extra,
    report_missing,
    write_output,
)

MAGIC = b"SIM1"
_HEAD = struct.Struct(">4sBBBB")  # magic, leg, legs, kind, name_len
CLIENT, SERVER = 1, 2
_CLIENT_KEYS = {"user", "password", "legs", "token_size", "stream", "inject", "domain"}
_SERVER_KEYS = {"name", "accounts", "legs", "token_size", "stream", "authority", "inject"}


@dataclass(frozen=True, slots=True)
class SimCredential:
    use: int
    user: str = "alice"
    password: str = "secret"
    name: str = "server.test"
    accounts: Mapping[str, str] | None = None
    legs: int = 2
    token_size: int = 16
    stream: bool = False
    authority: str = "reachable"
    inject: Mapping[str, int] | None = None


@dataclass(slots=True)
class SimContext:
    side: int
    credential: SimCredential
    next_leg: int  # the leg number this side expects to receive next (or send, for leg 1)
    done: bool = False
    peer: str = ""
    target: str | None = None


def encode(leg: int, legs: int, kind: int, name: str, pad: bytes) -> bytes:
    raw_name = name.encode("utf-8")[:255]
    body = _HEAD.pack(MAGIC, leg, legs, kind, len(raw_name)) + raw_name + struct.pack(">H", len(pad)) + pad
    return body + struct.pack(">I", zlib.crc32(body))


def _padding(size: int, leg: int, seed: str) -> bytes:
    base = (seed.encode("utf-8") + bytes([leg])) or b"\0"
    return (base * (size // len(base) + 1))[:size]


class _Partial(Exception):
    def __init__(self, missing: int) -> None:
        self.missing = missing


class _Garbage(Exception):
    pass


def decode(data: bytes) -> tuple[int, int, int, str, bytes, int]:
    """(leg, legs, kind, name, pad, consumed); raises _Partial or _Garbage."""
    if len(data) < _HEAD.size:
        if MAGIC.startswith(data[:4]):
            raise _Partial(_HEAD.size - len(data) + 6)
        raise _Garbage
    magic, leg, legs, kind, name_len = _HEAD.unpack_from(data)
    if magic != MAGIC or kind not in (CLIENT, SERVER) or not 1 <= leg <= legs:
        raise _Garbage
    pos = _HEAD.size + name_len
    if len(data) < pos + 2:
        raise _Partial(pos + 2 - len(data) + 4)
    (pad_len,) = struct.unpack_from(">H", data, pos)
    end = pos + 2 + pad_len + 4
    if len(data) < end:
        raise _Partial(end - len(data))
    (crc,) = struct.unpack_from(">I", data, end - 4)
    if crc != zlib.crc32(data[: end - 4]):
        raise _Garbage
    try:
        name = data[_HEAD.size : pos].decode("utf-8")
    except UnicodeDecodeError:
        raise _Garbage from None
    return leg, legs, kind, name, data[pos + 2 : end - 4], end


def _proof(password: str) -> bytes:
    return struct.pack(">I", zlib.crc32(password.encode("utf-8")))


class HandshakePackage(SecurityPackage):
    names = ("Sim", "SimHandshake")
    features = frozenset({"client", "server"})

    def __init__(self, profile: PackageProfile) -> None:
        super().__init__(profile)
        self._defaults: dict[int, SimCredential] = {}

    # ---- credentials ------------------------------------------------------------------
    def acquire(
        self, principal: str | None, credential_use: int, auth_data: Mapping[str, Any] | None
    ) -> AcquireResult:
        if not auth_data and principal is None and credential_use in self._defaults:
            # Credentials are immutable, so the default one can be shared (hot path of benchmarks).
            return AcquireResult(st.SEC_E_OK, self._defaults[credential_use], NEVER)
        data = dict(auth_data or {})
        inject = data.get("inject") or {}
        try:
            injected = {str(k): st.parse(v) for k, v in dict(inject).items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            return AcquireResult(st.SEC_E_UNKNOWN_CREDENTIALS)
        if "acquire" in injected:
            return AcquireResult(injected["acquire"])
        allowed = (_CLIENT_KEYS if credential_use & SECPKG_CRED_OUTBOUND else set()) | (
            _SERVER_KEYS if credential_use & SECPKG_CRED_INBOUND else set()
        )
        if not credential_use & (SECPKG_CRED_INBOUND | SECPKG_CRED_OUTBOUND):
            return AcquireResult(st.SEC_E_NO_CREDENTIALS)
        if set(data) - allowed:
            return AcquireResult(st.SEC_E_UNKNOWN_CREDENTIALS)
        try:
            cred = SimCredential(
                use=credential_use,
                user=str(data.get("user", "alice")),
                password=str(data.get("password", "secret")),
                name=str(data.get("name", "server.test")),
                accounts=dict(data.get("accounts", {"alice": "secret"})),
                legs=int(data.get("legs", 2)),
                token_size=int(data.get("token_size", 16)),
                stream=bool(data.get("stream", False)),
                authority=str(data.get("authority", "reachable")),
                inject=injected,
            )
        except (TypeError, ValueError):
            return AcquireResult(st.SEC_E_UNKNOWN_CREDENTIALS)
        if not 1 <= cred.legs <= 8 or not 0 <= cred.token_size <= 65000:
            return AcquireResult(st.SEC_E_UNKNOWN_CREDENTIALS)
        if principal is not None and credential_use & SECPKG_CRED_OUTBOUND and principal != cred.user:
            return AcquireResult(st.SEC_E_NOT_OWNER)
        if not auth_data and principal is None:
            self._defaults[credential_use] = cred
        return AcquireResult(st.SEC_E_OK, cred, NEVER)

    # ---- handshake --------------------------------------------------------------------
    def initialize(
        self,
        credential: Any,
        context: Any,
        target: str | None,
        context_req: int,
        input: list[SecBuffer] | None,
        output: list[SecBuffer] | None,
    ) -> StepResult:
        if context_req & (ISC_REQ["DELEGATE"] | ISC_REQ["PROMPT_FOR_CREDS"]):
            return StepResult(st.SEC_E_UNSUPPORTED_FUNCTION, context)
        if context is None:
            if not isinstance(credential, SimCredential) or not credential.use & SECPKG_CRED_OUTBOUND:
                return StepResult(st.SEC_E_NO_CREDENTIALS)
            if target is not None and not target.strip():
                return StepResult(st.SEC_E_TARGET_UNKNOWN)
            context = SimContext(CLIENT, credential, 1, target=target)
        elif not isinstance(context, SimContext) or context.side != CLIENT:
            return StepResult(st.SEC_E_INVALID_HANDLE, context)
        allocate = bool(context_req & ISC_REQ["ALLOCATE_MEMORY"])
        attrs = ISC_RET["ALLOCATED_MEMORY"] if allocate else 0
        mutual = bool(context_req & ISC_REQ["MUTUAL_AUTH"])
        return self._step(context, input, output, allocate, attrs, mutual)

    def accept(
        self,
        credential: Any,
        context: Any,
        input: list[SecBuffer] | None,
        context_req: int,
        output: list[SecBuffer] | None,
    ) -> StepResult:
        if context_req & ASC_REQ["DELEGATE"]:
            return StepResult(st.SEC_E_UNSUPPORTED_FUNCTION, context)
        if context is None:
            if not isinstance(credential, SimCredential) or not credential.use & SECPKG_CRED_INBOUND:
                return StepResult(st.SEC_E_NO_CREDENTIALS)
            context = SimContext(SERVER, credential, 1)
        elif not isinstance(context, SimContext) or context.side != SERVER:
            return StepResult(st.SEC_E_INVALID_HANDLE, context)
        allocate = bool(context_req & ASC_REQ["ALLOCATE_MEMORY"])
        attrs = ASC_RET["ALLOCATED_MEMORY"] if allocate else 0
        return self._step(context, input, output, allocate, attrs, False)

    def _step(
        self,
        ctx: SimContext,
        input: list[SecBuffer] | None,
        output: list[SecBuffer] | None,
        allocate: bool,
        attrs: int,
        mutual: bool,
    ) -> StepResult:
        """Consume the peer's message (if this side does not open), then send ours."""
        cred = ctx.credential
        fresh = ctx.next_leg == 1 and ctx.side == CLIENT and not ctx.done
        keep = None if (ctx.next_leg == 1 and not ctx.done) else ctx  # OQ-20: no handle on failure
        if ctx.done:
            return StepResult(st.SEC_E_INVALID_TOKEN, ctx)  # already established
        injected = cred.inject.get(str(ctx.next_leg)) if cred.inject else None
        if injected is not None and injected != st.SEC_E_OK:
            return StepResult(injected, None if st.failed(injected) else ctx)
        legs = cred.legs
        if not fresh:
            token = first_buffer(input, SECBUFFER_TOKEN)
            if token is None or not token.data:
                return StepResult(st.SEC_E_INVALID_TOKEN, keep)
            data = token.data[: token.cb]
            try:
                leg, their_legs, kind, name, pad, used = decode(data)
            except _Partial as partial:
                if cred.stream:
                    report_missing(input, partial.missing)
                    return StepResult(st.SEC_E_INCOMPLETE_MESSAGE, keep)
                return StepResult(st.SEC_E_INVALID_TOKEN, keep)
            except _Garbage:
                return StepResult(st.SEC_E_INVALID_TOKEN, keep)
            expected_kind = SERVER if ctx.side == CLIENT else CLIENT
            if kind != expected_kind or leg != ctx.next_leg or their_legs != legs:
                return StepResult(st.SEC_E_INVALID_TOKEN, keep)
            if used < len(data):
                if not cred.stream:
                    return StepResult(st.SEC_E_INVALID_TOKEN, keep)
                report_extra(input, len(data) - used)
            ctx.peer = name
            if ctx.side == SERVER:
                status = self._check_client(cred, leg, legs, name, pad)
                if status != st.SEC_E_OK:
                    return StepResult(status, keep)
            elif mutual and leg == self._last_server_leg(legs) and ctx.target not in (None, name):
                return StepResult(st.SEC_E_WRONG_PRINCIPAL, keep)
            if leg == legs:  # we received the last message: done, nothing to send
                ctx.done = True
                return StepResult(st.SEC_E_OK, ctx, attrs | self._final_attrs(ctx, mutual), NEVER)
            ctx.next_leg = leg + 1
        # send our message for ctx.next_leg
        my_leg = ctx.next_leg
        name = cred.user if ctx.side == CLIENT else cred.name
        pad = _padding(cred.token_size, my_leg, name)
        if ctx.side == CLIENT and my_leg == self._last_client_leg(legs):
            pad = _proof(cred.password) + pad[4:]
        message = encode(my_leg, legs, ctx.side, name, pad)
        if not write_output(output, SECBUFFER_TOKEN, message, allocate):
            return StepResult(st.SEC_E_INSUFFICIENT_MEMORY, keep)
        if my_leg == legs:
            ctx.done = True
            return StepResult(st.SEC_E_OK, ctx, attrs | self._final_attrs(ctx, mutual), NEVER)
        ctx.next_leg = my_leg + 1
        return StepResult(st.SEC_I_CONTINUE_NEEDED, ctx, attrs)

    @staticmethod
    def _last_client_leg(legs: int) -> int:
        return legs if legs % 2 == 1 else legs - 1

    @staticmethod
    def _last_server_leg(legs: int) -> int:
        return legs if legs % 2 == 0 else legs - 1

    def _check_client(self, cred: SimCredential, leg: int, legs: int, user: str, pad: bytes) -> int:
        if leg != self._last_client_leg(legs):
            return st.SEC_E_OK
        if cred.authority == "unreachable":
            return st.SEC_E_NO_AUTHENTICATING_AUTHORITY
        accounts = cred.accounts or {}
        if user not in accounts or pad[:4] != _proof(accounts[user]):
            return st.SEC_E_LOGON_DENIED
        return st.SEC_E_OK

    @staticmethod
    def _final_attrs(ctx: SimContext, mutual: bool) -> int:
        if ctx.side == CLIENT:
            return ISC_RET["CONNECTION"] | (ISC_RET["MUTUAL_AUTH"] if mutual else 0)
        return ASC_RET["CONNECTION"]
