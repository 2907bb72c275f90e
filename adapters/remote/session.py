"""The agent's side of one session: protocol v1 requests onto an in-process Adapter.

The agent mints the handle strings ("a1", "c1", "s1": one table per kind, because an
implementation may use equal values for different kinds), keeps each queued call's
CallOutputs and input buffers until the implementation calls back, and then sends the
``callback`` notification with everything written at completion (the call a callback
completes is found by ``protocol.take_completed``, as the client finds it).  A string it never
minted stands for a handle the caller made up; it reaches the implementation as a unique
sentinel object, so invalid-handle tests see an invalid handle, not an agent error.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from adapters.api import Adapter, CallOutputs, SecBuffer
from adapters.remote import codec
from adapters.remote import protocol as p

Send = Callable[[dict[str, Any]], None]


class RpcError(Exception):
    """Answer the request with this JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


def bad_params(message: str) -> RpcError:
    return RpcError(p.INVALID_PARAMS, message, {"exception": "ValueError"})


class ForeignHandle:
    """A handle string this session never minted (a caller-made garbage handle)."""

    __slots__ = ("wire",)

    def __init__(self, wire: str) -> None:
        self.wire = wire

    def __repr__(self) -> str:
        return f"ForeignHandle({self.wire!r})"


class _Box:
    """Wraps the client's callback_data so the value comes back by identity (NOTIFY-2)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class HandleTable:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._to_wire: dict[Any, str] = {}
        self._from_wire: dict[str, Any] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def wire(self, obj: Any) -> str | None:
        if obj is None:
            return None
        if isinstance(obj, ForeignHandle):
            return obj.wire
        try:
            found = self._to_wire.get(obj)
        except TypeError:  # unhashable despite the interface: key by identity
            found = self._to_wire.get(("id", id(obj)))
        if found is not None:
            return found
        with self._lock:
            s = f"{self.prefix}{next(self._ids)}"
            try:
                self._to_wire[obj] = s
            except TypeError:
                self._to_wire[("id", id(obj))] = s
            self._from_wire[s] = obj
        return s

    def lookup(self, s: str) -> tuple[bool, Any]:
        if s in self._from_wire:
            return True, self._from_wire[s]
        return False, None


_MISSING = object()


def _get(params: Mapping[str, Any], name: str, kind: type | tuple[type, ...], default: Any = _MISSING,
         nullable: bool = False) -> Any:
    value = params.get(name, default)
    if value is _MISSING:
        raise bad_params(f"missing parameter {name!r}")
    if value is None and (nullable or default is None):
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise bad_params(f"parameter {name!r} has the wrong type ({type(value).__name__})")
    return value


class _Queued:
    __slots__ = ("input", "operation", "outputs", "silent")

    def __init__(self, operation: str, outputs: CallOutputs | None, input: list[SecBuffer] | None,
                 silent: bool) -> None:
        self.operation, self.outputs, self.input = operation, outputs, input
        self.silent = silent  # queued with no callback registered: the implementation has none to call


class Session:
    """One ``initialize`` .. ``close`` of an adapter, driven by one connection."""

    def __init__(self, adapter: Adapter, send: Send) -> None:
        self.adapter = adapter
        self._send = send
        self.ctxs = HandleTable("a")
        self.creds = HandleTable("c")
        self.secctxs = HandleTable("s")
        self._foreign: dict[str, ForeignHandle] = {}
        self._queued: dict[Any, deque[_Queued]] = {}
        # Async contexts whose last accepted registration named a callback (NOTIFY-7: it
        # survives reinit); a call queued on any other context completes silently.
        self._notified: set[Any] = set()
        self._freed: set[Any] = set()  # async contexts the caller freed (or is freeing)
        self._notes: list[dict[str, Any]] = []  # the agent's own findings (PROTO-12), reported once
        self._lock = threading.Lock()
        self.closed = False
        self.methods: dict[str, Callable[[Mapping[str, Any]], Any]] = {
            "create_async_context": self.create_async_context,
            "free_async_context": self.free_async_context,
            "reinit_async_context": self.reinit_async_context,
            "set_async_notify_callback": self.set_async_notify_callback,
            "async_context_requires_notify": self.async_context_requires_notify,
            "get_async_call_status": self.get_async_call_status,
            "acquire_credentials_handle_async": self.acquire_credentials_handle_async,
            "initialize_security_context_async": self.initialize_security_context_async,
            "accept_security_context_async": self.accept_security_context_async,
            "delete_security_context_async": self.delete_security_context_async,
            "free_credentials_handle_async": self.free_credentials_handle_async,
            "query_context_attributes": self.query_context_attributes,
            "encrypt_message": self.encrypt_message,
            "decrypt_message": self.decrypt_message,
            "apply_control_token": self.apply_control_token,
            "complete_auth_token": self.complete_auth_token,
            "diagnostics": self.diagnostics,
        }
        if adapter.control is not None:
            self.methods.update({
                "control.mode": self.control_mode,
                "control.set_mode": self.control_set_mode,
                "control.pending": self.control_pending,
                "control.complete": self.control_complete,
                "control.complete_all": self.control_complete_all,
                "control.inject_fault": self.control_inject_fault,
            })

    # ---- handles ---------------------------------------------------------------------------
    def _resolve(self, table: HandleTable, s: Any) -> Any:
        if s is None:
            return None
        if not isinstance(s, str):
            raise bad_params(f"a handle must be a string or null, got {type(s).__name__}")
        for t in (table, self.ctxs, self.creds, self.secctxs):
            found, obj = t.lookup(s)
            if found:
                return obj
        with self._lock:
            fh = self._foreign.get(s)
            if fh is None:
                fh = self._foreign[s] = ForeignHandle(s)
        return fh

    def _ctx(self, params: Mapping[str, Any]) -> Any:
        return self._resolve(self.ctxs, params.get("ctx"))

    def _handle_of(self, kind: str, obj: Any) -> str | None:
        return (self.creds if kind == "credential" else self.secctxs).wire(obj)

    @staticmethod
    def _key(obj: Any) -> Any:
        try:
            hash(obj)
        except TypeError:
            return ("id", id(obj))
        return obj

    # ---- callbacks -------------------------------------------------------------------------
    def _trampoline(self, inner_ctx: Any, data: Any) -> None:
        """The callback the implementation sees; forwards a completion as a notification."""
        if self.closed:
            return
        with self._lock:
            dq = self._queued.get(self._key(inner_ctx))
            queued = p.take_completed(dq) if dq else None
        params: dict[str, Any] = {
            "ctx": self.ctxs.wire(inner_ctx),
            "callback_data": data.value if isinstance(data, _Box) else None,
            "thread": threading.get_ident(),
            "time_ns": time.monotonic_ns(),
        }
        if queued is not None:
            params["operation"] = queued.operation
            if queued.outputs is not None:
                params["outputs"] = codec.encode_outputs(queued.outputs, self._handle_of)
            if queued.input is not None:
                params["input"] = codec.encode_buffers(queued.input)
        key = self._key(inner_ctx)
        if key not in self._freed:
            # The status as the callback sees it, read now, while the implementation waits
            # in its callback (NOTIFY-8: a caller reads it there; a status still pending is
            # a breach the client must be able to see).  Not on a freed context: it may be gone.
            try:
                params["status"] = self.adapter.get_async_call_status(inner_ctx) & codec.U32
            except Exception:  # the notification still goes out, without the status
                pass
        self._send({"jsonrpc": p.JSONRPC, "method": "callback", "params": params})

    def _queue(self, method: str, inner_ctx: Any, outputs: CallOutputs | None, input: list[SecBuffer] | None,
               call: Callable[[], int]) -> dict[str, Any]:
        key = self._key(inner_ctx)
        queued = _Queued(method, outputs, input, key not in self._notified)
        with self._lock:
            self._queued.setdefault(key, deque()).append(queued)
        try:
            status = call()
        except BaseException:
            self._drop(key, queued)
            raise
        result: dict[str, Any] = {"status": status & codec.U32}
        if status != 0:
            self._drop(key, queued)
            return result
        with self._lock:
            dq = self._queued.get(key)
            still_queued = dq is not None and any(q is queued for q in dq)
            if dq:
                p.drop_silent_before(dq, queued)
        if still_queued and outputs is not None and outputs.written:
            result["outputs"] = codec.encode_outputs(outputs, self._handle_of)  # written before completion
        return result

    def _drop(self, key: Any, queued: _Queued) -> None:
        with self._lock:
            dq = self._queued.get(key)
            if dq is not None:
                for i, q in enumerate(dq):
                    if q is queued:
                        del dq[i]
                        break

    # ---- async context management ----------------------------------------------------------
    def create_async_context(self, params: Mapping[str, Any]) -> Any:
        ctx = self.adapter.create_async_context()
        if ctx is not None:
            self._freed.discard(self._key(ctx))  # a handle the implementation recycled
        return {"ctx": self.ctxs.wire(ctx)}

    def free_async_context(self, params: Mapping[str, Any]) -> Any:
        ctx = self._ctx(params)
        key = self._key(ctx)
        if ctx is not None:
            self._freed.add(key)  # before the call: a callback it runs reads nothing either
        self.adapter.free_async_context(ctx)
        # The registration dies with the context (an implementation may hand the same
        # handle to a later, fresh context).  Calls still pending keep their records: a
        # callback that comes anyway is forwarded, as in-process.
        self._notified.discard(key)
        return {}

    def reinit_async_context(self, params: Mapping[str, Any]) -> Any:
        return {"status": self.adapter.reinit_async_context(self._ctx(params)) & codec.U32}

    def set_async_notify_callback(self, params: Mapping[str, Any]) -> Any:
        has_callback = _get(params, "callback", bool)
        data = _Box(params.get("callback_data"))
        callback = self._trampoline if has_callback else None
        ctx = self._ctx(params)
        status = self.adapter.set_async_notify_callback(ctx, callback, data)
        if status == 0:
            if has_callback:
                self._notified.add(self._key(ctx))
            else:
                self._notified.discard(self._key(ctx))
        return {"status": status & codec.U32}

    def async_context_requires_notify(self, params: Mapping[str, Any]) -> Any:
        return {"value": bool(self.adapter.async_context_requires_notify(self._ctx(params)))}

    def get_async_call_status(self, params: Mapping[str, Any]) -> Any:
        return {"status": self.adapter.get_async_call_status(self._ctx(params)) & codec.U32}

    # ---- async operations ------------------------------------------------------------------
    def acquire_credentials_handle_async(self, params: Mapping[str, Any]) -> Any:
        ctx = self._ctx(params)
        principal = _get(params, "principal", str, None)
        package = _get(params, "package", str)
        use = _get(params, "credential_use", int)
        try:
            auth = codec.decode_value(params.get("auth_data"))
        except codec.WireError as exc:
            raise bad_params(f"auth_data: {exc}") from None
        outputs = CallOutputs()
        return self._queue(
            "acquire_credentials_handle_async", ctx, outputs, None,
            lambda: self.adapter.acquire_credentials_handle_async(ctx, principal, package, use, auth, outputs),
        )

    def _buffers(self, params: Mapping[str, Any], name: str) -> list[SecBuffer] | None:
        try:
            return codec.decode_buffers(params.get(name))
        except codec.WireError as exc:
            raise bad_params(f"{name}: {exc}") from None

    def initialize_security_context_async(self, params: Mapping[str, Any]) -> Any:
        ctx = self._ctx(params)
        cred = self._resolve(self.creds, params.get("credential"))
        context = self._resolve(self.secctxs, params.get("context"))
        target = _get(params, "target", str, None)
        req = _get(params, "context_req", int)
        input = self._buffers(params, "input")
        outputs = CallOutputs(output=self._buffers(params, "output"))
        r1, r2 = _get(params, "reserved1", int, 0), _get(params, "reserved2", int, 0)
        drep = _get(params, "target_data_rep", int, 0)
        return self._queue(
            "initialize_security_context_async", ctx, outputs, input,
            lambda: self.adapter.initialize_security_context_async(
                ctx, cred, context, target, req, input, outputs, reserved1=r1, reserved2=r2, target_data_rep=drep
            ),
        )

    def accept_security_context_async(self, params: Mapping[str, Any]) -> Any:
        ctx = self._ctx(params)
        cred = self._resolve(self.creds, params.get("credential"))
        context = self._resolve(self.secctxs, params.get("context"))
        req = _get(params, "context_req", int)
        input = self._buffers(params, "input")
        outputs = CallOutputs(output=self._buffers(params, "output"))
        drep = _get(params, "target_data_rep", int, 0)
        return self._queue(
            "accept_security_context_async", ctx, outputs, input,
            lambda: self.adapter.accept_security_context_async(
                ctx, cred, context, input, req, outputs, target_data_rep=drep
            ),
        )

    def delete_security_context_async(self, params: Mapping[str, Any]) -> Any:
        ctx = self._ctx(params)
        context = self._resolve(self.secctxs, params.get("context"))
        return self._queue("delete_security_context_async", ctx, None, None,
                           lambda: self.adapter.delete_security_context_async(ctx, context))

    def free_credentials_handle_async(self, params: Mapping[str, Any]) -> Any:
        ctx = self._ctx(params)
        cred = self._resolve(self.creds, params.get("credential"))
        return self._queue("free_credentials_handle_async", ctx, None, None,
                           lambda: self.adapter.free_credentials_handle_async(ctx, cred))

    # ---- synchronous stream calls ----------------------------------------------------------
    def query_context_attributes(self, params: Mapping[str, Any]) -> Any:
        context = self._resolve(self.secctxs, params.get("context"))
        status, value = self.adapter.query_context_attributes(context, _get(params, "attribute", int))
        try:
            wire = codec.encode_value(value)
        except TypeError as exc:
            raise RpcError(p.UNSUPPORTED, f"attribute value cannot cross the protocol: {exc}") from None
        return {"status": status & codec.U32, "value": wire}

    def encrypt_message(self, params: Mapping[str, Any]) -> Any:
        context = self._resolve(self.secctxs, params.get("context"))
        buffers = self._buffers(params, "buffers") or []
        status = self.adapter.encrypt_message(context, _get(params, "qop", int, 0), buffers,
                                              _get(params, "seqno", int, 0))
        return {"status": status & codec.U32, "buffers": codec.encode_buffers(buffers)}

    def decrypt_message(self, params: Mapping[str, Any]) -> Any:
        context = self._resolve(self.secctxs, params.get("context"))
        buffers = self._buffers(params, "buffers") or []
        status, qop = self.adapter.decrypt_message(context, buffers, _get(params, "seqno", int, 0))
        return {"status": status & codec.U32, "qop": qop & codec.U32, "buffers": codec.encode_buffers(buffers)}

    def apply_control_token(self, params: Mapping[str, Any]) -> Any:
        context = self._resolve(self.secctxs, params.get("context"))
        buffers = self._buffers(params, "buffers") or []
        status = self.adapter.apply_control_token(context, buffers)
        return {"status": status & codec.U32, "buffers": codec.encode_buffers(buffers)}

    def complete_auth_token(self, params: Mapping[str, Any]) -> Any:
        context = self._resolve(self.secctxs, params.get("context"))
        buffers = self._buffers(params, "buffers") or []
        status = self.adapter.complete_auth_token(context, buffers)
        return {"status": status & codec.U32, "buffers": codec.encode_buffers(buffers)}

    # ---- diagnostics and completion control ------------------------------------------------
    def note(self, requirement: str, message: str, party: str) -> None:
        """A finding of the agent itself, reported with the implementation's (drained once)."""
        with self._lock:
            self._notes.append({"requirement": requirement, "message": message, "party": party, "call": None})

    def _drain_notes(self) -> list[dict[str, Any]]:
        with self._lock:
            notes, self._notes = self._notes, []
        return notes

    def diagnostics(self, params: Mapping[str, Any]) -> Any:
        found = [codec.encode_violation(v) for v in self.adapter.diagnostics()]
        return {"violations": found + self._drain_notes() if self._notes else found}

    def close(self) -> Any:
        """Close the adapter; callbacks it runs while closing are still forwarded."""
        try:
            self.adapter.close()
            violations = self.adapter.diagnostics()
        finally:
            self.closed = True
        return {"violations": [codec.encode_violation(v) for v in violations] + self._drain_notes()}

    def _control(self) -> Any:
        control = self.adapter.control
        if control is None:
            raise RpcError(p.METHOD_NOT_FOUND, "completion control is not offered")
        return control

    def control_mode(self, params: Mapping[str, Any]) -> Any:
        return {"mode": self._control().mode}

    def control_set_mode(self, params: Mapping[str, Any]) -> Any:
        self._control().set_mode(_get(params, "mode", str))
        return {}

    def control_pending(self, params: Mapping[str, Any]) -> Any:
        return {"contexts": [self.ctxs.wire(c) for c in self._control().pending()]}

    def control_complete(self, params: Mapping[str, Any]) -> Any:
        return {"completed": bool(self._control().complete(self._ctx(params)))}

    def control_complete_all(self, params: Mapping[str, Any]) -> Any:
        return {"count": int(self._control().complete_all())}

    def control_inject_fault(self, params: Mapping[str, Any]) -> Any:
        fault = _get(params, "fault", str)
        try:
            extra = codec.decode_value(params.get("params") or {})
        except codec.WireError as exc:
            raise bad_params(f"params: {exc}") from None
        if not isinstance(extra, dict) or not all(isinstance(k, str) for k in extra):
            raise bad_params("params must be an object")
        self._control().inject_fault(fault, **extra)
        return {}
