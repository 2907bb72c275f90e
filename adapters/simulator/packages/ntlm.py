"""``NTLM``: the simulator's NTLM package, over pyspnego's pure-Python NTLM.

Handshake (MS-NLMP, connection-oriented)::

    ISC(cred, NULL)             -> NEGOTIATE     SEC_I_CONTINUE_NEEDED  (new handle)
    ASC(cred, NULL, NEGOTIATE)  -> CHALLENGE     SEC_I_CONTINUE_NEEDED  (new handle)
    ISC(-, ctx, CHALLENGE)      -> AUTHENTICATE  SEC_E_OK
    ASC(-, ctx, AUTHENTICATE)   -> (no token)    SEC_E_OK  or SEC_E_LOGON_DENIED

``auth_data`` of ACH is a plain mapping (SEC_WINNT_AUTH_IDENTITY semantics, strings only):

* client (OUTBOUND): ``{"username": str, "password": str, "domain": str}``; ``domain`` is
  optional and ``username`` may carry it as ``DOMAIN\\user`` instead (not both).  The
  password may be empty.  No auth_data means "the logged-on user", which the simulator does
  not have: SEC_E_NO_CREDENTIALS.
* server (INBOUND): ``{"accounts": [{"username", "password", "domain"}, ...]}`` and/or the
  client keys (one account).  No auth_data gives a server that knows no account (every
  AUTHENTICATE is SEC_E_LOGON_DENIED).  An account without a domain accepts any client
  domain; names compare case-insensitively.
* BOTH: the client keys are the client identity; the accounts are ``accounts`` when given,
  else that identity.

Anything else (unknown key, wrong type, NUL in a string, empty username, BOTH forms of the
domain) completes ACH with SEC_E_UNKNOWN_CREDENTIALS.  ``principal`` is ignored, as NTLM
takes the identity from the auth data.  Only password hashes are kept.

Status mapping (all completion statuses of CALL-7/CALL-17/CALL-22):

* ISC first leg without a credential, or with one lacking OUTBOUND; ASC first leg without a
  credential or with one lacking INBOUND: SEC_E_NO_CREDENTIALS (SCH-4, CALL-8).
* credential_use without INBOUND/OUTBOUND: SEC_E_NO_CREDENTIALS.
* a context of the other role, a deleted context, a freed credential, or a context already
  established or failed: SEC_E_INVALID_HANDLE.  NTLM has no re-authentication
  on an established context (contrast SCH-13 for Schannel), so the handle is not valid for
  another handshake leg; the call leaves the context as it was (still usable for
  Encrypt/Decrypt).  SEC_E_INVALID_HANDLE is one of the fatal statuses CALL-17/CALL-22 list.
* missing, garbage, truncated or wrong-type token: SEC_E_INVALID_TOKEN.  NTLM tokens are
  whole messages, so a short one is invalid, never SEC_E_INCOMPLETE_MESSAGE.  A token
  rejected before it was consumed leaves the context unchanged (the caller may retry).
* wrong password, unknown user, anonymous AUTHENTICATE: SEC_E_LOGON_DENIED at the final ASC.
* output TOKEN buffer absent or smaller than the message (without ALLOCATE_MEMORY):
  SEC_E_INSUFFICIENT_MEMORY.
* failure on a first leg: no handle (StepResult.context is None, OQ-20).  Failure on a later
  leg after the token was consumed: the context is marked failed; the caller still owns and
  must delete the handle (OQ-20).

Attributes: ISC_RET/ASC_RET bits follow the NTLM flags in the last message of the leg:
NEGOTIATE_SIGN gives INTEGRITY, REPLAY_DETECT and SEQUENCE_DETECT; NEGOTIATE_SEAL gives
CONFIDENTIALITY.  CONNECTION, EXTENDED_ERROR and ALLOCATE_MEMORY are echoed when requested.

After SEC_E_OK: QueryContextAttributes(SECPKG_ATTR_SIZES) returns :class:`ContextSizes`;
EncryptMessage/DecryptMessage take TOKEN (16-byte signature) + DATA buffers and use NTLM
sealing (needs CONFIDENTIALITY negotiated, qop 0).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import spnego
from spnego.exceptions import BadMICError, InvalidTokenError, SpnegoError

from adapters import status as st
from adapters.api import ContextSizes, SecBuffer
from adapters.constants import (
    ASC_REQ,
    ASC_RET,
    ISC_REQ,
    ISC_RET,
    SECBUFFER_DATA,
    SECBUFFER_TOKEN,
    SECPKG_ATTR_SIZES,
    SECPKG_CRED_INBOUND,
    SECPKG_CRED_OUTBOUND,
)
from adapters.simulator.packages import ntlm_wire as wire
from adapters.simulator.packages.base import (
    NEVER,
    AcquireResult,
    SecurityPackage,
    StepResult,
    first_buffer,
    write_output,
)
from adapters.simulator.packages.ntlm_store import (
    Account,
    AccountTable,
    UnknownAccount,
    serving,
)

_IDENTITY_KEYS = frozenset({"username", "password", "domain"})
_SIGNATURE_SIZE = 16
# SecPkgInfo.cbMaxToken that Windows reports for NTLM.
_MAX_TOKEN = 2888

# ISC_REQ bits -> pyspnego ContextReq bits (the ones that select NTLM sign/seal).
_REQ_TO_PYSPNEGO = (
    (ISC_REQ["REPLAY_DETECT"], spnego.ContextReq.replay_detect),
    (ISC_REQ["SEQUENCE_DETECT"], spnego.ContextReq.sequence_detect),
    (ISC_REQ["CONFIDENTIALITY"], spnego.ContextReq.confidentiality),
    (ISC_REQ["INTEGRITY"], spnego.ContextReq.integrity),
)
# Request bits echoed into the returned attributes: (request bit, returned bit).
_ISC_ECHO = (
    (ISC_REQ["CONNECTION"], ISC_RET["CONNECTION"]),
    (ISC_REQ["EXTENDED_ERROR"], ISC_RET["EXTENDED_ERROR"]),
    (ISC_REQ["ALLOCATE_MEMORY"], ISC_RET["ALLOCATED_MEMORY"]),
)
_ASC_ECHO = (
    (ASC_REQ["CONNECTION"], ASC_RET["CONNECTION"]),
    (ASC_REQ["EXTENDED_ERROR"], ASC_RET["EXTENDED_ERROR"]),
    (ASC_REQ["ALLOCATE_MEMORY"], ASC_RET["ALLOCATED_MEMORY"]),
)


class BadAuthData(ValueError):
    """auth_data does not describe an NTLM identity (SEC_E_UNKNOWN_CREDENTIALS)."""


@dataclass(slots=True)
class NtlmCredential:
    use: int
    identity: Account | None  # client identity (OUTBOUND)
    accounts: AccountTable | None  # accounts accepted (INBOUND)
    freed: bool = False


@dataclass(slots=True, eq=False)
class NtlmContext:
    server: bool
    proxy: Any  # spnego NTLMProxy
    accounts: AccountTable | None
    echo: int  # attribute bits echoed from the first leg's request
    state: str = "continue"  # continue -> complete | failed; deleted
    attributes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise BadAuthData(f"{key} must be a string, not {type(value).__name__}")
    if "\x00" in value:
        raise BadAuthData(f"{key} contains NUL")
    return value


def parse_identity(data: Mapping[str, Any]) -> Account:
    """One account from ``{"username", "password", "domain"}``."""
    unknown = set(data) - _IDENTITY_KEYS
    if unknown:
        raise BadAuthData(f"unknown keys {sorted(unknown)}")
    if "username" not in data or "password" not in data:
        raise BadAuthData("username and password are required")
    username = _text(data["username"], "username")
    password = _text(data["password"], "password")
    domain = _text(data["domain"], "domain") if data.get("domain") is not None else ""
    if "\\" in username:
        if domain:
            raise BadAuthData("domain given twice (DOMAIN\\user and domain)")
        domain, username = username.split("\\", 1)
    if not username or "\\" in username:
        raise BadAuthData("empty or malformed username")
    return Account.from_password(domain, username, password)


def parse_auth_data(use: int, auth_data: Mapping[str, Any] | None) -> NtlmCredential:
    """Build a credential; BadAuthData for malformed data, LookupError for no identity."""
    if auth_data is not None and not isinstance(auth_data, Mapping):
        raise BadAuthData(f"auth_data must be a mapping, not {type(auth_data).__name__}")
    data = dict(auth_data or {})
    inbound, outbound = bool(use & SECPKG_CRED_INBOUND), bool(use & SECPKG_CRED_OUTBOUND)
    listed = data.pop("accounts", None)
    if listed is not None and not inbound:
        raise BadAuthData("accounts given for an OUTBOUND-only credential")
    identity = parse_identity(data) if data else None
    if outbound and identity is None:
        raise LookupError("no identity and no logged-on user")
    accounts: AccountTable | None = None
    if inbound:
        if listed is None:
            chosen = [identity] if identity is not None else []
        elif isinstance(listed, (list, tuple)):
            chosen = [parse_identity(_mapping(a)) for a in listed]
            if identity is not None and not outbound:
                chosen.append(identity)
        else:
            raise BadAuthData("accounts must be a list of mappings")
        accounts = AccountTable(chosen)
    return NtlmCredential(use, identity if outbound else None, accounts)


def _mapping(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise BadAuthData(f"account must be a mapping, not {type(value).__name__}")
    return value


def _ret_bits(ntlm_flags: int, request: int, server: bool) -> int:
    table = ASC_RET if server else ISC_RET
    bits = 0
    if ntlm_flags & wire.FLAG_SIGN:
        bits |= table["INTEGRITY"] | table["REPLAY_DETECT"] | table["SEQUENCE_DETECT"]
    if ntlm_flags & wire.FLAG_SEAL:
        bits |= table["CONFIDENTIALITY"]
    for req, ret in _ASC_ECHO if server else _ISC_ECHO:
        if request & req:
            bits |= ret
    return bits


def _pyspnego_req(context_req: int) -> spnego.ContextReq:
    value = spnego.ContextReq.none
    for bit, flag in _REQ_TO_PYSPNEGO:
        if context_req & bit:
            value |= flag
    return value


def _input_token(input: list[SecBuffer] | None) -> bytes | None:
    buf = first_buffer(input, SECBUFFER_TOKEN)
    if buf is None or not buf.data:
        return None
    return bytes(buf.data[: buf.cb])


class NtlmPackage(SecurityPackage):
    names = ("NTLM",)
    features = frozenset({"client", "server"})

    # ---- credentials ------------------------------------------------------------------
    def acquire(self, principal: str | None, credential_use: int, auth_data: Mapping[str, Any] | None) -> AcquireResult:
        if not credential_use & (SECPKG_CRED_INBOUND | SECPKG_CRED_OUTBOUND):
            return AcquireResult(st.SEC_E_NO_CREDENTIALS)
        try:
            credential = parse_auth_data(credential_use, auth_data)
        except BadAuthData:
            return AcquireResult(st.SEC_E_UNKNOWN_CREDENTIALS)
        except LookupError:
            return AcquireResult(st.SEC_E_NO_CREDENTIALS)
        return AcquireResult(st.SEC_E_OK, credential, NEVER)

    def free_credentials(self, credential: Any) -> int:
        if not isinstance(credential, NtlmCredential) or credential.freed:
            return st.SEC_E_INVALID_HANDLE
        # Contexts built on it keep their own references (CALL-28 asks callers to free
        # credentials last, but an early free must not break a running handshake).
        credential.freed = True
        credential.identity = None
        credential.accounts = None
        return st.SEC_E_OK

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
        allocate = bool(context_req & ISC_REQ["ALLOCATE_MEMORY"])
        if context is None:
            return self._client_first(credential, context_req, output, allocate)
        if not isinstance(context, NtlmContext) or context.server:
            return StepResult(st.SEC_E_INVALID_HANDLE, context)
        with context.lock:
            if context.state != "continue":
                return StepResult(st.SEC_E_INVALID_HANDLE, context, context.attributes)
            token = _input_token(input)
            try:
                if token is None:
                    raise wire.MalformedMessage("no input TOKEN buffer")
                wire.check(token, wire.CHALLENGE)
            except wire.MalformedMessage:
                return StepResult(st.SEC_E_INVALID_TOKEN, context, context.attributes)
            try:
                reply = context.proxy.step(token)
            except Exception:  # hostile CHALLENGE content pyspnego cannot use
                context.state = "failed"
                return StepResult(st.SEC_E_INVALID_TOKEN, context)
            if not reply or not write_output(output, SECBUFFER_TOKEN, reply, allocate):
                context.state = "failed"  # the AUTHENTICATE cannot be produced again
                return StepResult(st.SEC_E_INSUFFICIENT_MEMORY, context)
            context.state = "complete"
            context.attributes = _ret_bits(wire.flags_of(reply, wire.AUTHENTICATE), context.echo, server=False)
            return StepResult(st.SEC_E_OK, context, context.attributes, NEVER)

    def _client_first(
        self, credential: Any, context_req: int, output: list[SecBuffer] | None, allocate: bool
    ) -> StepResult:
        if credential is None:
            return StepResult(st.SEC_E_NO_CREDENTIALS)
        if not isinstance(credential, NtlmCredential) or credential.freed:
            return StepResult(st.SEC_E_INVALID_HANDLE)
        identity = credential.identity
        if not credential.use & SECPKG_CRED_OUTBOUND or identity is None:
            return StepResult(st.SEC_E_NO_CREDENTIALS)  # CALL-8, SCH-4
        name = f"{identity.domain}\\{identity.username}" if identity.domain else identity.username
        try:
            proxy = spnego.client(
                spnego.NTLMHash(name, identity.lm_hash.hex(), identity.nt_hash.hex()),
                context_req=_pyspnego_req(context_req),
                protocol="ntlm",
                options=spnego.NegotiateOptions.use_ntlm,
            )
            negotiate = proxy.step()
        except SpnegoError:  # e.g. an invalid LM_COMPAT_LEVEL in the environment
            return StepResult(st.SEC_E_INTERNAL_ERROR)
        if not negotiate or not write_output(output, SECBUFFER_TOKEN, negotiate, allocate):
            return StepResult(st.SEC_E_INSUFFICIENT_MEMORY)  # OQ-20: no handle
        context = NtlmContext(server=False, proxy=proxy, accounts=None, echo=context_req)
        context.attributes = _ret_bits(wire.flags_of(negotiate, wire.NEGOTIATE), context_req, server=False)
        return StepResult(st.SEC_I_CONTINUE_NEEDED, context, context.attributes, NEVER)

    def accept(
        self,
        credential: Any,
        context: Any,
        input: list[SecBuffer] | None,
        context_req: int,
        output: list[SecBuffer] | None,
    ) -> StepResult:
        allocate = bool(context_req & ASC_REQ["ALLOCATE_MEMORY"])
        if context is None:
            return self._server_first(credential, input, context_req, output, allocate)
        if not isinstance(context, NtlmContext) or not context.server:
            return StepResult(st.SEC_E_INVALID_HANDLE, context)
        with context.lock:
            if context.state != "continue":
                return StepResult(st.SEC_E_INVALID_HANDLE, context, context.attributes)
            token = _input_token(input)
            try:
                if token is None:
                    raise wire.MalformedMessage("no input TOKEN buffer")
                flags = wire.check(token, wire.AUTHENTICATE)
            except wire.MalformedMessage:
                return StepResult(st.SEC_E_INVALID_TOKEN, context, context.attributes)
            status = self._authenticate(context, token)
            if status != st.SEC_E_OK:
                context.state = "failed"
                return StepResult(status, context)
            # The final ASC leg sends nothing: empty the output token so no stale bytes go out.
            write_output(output, SECBUFFER_TOKEN, b"", True)
            context.state = "complete"
            context.attributes = _ret_bits(flags, context.echo, server=True)
            return StepResult(st.SEC_E_OK, context, context.attributes, NEVER)

    @staticmethod
    def _authenticate(context: NtlmContext, token: bytes) -> int:
        accounts = context.accounts if context.accounts is not None else AccountTable([])
        try:
            with serving(accounts):
                context.proxy.step(token)
        except (UnknownAccount, InvalidTokenError, spnego.exceptions.OperationNotAvailableError):
            # pyspnego reports a wrong NT/LM proof, a bad MIC and an anonymous logon this way;
            # the frame itself was already checked, so these are failed logons.
            return st.SEC_E_LOGON_DENIED
        except Exception:  # hostile payload inside a well-framed AUTHENTICATE
            return st.SEC_E_INVALID_TOKEN
        return st.SEC_E_OK

    def _server_first(
        self,
        credential: Any,
        input: list[SecBuffer] | None,
        context_req: int,
        output: list[SecBuffer] | None,
        allocate: bool,
    ) -> StepResult:
        if credential is None:
            return StepResult(st.SEC_E_NO_CREDENTIALS)
        if not isinstance(credential, NtlmCredential) or credential.freed:
            return StepResult(st.SEC_E_INVALID_HANDLE)
        if not credential.use & SECPKG_CRED_INBOUND or credential.accounts is None:
            return StepResult(st.SEC_E_NO_CREDENTIALS)  # CALL-8
        token = _input_token(input)
        try:
            if token is None:
                raise wire.MalformedMessage("no input TOKEN buffer")
            wire.check(token, wire.NEGOTIATE)
        except wire.MalformedMessage:
            return StepResult(st.SEC_E_INVALID_TOKEN)
        accounts = credential.accounts
        try:
            with serving(accounts):
                proxy = spnego.server(protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm)
                challenge = proxy.step(token)
        except Exception:  # e.g. a NEGOTIATE with neither OEM nor UNICODE
            return StepResult(st.SEC_E_INVALID_TOKEN)
        if not challenge or not write_output(output, SECBUFFER_TOKEN, challenge, allocate):
            return StepResult(st.SEC_E_INSUFFICIENT_MEMORY)  # OQ-20: no handle
        context = NtlmContext(server=True, proxy=proxy, accounts=accounts, echo=context_req)
        context.attributes = _ret_bits(wire.flags_of(challenge, wire.CHALLENGE), context_req, server=True)
        return StepResult(st.SEC_I_CONTINUE_NEEDED, context, context.attributes, NEVER)

    def delete(self, context: Any) -> int:
        if not isinstance(context, NtlmContext) or context.state == "deleted":
            return st.SEC_E_INVALID_HANDLE
        with context.lock:
            context.state = "deleted"
            context.proxy = None
            context.accounts = None
        return st.SEC_E_OK

    # ---- after the handshake ----------------------------------------------------------
    def query_attributes(self, context: Any, attribute: int) -> tuple[int, Any]:
        if not isinstance(context, NtlmContext) or context.state != "complete":
            return st.SEC_E_INVALID_HANDLE, None
        if attribute != SECPKG_ATTR_SIZES:
            return st.SEC_E_UNSUPPORTED_FUNCTION, None
        return st.SEC_E_OK, ContextSizes(_MAX_TOKEN, _SIGNATURE_SIZE, 0, _SIGNATURE_SIZE)

    def encrypt(self, context: Any, qop: int, buffers: list[SecBuffer]) -> int:
        status = self._sealing_ready(context)
        if status != st.SEC_E_OK:
            return status
        if qop:
            return st.SEC_E_QOP_NOT_SUPPORTED
        token = first_buffer(buffers, SECBUFFER_TOKEN)
        data = first_buffer(buffers, SECBUFFER_DATA)
        if token is None or data is None:
            return st.SEC_E_INVALID_TOKEN
        if token.cb < _SIGNATURE_SIZE:
            return st.SEC_E_BUFFER_TOO_SMALL
        with context.lock:
            sealed = context.proxy.wrap(bytes(data.data[: data.cb])).data
        token.data, token.size = sealed[:_SIGNATURE_SIZE], _SIGNATURE_SIZE
        data.data, data.size = sealed[_SIGNATURE_SIZE:], len(sealed) - _SIGNATURE_SIZE
        return st.SEC_E_OK

    def decrypt(self, context: Any, buffers: list[SecBuffer]) -> tuple[int, int]:
        status = self._sealing_ready(context)
        if status != st.SEC_E_OK:
            return status, 0
        token = first_buffer(buffers, SECBUFFER_TOKEN)
        data = first_buffer(buffers, SECBUFFER_DATA)
        if token is None or data is None or token.cb < _SIGNATURE_SIZE:
            return st.SEC_E_INVALID_TOKEN, 0
        signature = bytes(token.data[:_SIGNATURE_SIZE])
        with context.lock:
            try:
                plain = context.proxy.unwrap(signature + bytes(data.data[: data.cb])).data
            except BadMICError:
                return st.SEC_E_MESSAGE_ALTERED, 0
        data.data, data.size = plain, len(plain)
        return st.SEC_E_OK, 0

    @staticmethod
    def _sealing_ready(context: Any) -> int:
        if not isinstance(context, NtlmContext) or context.state != "complete":
            return st.SEC_E_INVALID_HANDLE
        if not context.attributes & (ASC_RET if context.server else ISC_RET)["CONFIDENTIALITY"]:
            return st.SEC_E_UNSUPPORTED_FUNCTION  # no NEGOTIATE_SEAL: nothing to seal with
        return st.SEC_E_OK
