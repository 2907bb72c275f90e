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
import struct
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
from adapters.native.buffers import DEFAULT_GUARD, Overrun, marshal
from adapters.native.handles import NativeContext, NativeCredential, RawHandle
from adapters.native.library import SspiLibrary, load

# Written into ptsExpiry before the call; still there afterwards means "not written".
_EXPIRY_SENTINEL = -0x5A5A5A5A5A5A5A5B
AUTH_KEYS = frozenset({"username", "password", "domain"})
_AUTH_SHAPES = AUTH_KEYS | {"accounts"}
_M32 = 0xFFFFFFFF
_ACH = "acquire_credentials_handle_async"
_ISC = "initialize_security_context_async"
_ASC = "accept_security_context_async"
_DEL = "delete_security_context_async"
_FREE = "free_credentials_handle_async"
_ISC_ALLOCATE = ISC_REQ["ALLOCATE_MEMORY"]
_ASC_ALLOCATE = ASC_REQ["ALLOCATE_MEMORY"]


class _Out(ctypes.Structure):
    """The scalar out-parameters of one call, in one block of memory."""

    _fields_ = [("handle", ffi.SecHandle), ("attr", ffi.ULONG), ("expiry", ffi.TimeStamp)]


_OUT = struct.Struct("@NNIq")  # handle (two ULONG_PTR), *pfContextAttr, *ptsExpiry
assert _OUT.size == ctypes.sizeof(_Out) and _Out.expiry.offset == _OUT.size - 8, "_Out layout differs from '@NNIq'"
_OUT_INITIAL = _OUT.pack(0, 0, 0, _EXPIRY_SENTINEL)


class _Scratch:
    """phNewContext/phCredential, pfContextAttr and ptsExpiry for one call, with their
    ``byref`` arguments built once: reset with one slice assignment and read with one
    ``struct`` unpack.  Pooled (a list; pop/append are atomic under the GIL), so
    concurrent worker threads never share one."""

    __slots__ = ("attr", "attr_ref", "expiry", "expiry_ref", "handle", "handle_ref", "store")

    def __init__(self) -> None:
        self.store = bytearray(_OUT_INITIAL)
        self.handle = ffi.SecHandle.from_buffer(self.store, _Out.handle.offset)
        self.attr = ffi.ULONG.from_buffer(self.store, _Out.attr.offset)
        self.expiry = ffi.TimeStamp.from_buffer(self.store, _Out.expiry.offset)
        self.handle_ref = ctypes.byref(self.handle)
        self.attr_ref = ctypes.byref(self.attr)
        self.expiry_ref = ctypes.byref(self.expiry)


_SCRATCH: list[_Scratch] = []


def _take_scratch() -> _Scratch:
    try:
        scratch = _SCRATCH.pop()
    except IndexError:
        return _Scratch()
    scratch.store[:] = _OUT_INITIAL
    return scratch


