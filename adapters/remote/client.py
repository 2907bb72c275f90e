"""RemoteAdapter: the Adapter interface, implemented by talking protocol v1 to an agent.

The caller's objects never cross the wire.  Handles are the agent's strings, used as-is;
callbacks and their data stay here, registered under a small integer token that travels
as ``callback_data``; a queued call's CallOutputs and input buffers stay here too and are
written from the completion notification *before* the caller's callback runs (GEN-10,
OQ-10), exactly as an in-process implementation writes through the pointers it was given.
Which queued call a notification completes is decided by ``protocol.take_completed``, the
rule the agent applies too (docs/protocol.md, section 5).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from adapters import status as st
from adapters.api import (
    Adapter,
    AdapterError,
    Callback,
    CallOutputs,
    Capabilities,
    CompletionControl,
    Handle,
    ImplementationCrashed,
    SecBuffer,
    Unsupported,
    Violation,
)
from adapters.remote import codec
from adapters.remote import protocol as p
from adapters.remote.connection import Connection, Thunk

CLIENT_NAME = "async-sspi-conformance remote client"
CLIENT_VERSION = "1"


@dataclass(slots=True)
class _Queued:
    """A call accepted (or about to be) on an async context, awaiting its callback."""

    operation: str
    outputs: CallOutputs | None
    input: list[SecBuffer] | None
    notify: bool  # counted in Connection.expect() until consumed or given up
    silent: bool  # queued with no callback registered: no notification will name it (NOTIFY-4)


@dataclass(frozen=True, slots=True)
class CallbackInfo:
    """Where and when the agent ran a callback (the notification's metadata)."""

    ctx: str
    operation: str | None
    thread: int | None
    time_ns: int | None


class RemoteAdapter(Adapter):
    """One session with an agent.  Build it with :func:`adapters.remote.create`."""

    def __init__(
        self,
        connection: Connection,
        call_timeout: float,
        release: Callable[[Connection], None] | None = None,
        held_callbacks: bool = True,
    ) -> None:
        self._conn = connection
        self._offer_held = held_callbacks
        # The agent accepted held-callbacks: each notification with a ``hold`` token waits
        # in the agent until we send the token back after the caller's callback returned.
        self.held_callbacks = False
        self._holding: dict[int, int] = {}  # threads running held callbacks -> nesting depth
        self._held_cv = threading.Condition(threading.Lock())
        self._timeout = call_timeout
        self._release = release
        self._caps: Capabilities | None = None
        self._control: RemoteControl | None = None
        self._lock = threading.Lock()
        self._tokens: dict[int, tuple[Callback | None, Any]] = {}
        self._token_ids = itertools.count(1)
        self._callback_token: dict[str, int | None] = {}
        self._queued: dict[Any, deque[_Queued]] = {}
        self._contexts: set[str] = set()
        self._foreign: dict[int, tuple[object, str]] = {}
        self._closed = False
        self._final: list[Violation] = []
        self._caller_violations: list[Violation] = []
        # While a callback runs: the status the agent read inside the implementation's
        # callback, per thread running one (see _invoke).
        self._seen: dict[int, tuple[str, int]] = {}
        self.agent_info: dict[str, Any] = {}
        self.last_callback: CallbackInfo | None = None
        connection.sink = self

    # ---- session ---------------------------------------------------------------------------
    def initialize(self, options: Mapping[str, str], timeout: float) -> None:
        """Open the session (``initialize``); raises ImplementationCrashed on a bad answer."""
        params: dict[str, Any] = {
            "protocol": p.PROTOCOL_VERSION,
            "client": {"name": CLIENT_NAME, "version": CLIENT_VERSION},
            "options": dict(options),
        }
        if self._offer_held:
            # The agent may hold a callback this long for us; reuses the per-call timeout.
            params["extensions"] = {p.HELD_CALLBACKS: {"timeout_ms": max(1, round(self._timeout * 1000))}}
        res = self._conn.request("initialize", params, timeout)
        try:
            if not isinstance(res, dict) or res.get("protocol") != p.PROTOCOL_VERSION:
                raise codec.WireError(f"protocol version {res.get('protocol') if isinstance(res, dict) else res!r}")
            impl = res.get("implementation")
            if not isinstance(impl, dict):
                raise codec.WireError("missing implementation object")
            self._caps = codec.decode_capabilities(impl.get("name"), impl.get("version"), res.get("capabilities"))
        except codec.WireError as exc:
            self._conn.violate("PROTO-4", f"initialize answer: {exc}", "initialize")
            raise ImplementationCrashed(f"remote agent {self._conn.label} broke PROTO-4: {exc}") from None
        agent = res.get("agent")
        self.agent_info = agent if isinstance(agent, dict) else {}
        accepted = res.get("extensions")
        self.held_callbacks = self._offer_held and isinstance(accepted, dict) and p.HELD_CALLBACKS in accepted
        if "completion-control" in self._caps.features:
            self._control = RemoteControl(self)

    def _call(self, method: str, params: dict[str, Any]) -> Any:
        if self._closed:
            raise AdapterError(f"{method} on a closed remote adapter")
        if self._seen:  # a callback that calls in sees the agent's state from now on
            self._seen.pop(threading.get_ident(), None)
        if self._holding:
            self._await_held()
        return self._conn.request(method, params, self._timeout)

    def _field(self, res: Any, key: str, method: str) -> Any:
        if not isinstance(res, dict) or key not in res:
            self._conn.violate("PROTO-11", f"{method} result lacks {key!r}: {res!r}", method)
            raise ImplementationCrashed(f"remote agent answered {method} without {key!r} (PROTO-11)")
        return res[key]

    def _status(self, res: Any, method: str) -> int:
        value = self._field(res, "status", method)
        try:
            return codec.u32(value, "status")
        except codec.WireError as exc:
            self._conn.violate("PROTO-11", f"{method}: {exc}", method)
            raise ImplementationCrashed(f"remote agent answered {method} with a bad status (PROTO-11)") from None

    def _h(self, handle: Handle | None) -> str | None:
        """Wire form of a handle.  Values we never got from the agent (garbage handles a
        test passes on purpose) get a stable string the agent will not know."""
        if handle is None or isinstance(handle, str):
            return handle
        entry = self._foreign.get(id(handle))
        if entry is None or entry[0] is not handle:
            entry = (handle, f"foreign:{len(self._foreign) + 1}:{type(handle).__name__}")
            self._foreign[id(handle)] = entry  # keeps the object alive so id() stays unique
        return entry[1]

    # ---- introspection ---------------------------------------------------------------------
    def capabilities(self) -> Capabilities:
        if self._caps is None:
            raise AdapterError("remote session not initialized")
        return self._caps

    @property
    def control(self) -> CompletionControl | None:
        return self._control

    def diagnostics(self) -> list[Violation]:
        found: list[Violation] = []
        if self._closed:
            found, self._final = self._final, []
        elif self._conn.dead is None:
            res = self._call("diagnostics", {})
            try:
                found = codec.decode_violations(self._field(res, "violations", "diagnostics"))
            except codec.WireError as exc:
                self._conn.violate("PROTO-11", f"diagnostics: {exc}", "diagnostics")
        with self._lock:
            local, self._caller_violations = self._caller_violations, []
        return found + local + self._conn.drain_violations()

    def close(self) -> None:
        if self._closed:
            return
        conn = self._conn
        if conn.dead is None:
            try:
                res = conn.request("close", {}, self._timeout)
                self._final = codec.decode_violations(self._field(res, "violations", "close"))
            except codec.WireError as exc:
                conn.violate("PROTO-11", f"close: {exc}", "close")
            except AdapterError as exc:
                self._final.append(Violation("PROTO-9", f"close failed: {exc}", "implementation", "close"))
        self._closed = True
        conn.sink = None
        conn.reset_expected()
        if self._release is not None:
            self._release(conn)
        else:
            conn.close()

    # ---- notifications ---------------------------------------------------------------------
    def prepare_notification(self, method: str, params: Any) -> Thunk | None:
        if not self.held_callbacks or type(params) is not dict or "hold" not in params:
            return self._prepare_callback(method, params)
        # Held callback: the agent waits inside the implementation's callback until we
        # return its token, after the caller's callback (and every call it made) returned;
        # also when no callback runs (a protocol violation) and when it raised (NOTIFY-1).
        hold = params["hold"]
        try:
            thunk = self._prepare_callback(method, params)
        except BaseException:
            self._return_hold(hold)
            raise
        if thunk is None:
            self._return_hold(hold)
            return None
        run = thunk

        def held() -> None:
            me = threading.get_ident()
            with self._held_cv:
                self._holding[me] = self._holding.get(me, 0) + 1
            try:
                run()
            finally:
                self._return_hold(hold)
                with self._held_cv:
                    depth = self._holding.pop(me) - 1
                    if depth:
                        self._holding[me] = depth
                    self._held_cv.notify_all()

        return held

    def _await_held(self) -> None:
        """A thread outside every held callback calls in: first let callbacks held on other
        threads return.  Such a call usually follows from the callback (it woke the caller
        up), and in-process it reaches the implementation after the implementation's
        callback returned; sent earlier it would overtake the callback_returned.  A thread
        running a held callback never waits (nested calls, two callbacks calling in), and
        the wait is bounded: a callback that waits for this very thread would deadlock."""
        me = threading.get_ident()
        deadline = time.monotonic() + self._timeout
        with self._held_cv:
            while self._holding and me not in self._holding:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._held_cv.wait(remaining)

    def _return_hold(self, hold: Any) -> None:
        self._conn.notify(p.CALLBACK_RETURNED, {"hold": hold}, self._timeout)

    def _prepare_callback(self, method: str, params: Any) -> Thunk | None:
        conn = self._conn
        if method != "callback":
            conn.violate("PROTO-10", f"unknown notification {method!r}")
            return None
        if not isinstance(params, dict):
            conn.violate("PROTO-11", f"callback params must be an object, got {params!r}")
            return None
        ctx = params.get("ctx")
        if not isinstance(ctx, str) or ctx not in self._contexts:
            conn.violate("PROTO-5", f"callback for unknown async context {ctx!r}")
            return None
        with self._lock:
            dq = self._queued.get(ctx)
            queued = p.take_completed(dq) if dq else None
        if queued is None:
            conn.violate("PROTO-7", f"second callback for {ctx}, or a callback with no call queued (OQ-13)")
            return None
        if queued.notify:
            queued.notify = False
            conn.expect(-1)
        try:
            if queued.outputs is not None and params.get("outputs") is not None:
                codec.apply_outputs(params["outputs"], queued.outputs)
            if params.get("input") is not None:
                codec.update_buffers(queued.input, codec.decode_buffers(params["input"]))
        except codec.WireError as exc:
            conn.violate("PROTO-11", f"callback outputs for {ctx}: {exc}", queued.operation)
        seen = params.get("status")
        if seen is not None and (type(seen) is not int or not 0 <= seen <= codec.U32):
            conn.violate("PROTO-11", f"callback for {ctx}: status {seen!r} is not an unsigned 32-bit int",
                         queued.operation)
            seen = None
        thread, when = params.get("thread"), params.get("time_ns")
        self.last_callback = CallbackInfo(
            ctx, queued.operation, thread if type(thread) is int else None, when if type(when) is int else None
        )
        token = params.get("callback_data")
        entry = self._tokens.get(token) if type(token) is int else None
        if entry is None:
            conn.violate("PROTO-6", f"callback for {ctx} carries unregistered callback_data {token!r} (NOTIFY-2)")
            return None
        callback, data = entry
        if callback is None:
            conn.violate("PROTO-6", f"callback for {ctx} names a registration without a callback (NOTIFY-3)")
            return None
        return lambda: self._invoke(callback, ctx, data, seen)

    def _invoke(self, callback: Callback, ctx: str, data: Any, seen: int | None) -> None:
        # The agent read the status inside the implementation's callback; the caller's
        # callback runs later, here.  Its status read, if it is its first call, gets that
        # value: the one it would have read in-process at that moment (NOTIFY-8: a status
        # still pending in the callback is the implementation's breach, and must not be
        # hidden because the implementation stored the result after its callback returned).
        me = threading.get_ident()
        if seen is not None:
            self._seen[me] = (ctx, seen)
        try:
            callback(ctx, data)
        except Exception as exc:  # as the simulator does: a caller bug is reported, never raised here
            with self._lock:
                self._caller_violations.append(
                    Violation("NOTIFY-1", f"the caller's callback raised {exc!r}", "caller")
                )
        finally:
            if seen is not None:
                self._seen.pop(me, None)

    def _expect_queue(self, ctx: str | None, operation: str, outputs: CallOutputs | None,
                      input: list[SecBuffer] | None) -> _Queued:
        notify = ctx is not None and self._callback_token.get(ctx) is not None
        queued = _Queued(operation, outputs, input, notify, not notify)
        with self._lock:
            self._queued.setdefault(ctx, deque()).append(queued)
        if notify:
            self._conn.expect(1)
        return queued

    def _forget(self, ctx: str | None, queued: _Queued) -> None:
        with self._lock:
            dq = self._queued.get(ctx)
            if dq is not None:
                for i, q in enumerate(dq):
                    if q is queued:
                        del dq[i]
                        break
        if queued.notify:
            queued.notify = False
            self._conn.expect(-1)

    def _queue(self, method: str, params: dict[str, Any], outputs: CallOutputs | None,
               input: list[SecBuffer] | None) -> int:
        ctx = params["ctx"]
        queued = self._expect_queue(ctx, method, outputs, input)
        try:
            res = self._call(method, params)
            status = self._status(res, method)
        except BaseException:
            self._forget(ctx, queued)
            raise
        if status != st.SEC_E_OK:
            self._forget(ctx, queued)  # a refused queue never calls back (OQ-5)
            return status
        with self._lock:  # the calls queued before this one are over (CTX-4, OQ-7)
            dq = self._queued.get(ctx)
            if dq:
                p.drop_silent_before(dq, queued)
        if isinstance(res, dict) and res.get("outputs") is not None:
            # The implementation wrote outputs before completing (a GEN-10 breach the
            # monitor must be able to see): mirror that write now.
            with self._lock:
                still_queued = any(q is queued for q in self._queued.get(ctx, ()))
            if still_queued and outputs is not None:
                try:
                    codec.apply_outputs(res["outputs"], outputs)
                except codec.WireError as exc:
                    self._conn.violate("PROTO-11", f"{method} early outputs: {exc}", method)
        return status

    # ---- async context management ----------------------------------------------------------
    def create_async_context(self) -> Handle | None:
        ctx = self._field(self._call("create_async_context", {}), "ctx", "create_async_context")
        if ctx is not None and not isinstance(ctx, str):
            self._conn.violate("PROTO-11", f"create_async_context returned {ctx!r}", "create_async_context")
            raise ImplementationCrashed("remote agent returned a non-string handle (PROTO-11)")
        if ctx is not None:
            self._contexts.add(ctx)
        return ctx

    def free_async_context(self, ctx: Handle | None) -> None:
        h = self._h(ctx)
        self._call("free_async_context", {"ctx": h})
        if h is not None:
            self._callback_token.pop(h, None)  # the registration dies with the context, as in the agent
        # Callbacks of calls still pending are no longer awaited (OQ-12 defers destruction
        # without a callback); if one comes anyway it is still delivered, as in-process.
        with self._lock:
            given_up = [q for q in self._queued.get(h, ()) if q.notify]
            for q in given_up:
                q.notify = False
        if given_up:
            self._conn.expect(-len(given_up))

    def reinit_async_context(self, ctx: Handle | None) -> int:
        return self._status(self._call("reinit_async_context", {"ctx": self._h(ctx)}), "reinit_async_context")

    def set_async_notify_callback(self, ctx: Handle | None, callback: Callback | None, data: Any = None) -> int:
        h = self._h(ctx)
        token = next(self._token_ids)
        self._tokens[token] = (callback, data)
        res = self._call("set_async_notify_callback", {"ctx": h, "callback": callback is not None,
                                                       "callback_data": token})
        status = self._status(res, "set_async_notify_callback")
        if status == st.SEC_E_OK and h is not None:
            self._callback_token[h] = token if callback is not None else None
        return status

    def async_context_requires_notify(self, ctx: Handle | None) -> bool:
        value = self._field(self._call("async_context_requires_notify", {"ctx": self._h(ctx)}), "value",
                            "async_context_requires_notify")
        return bool(value)

    def get_async_call_status(self, ctx: Handle | None) -> int:
        h = self._h(ctx)
        if self._seen:
            seen = self._seen.pop(threading.get_ident(), None)
            if seen is not None and seen[0] == h:
                return seen[1]  # the callback's first call: the status at its start (see _invoke)
        return self._status(self._call("get_async_call_status", {"ctx": h}), "get_async_call_status")

    # ---- async operations ------------------------------------------------------------------
    def acquire_credentials_handle_async(
        self,
        ctx: Handle | None,
        principal: str | None,
        package: str,
        credential_use: int,
        auth_data: Mapping[str, Any] | None,
        outputs: CallOutputs,
    ) -> int:
        try:
            wire_auth = codec.encode_value(auth_data)
        except TypeError as exc:
            raise Unsupported(f"auth_data cannot cross the remote protocol: {exc}") from None
        params = {"ctx": self._h(ctx), "principal": principal, "package": package,
                  "credential_use": credential_use, "auth_data": wire_auth}
        return self._queue("acquire_credentials_handle_async", params, outputs, None)

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
        params = {"ctx": self._h(ctx), "credential": self._h(credential), "context": self._h(context),
                  "target": target, "context_req": context_req, "input": codec.encode_buffers(input),
                  "output": codec.encode_buffers(outputs.output), "reserved1": reserved1, "reserved2": reserved2,
                  "target_data_rep": target_data_rep}
        return self._queue("initialize_security_context_async", params, outputs, input)

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
        params = {"ctx": self._h(ctx), "credential": self._h(credential), "context": self._h(context),
                  "input": codec.encode_buffers(input), "context_req": context_req,
                  "output": codec.encode_buffers(outputs.output), "target_data_rep": target_data_rep}
        return self._queue("accept_security_context_async", params, outputs, input)

    def delete_security_context_async(self, ctx: Handle | None, context: Handle | None) -> int:
        params = {"ctx": self._h(ctx), "context": self._h(context)}
        return self._queue("delete_security_context_async", params, None, None)

    def free_credentials_handle_async(self, ctx: Handle | None, credential: Handle | None) -> int:
        params = {"ctx": self._h(ctx), "credential": self._h(credential)}
        return self._queue("free_credentials_handle_async", params, None, None)

    # ---- synchronous stream calls ----------------------------------------------------------
    def _buffers_back(self, res: Any, buffers: list[SecBuffer], method: str) -> None:
        try:
            codec.update_buffers(buffers, codec.decode_buffers(self._field(res, "buffers", method)))
        except codec.WireError as exc:
            self._conn.violate("PROTO-11", f"{method} buffers: {exc}", method)
            raise ImplementationCrashed(f"remote agent answered {method} with bad buffers (PROTO-11)") from None

    def query_context_attributes(self, context: Handle | None, attribute: int) -> tuple[int, Any]:
        res = self._call("query_context_attributes", {"context": self._h(context), "attribute": attribute})
        status = self._status(res, "query_context_attributes")
        try:
            value = codec.decode_value(res.get("value"))
        except codec.WireError as exc:
            self._conn.violate("PROTO-11", f"query_context_attributes value: {exc}", "query_context_attributes")
            raise ImplementationCrashed("remote agent answered query_context_attributes badly (PROTO-11)") from None
        return status, value

    def encrypt_message(self, context: Handle | None, qop: int, buffers: list[SecBuffer], seqno: int = 0) -> int:
        res = self._call("encrypt_message", {"context": self._h(context), "qop": qop,
                                             "buffers": codec.encode_buffers(buffers), "seqno": seqno})
        status = self._status(res, "encrypt_message")
        self._buffers_back(res, buffers, "encrypt_message")
        return status

    def decrypt_message(self, context: Handle | None, buffers: list[SecBuffer], seqno: int = 0) -> tuple[int, int]:
        res = self._call("decrypt_message", {"context": self._h(context), "buffers": codec.encode_buffers(buffers),
                                             "seqno": seqno})
        status = self._status(res, "decrypt_message")
        self._buffers_back(res, buffers, "decrypt_message")
        qop = self._field(res, "qop", "decrypt_message")
        return status, qop if type(qop) is int else 0

    def apply_control_token(self, context: Handle | None, buffers: list[SecBuffer]) -> int:
        res = self._call("apply_control_token", {"context": self._h(context),
                                                 "buffers": codec.encode_buffers(buffers)})
        status = self._status(res, "apply_control_token")
        self._buffers_back(res, buffers, "apply_control_token")
        return status

    def complete_auth_token(self, context: Handle | None, buffers: list[SecBuffer]) -> int:
        res = self._call("complete_auth_token", {"context": self._h(context),
                                                 "buffers": codec.encode_buffers(buffers)})
        status = self._status(res, "complete_auth_token")
        self._buffers_back(res, buffers, "complete_auth_token")
        return status

    # ---- raw access ------------------------------------------------------------------------
    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Send any method (extensions, tests); -32601 raises Unsupported."""
        return self._call(method, params or {})


class RemoteControl(CompletionControl):
    """CompletionControl over ``control.*`` requests (agent claims ``completion-control``)."""

    def __init__(self, adapter: RemoteAdapter) -> None:
        self._a = adapter

    @property
    def mode(self) -> str:
        return str(self._a._field(self._a._call("control.mode", {}), "mode", "control.mode"))

    def set_mode(self, mode: str) -> None:
        self._a._call("control.set_mode", {"mode": mode})

    def pending(self) -> list[Handle]:
        value = self._a._field(self._a._call("control.pending", {}), "contexts", "control.pending")
        return list(value) if isinstance(value, list) else []

    def complete(self, ctx: Handle) -> bool:
        # Notifications written before the response (the callback of this completion) are
        # read and dispatched by request() before it returns.
        res = self._a._call("control.complete", {"ctx": self._a._h(ctx)})
        return bool(self._a._field(res, "completed", "control.complete"))

    def complete_all(self) -> int:
        count = self._a._field(self._a._call("control.complete_all", {}), "count", "control.complete_all")
        return count if type(count) is int else 0

    def inject_fault(self, fault: str, **params: Any) -> None:
        try:
            wire = codec.encode_value(params)
        except TypeError as exc:
            raise Unsupported(f"fault parameters cannot cross the remote protocol: {exc}") from None
        self._a._call("control.inject_fault", {"fault": fault, "params": wire})
