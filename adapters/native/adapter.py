"""NativeAdapter: the async SSPI contract over a real SSPI library's synchronous C ABI.

Each async operation is queued on an adapter-implemented async context
(:mod:`adapters.native.asyncctx`) and executed on a worker thread by its synchronous
twin (GEN-5).  Arguments are translated to C at execution time and the out-parameters
are copied into the caller's :class:`CallOutputs` / SecBuffer objects at completion
(GEN-10, OQ-10).

What the adapter checks on the side (reported through :meth:`diagnostics`):

* buffer overruns, via guard zones (:mod:`adapters.native.buffers`): implementation;
* handle accounting: double free/delete, use after delete, freeing credentials still in
  use by contexts, overlapping calls on one context, leaks at close(): caller.

Misused handles are still passed through to the library: what it does with them is part
of the verdict.  Crashes are contained by running this adapter in a child process
(see :func:`adapters.native.create`).
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Callable, Mapping
from typing import Any

from adapters import status as st
from adapters.api import (
    Adapter,
    Callback,
    CallOutputs,
    Capabilities,
    ContextSizes,
    Handle,
    SecBuffer,
    StreamSizes,
    Unsupported,
    Violation,
)
from adapters.constants import ASC_REQ, ISC_REQ, SECPKG_ATTR_SIZES, SECPKG_ATTR_STREAM_SIZES
from adapters.native import ffi
from adapters.native.asyncctx import AsyncEngine
from adapters.native.buffers import DEFAULT_GUARD, CBufferDesc, Overrun
from adapters.native.handles import NativeContext, NativeCredential, RawHandle
from adapters.native.library import SspiLibrary, load

# Written into ptsExpiry before the call; still there afterwards means "not written".
_EXPIRY_SENTINEL = -0x5A5A5A5A5A5A5A5B
AUTH_KEYS = frozenset({"username", "password", "domain"})
_IDENTITY_CACHE = 64
PROBE_PACKAGES = ("Negotiate", "NTLM", "Kerberos")


def _auth_fields(auth_data: Mapping[str, Any] | None) -> tuple[str | None, str | None, str | None] | None:
    """(user, domain, password) from the auth data shapes the simulator's NTLM package
    takes (docs/ntlm.md), so one scenario runs against both adapters:

    * client: ``{username, password, domain}``;
    * server: the same keys, or ``{accounts: [{username, password, domain}]}``.  sspi-rs'
      NTLM server checks the client against the identity of its own inbound credential,
      so one account is mapped to that identity; more than one cannot be expressed.
    """
    if auth_data is None:
        return None
    unknown = set(auth_data) - AUTH_KEYS - {"accounts"}
    if unknown:
        raise Unsupported(f"auth_data keys {sorted(unknown)} (native maps only {sorted(AUTH_KEYS | {'accounts'})})")
    source: Mapping[str, Any] = auth_data
    if "username" not in auth_data and "accounts" in auth_data:
        accounts = auth_data["accounts"]
        if not isinstance(accounts, (list, tuple)) or len(accounts) != 1 or not isinstance(accounts[0], Mapping):
            raise Unsupported("auth_data accounts: the native library takes exactly one account per credential")
        source = accounts[0]
        extra = set(source) - AUTH_KEYS
        if extra:
            raise Unsupported(f"auth_data account keys {sorted(extra)} (native maps only {sorted(AUTH_KEYS)})")

    def text(key: str) -> str | None:
        value = source.get(key)
        return None if value is None else str(value)

    return text("username"), text("domain"), text("password")


def _identity(fields: tuple[str | None, str | None, str | None]) -> ffi.SEC_WINNT_AUTH_IDENTITY_W:
    """SEC_WINNT_AUTH_IDENTITY_W (UNICODE).  The arrays it points into are kept alive by
    the structure itself (ctypes records them in its ``_objects``)."""
    identity = ffi.SEC_WINNT_AUTH_IDENTITY_W()
    identity.Flags = ffi.SEC_WINNT_AUTH_IDENTITY_UNICODE
    for field_name, value in zip(("User", "Domain", "Password"), fields, strict=True):
        if value is None:
            continue
        array = ffi.wide(value)
        setattr(identity, field_name, array)  # an array converts to its element pointer
        setattr(identity, field_name + "Length", len(array) - 1)
    return identity


def _library_identity(lib: SspiLibrary) -> tuple[str, str]:
    base = os.path.basename(lib.path).lower()
    if base.startswith("secur32"):
        return "secur32", platform.version() or "unknown"
    if base.startswith("libsspi"):
        try:
            from importlib.metadata import version

            return "sspi-rs", f"libsspi from sspilib {version('sspilib')}"
        except Exception:
            return "sspi-rs", "unknown"
    return base, "unknown"


class NativeAdapter(Adapter):
    """One loaded SSPI library seen through the async contract."""

    def __init__(
        self,
        library: SspiLibrary | None = None,
        *,
        library_path: str | None = None,
        workers: int = 4,
        completion: str = "threaded",
        guard_bytes: int = DEFAULT_GUARD,
        call_timeout_ms: int | None = None,
    ) -> None:
        self.lib = library if library is not None else load(library_path)
        self.guard = guard_bytes
        self.call_timeout = None if call_timeout_ms is None else call_timeout_ms / 1000.0
        self._violations: list[Violation] = []
        self._engine = AsyncEngine(id(self), workers, self._violations.append, completion)
        self._lock = self._engine.lock
        # Live handles only (dropped when their delete/free is queued), so lookups and
        # memory stay flat over long runs; close() reports whatever is left as leaks.
        self._credentials: set[NativeCredential] = set()
        self._contexts: dict[int, NativeContext] = {}  # keyed by dwLower
        self._capabilities: Capabilities | None = None
        self._identities: dict[tuple[str | None, str | None, str | None], ffi.SEC_WINNT_AUTH_IDENTITY_W] = {}

    # ---- introspection ------------------------------------------------------------------
    def capabilities(self) -> Capabilities:
        if self._capabilities is None:
            name, version = _library_identity(self.lib)
            features = {"client", "server", "requires-notify", "misuse-detection"}
            # "stream" means SECPKG_ATTR_STREAM_SIZES + Encrypt/Decrypt after a handshake.
            # sspi-rs exports the calls, but none of its packages reachable without a KDC
            # answers STREAM_SIZES (NTLM returns SEC_E_UNSUPPORTED_FUNCTION), so only
            # secur32 (Schannel) claims it; message calls still work and are tested.
            streams = all(self.lib.has(f) for f in ("QueryContextAttributesW", "EncryptMessage", "DecryptMessage"))
            if streams and name == "secur32":
                features.add("stream")
            self._capabilities = Capabilities(name, version, frozenset(self.packages()), frozenset(features))
        return self._capabilities

    def packages(self) -> list[str]:
        """EnumerateSecurityPackagesW, or a probe of well-known names when absent."""
        if self.lib.has("EnumerateSecurityPackagesW"):
            count = ffi.ULONG()
            infos = ctypes.POINTER(ffi.SecPkgInfoW)()
            status = self.lib.call("EnumerateSecurityPackagesW", ctypes.byref(count), ctypes.byref(infos))
            if status == st.SEC_E_OK and infos:
                try:
                    return [name for i in range(count.value) if (name := ffi.read_wide(infos[i].Name))]
                finally:
                    self.lib.call("FreeContextBuffer", ctypes.cast(infos, ctypes.c_void_p))
        found = []
        for name in PROBE_PACKAGES:
            if self.lib.has("QuerySecurityPackageInfoW"):
                info = ctypes.POINTER(ffi.SecPkgInfoW)()
                text = ffi.wide(name)
                if self.lib.call("QuerySecurityPackageInfoW", text, ctypes.byref(info)) == st.SEC_E_OK:
                    found.append(name)
                    self.lib.call("FreeContextBuffer", ctypes.cast(info, ctypes.c_void_p))
        return found

    def diagnostics(self) -> list[Violation]:
        with self._lock:
            drained, self._violations[:] = list(self._violations), []
        return drained

    def _report(self, requirement: str, message: str, party: str, call: str) -> None:
        with self._lock:
            self._violations.append(Violation(requirement, message, party, call))

    def close(self) -> None:
        if self._engine.closed:
            return
        leaked_async = self._engine.close(self.call_timeout if self.call_timeout is not None else 30.0)
        for ctx in leaked_async:
            self._report("CTX-6", f"{ctx!r} was never freed", "caller", "close")
        with self._lock:
            contexts = [c for c in self._contexts.values() if not c.deleted]
            credentials = [c for c in self._credentials if not c.freed]
            self._contexts.clear()
            self._credentials.clear()
        # Report, then release them so a long run does not grow the library's heap.
        for context in contexts:
            self._report("CALL-26", f"{context!r} was never deleted", "caller", "close")
            self.lib.call("DeleteSecurityContext", ctypes.byref(context.c_handle()))
            context.deleted = True
        for credential in credentials:
            self._report("CALL-13", f"{credential!r} was never freed", "caller", "close")
            self.lib.call("FreeCredentialsHandle", ctypes.byref(credential.c_handle()))
            credential.freed = True

    # ---- async context management (D.2) --------------------------------------------------
    def create_async_context(self) -> Handle | None:
        return self._engine.create()

    def free_async_context(self, ctx: Handle | None) -> None:
        self._engine.free(ctx)

    def reinit_async_context(self, ctx: Handle | None) -> int:
        return self._engine.reinit(ctx)

    def set_async_notify_callback(self, ctx: Handle | None, callback: Callback | None, data: Any = None) -> int:
        return self._engine.set_callback(ctx, callback, data)

    def async_context_requires_notify(self, ctx: Handle | None) -> bool:
        return self._engine.requires_notify(ctx)

    def get_async_call_status(self, ctx: Handle | None) -> int:
        return self._engine.status(ctx)

    # ---- handle resolution (called under the lock, at queue time) --------------------------
    def _credential_handle(self, credential: Any, call: str, *, freeing: bool = False) -> ffi.SecHandle | None:
        if credential is None:
            return None
        if isinstance(credential, NativeCredential) and credential.owner == id(self):
            if credential.freed:
                what = "double free of" if freeing else "use of freed"
                self._report("CALL-13", f"{what} {credential!r}", "caller", call)
            return credential.c_handle()
        return self._foreign(credential, call)

    def _context_handle(self, context: Any, call: str, *, deleting: bool = False) -> ffi.SecHandle | None:
        if context is None:
            return None
        if isinstance(context, NativeContext) and context.owner == id(self):
            if context.deleted:
                what = "double delete of" if deleting else "use after delete of"
                self._report("CALL-26", f"{what} {context!r}", "caller", call)
            if context.busy:
                self._report("CALL-6", f"{context!r} already has a call outstanding", "caller", call)
            return context.c_handle()
        return self._foreign(context, call)

    def _foreign(self, value: Any, call: str) -> ffi.SecHandle:
        """A handle the adapter did not mint: forged values go to the library verbatim."""
        if isinstance(value, RawHandle):
            lower, upper = value
        elif isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
            lower, upper = value
        elif isinstance(value, int) and not isinstance(value, bool):
            lower, upper = value, 0
        elif isinstance(value, (NativeContext, NativeCredential)):
            lower, upper = value.lower, value.upper  # minted by another adapter instance
        else:
            lower = upper = ffi.INVALID_HANDLE_PART
        self._report("CALL-26", f"handle {value!r} was not produced by this implementation", "caller", call)
        mask = ffi.INVALID_HANDLE_PART
        return ffi.SecHandle(lower & mask, upper & mask)

    def _overruns(self, found: list[Overrun], role: str, call: str) -> None:
        for overrun in found:
            self._report("SCH-8", overrun.describe(role), "implementation", call)

    def _identity(self, fields: tuple[str | None, str | None, str | None]) -> ffi.SEC_WINNT_AUTH_IDENTITY_W:
        """The identity structure for (user, domain, password), built once and reused:
        pAuthData is an input the library only reads, and building it costs more than the
        library's own ACH.  Bounded, so a fuzzing run with ever-new identities stays flat."""
        identity = self._identities.get(fields)
        if identity is None:
            if len(self._identities) >= _IDENTITY_CACHE:
                self._identities.clear()
            identity = self._identities[fields] = _identity(fields)
        return identity

    def _free_buffer(self, address: int) -> int:
        return self.lib.call("FreeContextBuffer", ctypes.c_void_p(address))

    # ---- async operations (D.3) ----------------------------------------------------------------
    def acquire_credentials_handle_async(
        self,
        ctx: Handle | None,
        principal: str | None,
        package: str,
        credential_use: int,
        auth_data: Mapping[str, Any] | None,
        outputs: CallOutputs,
    ) -> int:
        call = "acquire_credentials_handle_async"
        fields = _auth_fields(auth_data)  # validated now: a bad shape is Unsupported, not queued
        package_name = package

        def prepare() -> Callable[[], int]:
            def job() -> int:
                principal_w = ffi.wide_cached(principal) if principal is not None else None
                package_w = ffi.wide_cached(package_name) if package_name is not None else None
                identity = self._identity(fields) if fields is not None else None
                handle = ffi.SecHandle(0, 0)
                expiry = ffi.TimeStamp(_EXPIRY_SENTINEL)
                status = self.lib.call(
                    "AcquireCredentialsHandleW",
                    principal_w, package_w, credential_use & 0xFFFFFFFF, None,
                    ctypes.byref(identity) if identity is not None else None,
                    None, None, ctypes.byref(handle), ctypes.byref(expiry),
                )
                credential = None
                if status == st.SEC_E_OK or handle.dwLower or handle.dwUpper:
                    credential = NativeCredential(handle.dwLower, handle.dwUpper, package_name, id(self))
                    with self._lock:
                        self._credentials.add(credential)
                outputs.credential = credential
                outputs.expiry = None if expiry.value == _EXPIRY_SENTINEL else expiry.value
                outputs.written = True
                return status

            return job

        return self._engine.queue(ctx, call, prepare)

    def _step(
        self,
        call: str,
        ctx: Handle | None,
        credential: Handle | None,
        context: Handle | None,
        input: list[SecBuffer] | None,
        outputs: CallOutputs,
        allocate: bool,
        invoke: Callable[[Any, Any, Any, Any, Any, Any, Any], int],
    ) -> int:
        """Shared ISC/ASC queueing: ``invoke(cred, ctxt, pInput, phNewContext, pOutput,
        pfContextAttr, ptsExpiry)`` performs the C call."""

        def prepare() -> Callable[[], int]:
            cred_handle = self._credential_handle(credential, call)
            ctxt_handle = self._context_handle(context, call)
            own_context = context if isinstance(context, NativeContext) and context.owner == id(self) else None
            own_credential = (
                credential if isinstance(credential, NativeCredential) and credential.owner == id(self) else None
            )
            if own_context is not None:
                own_context.busy += 1

            def job() -> int:
                try:
                    return self._run_step(
                        call, cred_handle, ctxt_handle, own_context, own_credential, input, outputs, allocate, invoke
                    )
                finally:
                    if own_context is not None:
                        with self._lock:
                            own_context.busy -= 1

            return job

        return self._engine.queue(ctx, call, prepare)

    def _run_step(
        self,
        call: str,
        cred_handle: ffi.SecHandle | None,
        ctxt_handle: ffi.SecHandle | None,
        own_context: NativeContext | None,
        own_credential: NativeCredential | None,
        input: list[SecBuffer] | None,
        outputs: CallOutputs,
        allocate: bool,
        invoke: Callable[[Any, Any, Any, Any, Any, Any, Any], int],
    ) -> int:
        in_desc = CBufferDesc(input, guard=self.guard) if input is not None else None
        out_desc = None
        if outputs.output is not None:
            out_desc = CBufferDesc(outputs.output, allocate=allocate, guard=self.guard)
        new_handle = ffi.SecHandle(0, 0)
        attributes = ffi.ULONG(0)
        expiry = ffi.TimeStamp(_EXPIRY_SENTINEL)
        status = invoke(
            ctypes.byref(cred_handle) if cred_handle is not None else None,
            ctypes.byref(ctxt_handle) if ctxt_handle is not None else None,
            in_desc.pointer() if in_desc is not None else None,
            ctypes.byref(new_handle),
            out_desc.pointer() if out_desc is not None else None,
            ctypes.byref(attributes),
            ctypes.byref(expiry),
        )
        if in_desc is not None:
            self._overruns(in_desc.finish(self._free_buffer, inputs=True), "input", call)
        if out_desc is not None:
            self._overruns(out_desc.finish(self._free_buffer, inputs=False), "output", call)
        if own_context is not None and ctxt_handle is not None:
            # The library may update the handle in place (phContext is in/out in practice).
            own_context.lower, own_context.upper = ctxt_handle.pair()
        outputs.new_context = self._adopt(new_handle, own_context, own_credential)
        outputs.context_attr = int(attributes.value)
        outputs.expiry = None if expiry.value == _EXPIRY_SENTINEL else int(expiry.value)
        outputs.written = True
        return status

    def _adopt(
        self, written: ffi.SecHandle, current: NativeContext | None, credential: NativeCredential | None
    ) -> NativeContext | None:
        """Map what the library wrote to phNewContext onto a handle object."""
        lower, upper = written.pair()
        if (lower, upper) == (0, 0):
            return None
        with self._lock:
            if current is not None and current.lower == lower:
                current.upper = upper
                return current
            known = self._contexts.get(lower)
            if known is not None and not known.deleted:
                known.upper = upper
                return known
            context = NativeContext(lower, upper, id(self), credential)
            self._contexts[lower] = context
            if credential is not None:
                credential.contexts.add(context)
            return context

    def initialize_security_context_async(
        self,
        ctx: Handle | None,
        credential: Handle | None,
        context: Handle | None,
        target: str | None,
        context_req: int,
        input: list[SecBuffer] | None,
        outputs: CallOutputs,
        *,
        reserved1: int = 0,
        reserved2: int = 0,
        target_data_rep: int = 0,
    ) -> int:
        def invoke(cred: Any, ctxt: Any, p_in: Any, p_new: Any, p_out: Any, p_attr: Any, p_exp: Any) -> int:
            target_w = ffi.wide_cached(target) if target is not None else None
            return self.lib.call(
                "InitializeSecurityContextW", cred, ctxt, target_w, context_req & 0xFFFFFFFF,
                reserved1 & 0xFFFFFFFF, target_data_rep & 0xFFFFFFFF, p_in, reserved2 & 0xFFFFFFFF,
                p_new, p_out, p_attr, p_exp,
            )

        allocate = bool(context_req & ISC_REQ["ALLOCATE_MEMORY"])
        return self._step(
            "initialize_security_context_async", ctx, credential, context, input, outputs, allocate, invoke
        )

    def accept_security_context_async(
        self,
        ctx: Handle | None,
        credential: Handle | None,
        context: Handle | None,
        input: list[SecBuffer] | None,
        context_req: int,
        outputs: CallOutputs,
        *,
        target_data_rep: int = 0,
    ) -> int:
        def invoke(cred: Any, ctxt: Any, p_in: Any, p_new: Any, p_out: Any, p_attr: Any, p_exp: Any) -> int:
            return self.lib.call(
                "AcceptSecurityContext", cred, ctxt, p_in, context_req & 0xFFFFFFFF,
                target_data_rep & 0xFFFFFFFF, p_new, p_out, p_attr, p_exp,
            )

        allocate = bool(context_req & ASC_REQ["ALLOCATE_MEMORY"])
        return self._step("accept_security_context_async", ctx, credential, context, input, outputs, allocate, invoke)

    def delete_security_context_async(self, ctx: Handle | None, context: Handle | None) -> int:
        call = "delete_security_context_async"

        def prepare() -> Callable[[], int]:
            handle = self._context_handle(context, call, deleting=True)
            own = context if isinstance(context, NativeContext) and context.owner == id(self) else None
            if own is not None:
                own.deleted = True
                own.busy += 1
                if self._contexts.get(own.lower) is own:
                    del self._contexts[own.lower]

            def job() -> int:
                try:
                    return self.lib.call("DeleteSecurityContext", ctypes.byref(handle) if handle is not None else None)
                finally:
                    if own is not None:
                        with self._lock:
                            own.busy -= 1
                            if own.credential is not None:
                                own.credential.contexts.discard(own)

            return job

        return self._engine.queue(ctx, call, prepare, is_delete=True)

    def free_credentials_handle_async(self, ctx: Handle | None, credential: Handle | None) -> int:
        call = "free_credentials_handle_async"

        def prepare() -> Callable[[], int]:
            handle = self._credential_handle(credential, call, freeing=True)
            own = credential if isinstance(credential, NativeCredential) and credential.owner == id(self) else None
            if own is not None:
                live = [c for c in own.contexts if not c.deleted]
                if live and not own.freed:
                    self._report("CALL-28", f"{own!r} freed while {len(live)} context(s) built on it live",
                                 "caller", call)
                own.freed = True
                self._credentials.discard(own)

            def job() -> int:
                return self.lib.call("FreeCredentialsHandle", ctypes.byref(handle) if handle is not None else None)

            return job

        return self._engine.queue(ctx, call, prepare)

    # ---- synchronous calls after the handshake -------------------------------------------------
    def _sync_context(self, context: Handle | None, call: str) -> ffi.SecHandle | None:
        with self._lock:
            return self._context_handle(context, call)

    def query_context_attributes(self, context: Handle | None, attribute: int) -> tuple[int, Any]:
        if not self.lib.has("QueryContextAttributesW"):
            raise Unsupported("QueryContextAttributesW is not exported")
        value: Any
        if attribute == SECPKG_ATTR_STREAM_SIZES:
            value = ffi.SecPkgContext_StreamSizes()
        elif attribute == SECPKG_ATTR_SIZES:
            value = ffi.SecPkgContext_Sizes()
        else:
            raise Unsupported(f"QueryContextAttributes attribute {attribute}")
        handle = self._sync_context(context, "query_context_attributes")
        status = self.lib.call(
            "QueryContextAttributesW", ctypes.byref(handle) if handle is not None else None, attribute,
            ctypes.cast(ctypes.pointer(value), ctypes.c_void_p),
        )
        if status != st.SEC_E_OK:
            return status, None
        if attribute == SECPKG_ATTR_STREAM_SIZES:
            return status, StreamSizes(
                value.cbHeader, value.cbTrailer, value.cbMaximumMessage, value.cBuffers, value.cbBlockSize
            )
        return status, ContextSizes(
            value.cbMaxToken, value.cbMaxSignature, value.cbBlockSize, value.cbSecurityTrailer
        )

    def _message_call(self, name: str, call: str, context: Handle | None, buffers: list[SecBuffer],
                      invoke: Callable[[Any, Any], int]) -> int:
        if not self.lib.has(name):
            raise Unsupported(f"{name} is not exported")
        handle = self._sync_context(context, call)
        desc = CBufferDesc(buffers, guard=self.guard)
        status = invoke(ctypes.byref(handle) if handle is not None else None, desc.pointer())
        self._overruns(desc.finish(self._free_buffer, inputs=False), "message", call)
        return status

    def encrypt_message(self, context: Handle | None, qop: int, buffers: list[SecBuffer], seqno: int = 0) -> int:
        return self._message_call(
            "EncryptMessage", "encrypt_message", context, buffers,
            lambda h, d: self.lib.call("EncryptMessage", h, qop & 0xFFFFFFFF, d, seqno & 0xFFFFFFFF),
        )

    def decrypt_message(self, context: Handle | None, buffers: list[SecBuffer], seqno: int = 0) -> tuple[int, int]:
        qop = ffi.ULONG(0)
        status = self._message_call(
            "DecryptMessage", "decrypt_message", context, buffers,
            lambda h, d: self.lib.call("DecryptMessage", h, d, seqno & 0xFFFFFFFF, ctypes.byref(qop)),
        )
        return status, int(qop.value)

    def complete_auth_token(self, context: Handle | None, buffers: list[SecBuffer]) -> int:
        """CompleteAuthToken -- not part of the async contract (no async twin exists), but
        sspi-rs' NTLM server answers SEC_I_COMPLETE_NEEDED (allowed by CALL-17) and checks
        the password only here, so callers need it to finish such a handshake."""
        return self._message_call(
            "CompleteAuthToken", "complete_auth_token", context, buffers,
            lambda h, d: self.lib.call("CompleteAuthToken", h, d),
        )

    def apply_control_token(self, context: Handle | None, buffers: list[SecBuffer]) -> int:
        return self._message_call(
            "ApplyControlToken", "apply_control_token", context, buffers,
            lambda h, d: self.lib.call("ApplyControlToken", h, d),
        )