def _prepared(function: Callable[..., int], arguments: tuple[Any, ...]) -> tuple[Callable[..., int], tuple[Any, ...]]:
    """The queue-time step of a call with no handle accounting: the job as given."""
    return function, arguments


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
    if not auth_data.keys() <= _AUTH_SHAPES:
        unknown = set(auth_data) - _AUTH_SHAPES
        raise Unsupported(f"auth_data keys {sorted(unknown)} (native maps only {sorted(_AUTH_SHAPES)})")
    source: Mapping[str, Any] = auth_data
    if "username" not in auth_data and "accounts" in auth_data:
        accounts = auth_data["accounts"]
        if not isinstance(accounts, (list, tuple)) or len(accounts) != 1 or not isinstance(accounts[0], Mapping):
            raise Unsupported("auth_data accounts: the native library takes exactly one account per credential")
        source = accounts[0]
        extra = set(source) - AUTH_KEYS
        if extra:
            raise Unsupported(f"auth_data account keys {sorted(extra)} (native maps only {sorted(AUTH_KEYS)})")

    user, domain, password = source.get("username"), source.get("domain"), source.get("password")
    if type(user) is str and type(domain) is str and type(password) is str:
        return user, domain, password  # the usual shape, nothing to convert
    return (
        None if user is None else str(user),
        None if domain is None else str(domain),
        None if password is None else str(password),
    )


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
        # (user, domain, password) -> byref(SEC_WINNT_AUTH_IDENTITY_W); the byref keeps the
        # structure, and the structure its UTF-16 arrays, alive.
        self._identities: dict[tuple[str | None, str | None, str | None], Any] = {}
        self._id = id(self)
        self._concurrent = not self._engine.inline  # worker threads exist: lock shared state
        # The library's hot-path entry points (bound without argtypes: every call below
        # passes its arguments already in C form, see library.EntryPoints), looked up per
        # call in this same dict, so a test that swaps one (lib.functions[name] = fake) is
        # honoured.
        self._fns = self.lib.direct
        # The two hottest async-context calls go straight to the engine (no extra frame).
        self.reinit_async_context = self._engine.reinit  # type: ignore[method-assign,assignment]
        self.get_async_call_status = self._engine.status  # type: ignore[method-assign,assignment]

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
        # Lock-free drain: reports are appended without a lock (list.append is atomic), so
        # take exactly the entries present now; any appended meanwhile stay for next time.
        violations = self._violations
        count = len(violations)
        drained = violations[:count]
        del violations[:count]
        return drained

    def _report(self, requirement: str, message: str, party: str, call: str) -> None:
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
            self.lib.call("DeleteSecurityContext", context.ref)
            context.deleted = True
        for credential in credentials:
            self._report("CALL-13", f"{credential!r} was never freed", "caller", "close")
            self.lib.call("FreeCredentialsHandle", credential.ref)
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

    # ---- handle resolution (at queue time; returns the PSecHandle argument) ----------------
    def _credential_ref(self, credential: Any, call: str, freeing: bool = False) -> Any:
        if credential is None:
            return None
        if type(credential) is NativeCredential and credential.owner == self._id:
            if credential.freed:
                what = "double free of" if freeing else "use of freed"
                self._report("CALL-13", f"{what} {credential!r}", "caller", call)
            return credential.ref
        return ctypes.byref(self._foreign(credential, call))

    def _context_ref(self, context: Any, call: str, deleting: bool = False) -> Any:
        if context is None:
            return None
        if type(context) is NativeContext and context.owner == self._id:
            if context.deleted:
                what = "double delete of" if deleting else "use after delete of"
                self._report("CALL-26", f"{what} {context!r}", "caller", call)
            if context.busy:
                self._report("CALL-6", f"{context!r} already has a call outstanding", "caller", call)
            return context.ref
        return ctypes.byref(self._foreign(context, call))

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

    def _identity_ref(self, fields: tuple[str | None, str | None, str | None]) -> Any:
        """``byref`` to the identity structure for (user, domain, password), built once and
        reused: pAuthData is an input the library only reads, and building it costs more
        than the library's own ACH.  Bounded, so a fuzzing run with ever-new identities
        stays flat."""
        ref = self._identities.get(fields)
        if ref is None:
            if len(self._identities) >= _IDENTITY_CACHE:
                self._identities.clear()
            ref = self._identities[fields] = ctypes.byref(_identity(fields))
        return ref

    def _free_buffer(self, address: int) -> int:
        return self.lib.call("FreeContextBuffer", ctypes.c_void_p(address))

    # ---- async operations (D.3) ----------------------------------------------------------------
    # Each operation queues (prepare, arguments) on the engine.  ``prepare`` runs only once
    # the queue is accepted, does the queue-time handle accounting and returns the job
    # (function, arguments) that runs the synchronous twin (GEN-5) at execution time.
    def acquire_credentials_handle_async(
        self,
        ctx: Handle | None,
        principal: str | None,
        package: str,
        credential_use: int,
        auth_data: Mapping[str, Any] | None,
        outputs: CallOutputs,
    ) -> int:
        fields = _auth_fields(auth_data)  # validated now: a bad shape is Unsupported, not queued
        job = (principal, package, credential_use & _M32, fields, outputs)
        return self._engine.queue(ctx, _ACH, _prepared, (self._run_acquire, job))

    def _run_acquire(
        self, principal: str | None, package: str | None, use: int,
        fields: tuple[str | None, str | None, str | None] | None, outputs: CallOutputs,
    ) -> int:
        principal_w = ffi.wide_cached(principal) if principal is not None else None
        package_w = ffi.wide_cached(package) if package is not None else None
        identity = self._identity_ref(fields) if fields is not None else None
        try:  # _take_scratch(), inline
            scratch = _SCRATCH.pop()
            scratch.store[:] = _OUT_INITIAL
        except IndexError:
            scratch = _Scratch()
        status: int = self._fns["AcquireCredentialsHandleW"](  # type: ignore[misc]
            principal_w, package_w, use, None, identity, None, None, scratch.handle_ref, scratch.expiry_ref
        ) & _M32
        lower, upper, _attr, expiry = _OUT.unpack_from(scratch.store)
        _SCRATCH.append(scratch)
        credential = None
        if status == st.SEC_E_OK or lower or upper:
            credential = NativeCredential(lower, upper, package or "", self._id)
            if self._concurrent:  # close() copies the set under the lock
                with self._lock:
                    self._credentials.add(credential)
            else:
                self._credentials.add(credential)
        outputs.credential = credential
        outputs.expiry = None if expiry == _EXPIRY_SENTINEL else expiry
        outputs.written = True
        return status

    def _prepare_step(
        self, call: str, credential: Any, context: Any, input: list[SecBuffer] | None, outputs: CallOutputs,
        allocate: bool, extra: tuple[Any, ...],
    ) -> tuple[Callable[..., int], tuple[Any, ...]]:
        """Queue-time part of ISC/ASC: resolve handles, report misuse, mark the context busy."""
        # The usual case inline (a live credential, an idle context of ours); anything
        # else goes through the resolvers, which report the misuse.
        own_credential: NativeCredential | None = None
        if type(credential) is NativeCredential and credential.owner == self._id and not credential.freed:
            own_credential, cred_ref = credential, credential.ref
        else:
            cred_ref = self._credential_ref(credential, call)
            if type(credential) is NativeCredential and credential.owner == self._id:
                own_credential = credential
        own_context: NativeContext | None = None
        if context is None:
            ctxt_ref = None
        else:
            if type(context) is NativeContext and context.owner == self._id:
                own_context = context
                if context.deleted or context.busy:
                    self._context_ref(context, call)  # reports CALL-26 / CALL-6
                ctxt_ref = context.ref
                context.busy += 1
            else:
                ctxt_ref = self._context_ref(context, call)
        return self._run_step, (call, cred_ref, ctxt_ref, own_context, own_credential, input, outputs, allocate,
                                extra)

    def _run_step(
        self,
        call: str,
        cred_ref: Any,
        ctxt_ref: Any,
        own_context: NativeContext | None,
        own_credential: NativeCredential | None,
        input: list[SecBuffer] | None,
        outputs: CallOutputs,
        allocate: bool,
        extra: tuple[Any, ...],
    ) -> int:
        try:
            guard = self.guard
            in_desc = marshal(input, False, guard) if input is not None else None
            out_list = outputs.output
            out_desc = marshal(out_list, allocate, guard, True) if out_list is not None else None
            try:  # _take_scratch(), inline
                scratch = _SCRATCH.pop()
                scratch.store[:] = _OUT_INITIAL
            except IndexError:
                scratch = _Scratch()
            if call is _ISC:
                target, req, reserved1, target_data_rep, reserved2 = extra
                status: int = self._fns["InitializeSecurityContextW"](  # type: ignore[misc]
                    cred_ref, ctxt_ref, ffi.wide_cached(target) if target is not None else None, req, reserved1,
                    target_data_rep, in_desc.ref if in_desc is not None else None, reserved2, scratch.handle_ref,
                    out_desc.ref if out_desc is not None else None, scratch.attr_ref, scratch.expiry_ref,
                ) & _M32
            else:
                req, target_data_rep = extra
                status = self._fns["AcceptSecurityContext"](  # type: ignore[misc]
                    cred_ref, ctxt_ref, in_desc.ref if in_desc is not None else None, req, target_data_rep,
                    scratch.handle_ref, out_desc.ref if out_desc is not None else None, scratch.attr_ref,
                    scratch.expiry_ref,
                ) & _M32
            lower, upper, attributes, expiry = _OUT.unpack_from(scratch.store)
            _SCRATCH.append(scratch)
            if in_desc is not None:
                found = in_desc.finish(self._free_buffer, inputs=True)
                if found:
                    self._overruns(found, "input", call)
            if out_desc is not None:
                found = out_desc.finish(self._free_buffer, inputs=False)
                if found:
                    self._overruns(found, "output", call)
            if own_context is not None:
                own_context.sync()  # the library may update the handle in place (phContext is in/out)
            outputs.new_context = self._adopt(lower, upper, own_context, own_credential)
            outputs.context_attr = attributes
            outputs.expiry = None if expiry == _EXPIRY_SENTINEL else expiry
            outputs.written = True
            return status
        finally:
            if own_context is not None:
                if self._concurrent:
                    with self._lock:
                        own_context.busy -= 1
                else:
                    own_context.busy -= 1

    def _adopt(
        self, lower: int, upper: int, current: NativeContext | None, credential: NativeCredential | None
    ) -> NativeContext | None:
        """Map what the library wrote to phNewContext onto a handle object."""
        if not lower and not upper:
            return None
        if current is not None and current.lower == lower:
            if current.upper != upper:
                current.set(lower, upper)
            return current
        if self._concurrent:
            with self._lock:
                return self._adopt_new(lower, upper, credential)
        return self._adopt_new(lower, upper, credential)

    def _adopt_new(self, lower: int, upper: int, credential: NativeCredential | None) -> NativeContext:
        known = self._contexts.get(lower)
        if known is not None and not known.deleted:
            if known.upper != upper:
                known.set(lower, upper)
            return known
        context = NativeContext(lower, upper, self._id, credential)
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
        extra = (target, context_req & _M32, reserved1 & _M32, target_data_rep & _M32, reserved2 & _M32)
        allocate = bool(context_req & _ISC_ALLOCATE)
        return self._engine.queue(
            ctx, _ISC, self._prepare_step, (_ISC, credential, context, input, outputs, allocate, extra)
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
        allocate = bool(context_req & _ASC_ALLOCATE)
        extra = (context_req & _M32, target_data_rep & _M32)
        return self._engine.queue(
            ctx, _ASC, self._prepare_step, (_ASC, credential, context, input, outputs, allocate, extra)
        )

    def delete_security_context_async(self, ctx: Handle | None, context: Handle | None) -> int:
        return self._engine.queue(ctx, _DEL, self._prepare_delete, (context,), is_delete=True)

    def _prepare_delete(self, context: Any) -> tuple[Callable[..., int], tuple[Any, ...]]:
        ref = self._context_ref(context, _DEL, deleting=True)
        own = context if type(context) is NativeContext and context.owner == self._id else None
        if own is not None:
            own.deleted = True
            own.busy += 1
            if self._contexts.get(own.lower) is own:
                del self._contexts[own.lower]
        return self._run_delete, (ref, own)

    def _run_delete(self, ref: Any, own: NativeContext | None) -> int:
        try:
            return self._fns["DeleteSecurityContext"](ref) & _M32  # type: ignore[misc]
        finally:
            if own is not None:
                if self._concurrent:
                    with self._lock:
                        self._deleted(own)
                else:
                    self._deleted(own)

    @staticmethod
    def _deleted(own: NativeContext) -> None:
        own.busy -= 1
        if own.credential is not None:
            own.credential.contexts.discard(own)

    def free_credentials_handle_async(self, ctx: Handle | None, credential: Handle | None) -> int:
        return self._engine.queue(ctx, _FREE, self._prepare_free, (credential,))

    def _prepare_free(self, credential: Any) -> tuple[Callable[..., int], tuple[Any, ...]]:
        ref = self._credential_ref(credential, _FREE, freeing=True)
        own = credential if type(credential) is NativeCredential and credential.owner == self._id else None
        if own is not None:
            if own.contexts and not own.freed:
                live = [c for c in own.contexts if not c.deleted]
                if live:
                    self._report("CALL-28", f"{own!r} freed while {len(live)} context(s) built on it live",
                                 "caller", _FREE)
            own.freed = True
            self._credentials.discard(own)
        return self._run_free, (ref,)

    def _run_free(self, ref: Any) -> int:
        return self._fns["FreeCredentialsHandle"](ref) & _M32  # type: ignore[misc]

    # ---- synchronous calls after the handshake -------------------------------------------------
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
        handle = self._context_ref(context, "query_context_attributes")
        status = self.lib.call(
            "QueryContextAttributesW", handle, attribute, ctypes.cast(ctypes.pointer(value), ctypes.c_void_p),
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
                      before: tuple[Any, ...] = (), after: tuple[Any, ...] = ()) -> int:
        """A synchronous call ``name(phContext, *before, pMessage, *after)`` over ``buffers``."""
        function = self._fns.get(name)
        if function is None:
            raise Unsupported(f"{name} is not exported")
        handle = self._context_ref(context, call)
        desc = marshal(buffers, False, self.guard)
        status: int = function(handle, *before, desc.ref, *after) & _M32
        found = desc.finish(self._free_buffer, inputs=False)
        if found:
            self._overruns(found, "message", call)
        return status

    def encrypt_message(self, context: Handle | None, qop: int, buffers: list[SecBuffer], seqno: int = 0) -> int:
        return self._message_call("EncryptMessage", "encrypt_message", context, buffers, (qop & _M32,),
                                  (seqno & _M32,))

    def decrypt_message(self, context: Handle | None, buffers: list[SecBuffer], seqno: int = 0) -> tuple[int, int]:
        qop = ffi.ULONG(0)
        status = self._message_call("DecryptMessage", "decrypt_message", context, buffers, (),
                                    (seqno & _M32, ctypes.byref(qop)))
        return status, int(qop.value)

    def complete_auth_token(self, context: Handle | None, buffers: list[SecBuffer]) -> int:
        """CompleteAuthToken -- not part of the async contract (no async twin exists), but
        sspi-rs' NTLM server answers SEC_I_COMPLETE_NEEDED (allowed by CALL-17) and checks
        the password only here, so callers need it to finish such a handshake."""
        return self._message_call("CompleteAuthToken", "complete_auth_token", context, buffers)

    def apply_control_token(self, context: Handle | None, buffers: list[SecBuffer]) -> int:
        return self._message_call("ApplyControlToken", "apply_control_token", context, buffers)

