"""A small synchronous driver over any Adapter: queue, wait for the callback, read status.

Used by the native adapter's tests, its benchmark and the subprocess probes; it follows
the documented flow (create -> register -> queue -> callback -> status -> free, A.7) and
knows nothing about pytest or scenarios.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from adapters import status as st
from adapters.api import Adapter, CallOutputs, Handle, SecBuffer
from adapters.constants import SECBUFFER_TOKEN, SECPKG_CRED_INBOUND, SECPKG_CRED_OUTBOUND


class CallTimeout(RuntimeError):
    """The callback of a queued call did not arrive in time."""


def wait_call(adapter: Adapter, queue: Callable[[Handle], int], timeout: float = 10.0) -> int:
    """Queue one operation on a fresh async context and return its completion status.

    A refused queue returns the refusal status (no callback is due, OQ-5)."""
    done = threading.Event()
    ctx = adapter.create_async_context()
    try:
        adapter.set_async_notify_callback(ctx, lambda _ctx, _data: done.set(), None)
        queued = queue(ctx)
        if queued != st.SEC_E_OK:
            return queued
        if not done.wait(timeout):
            raise CallTimeout(f"no completion callback within {timeout}s")
        return adapter.get_async_call_status(ctx)
    finally:
        if done.is_set():
            adapter.free_async_context(ctx)


class AsyncCaller:
    """One async context reused for a sequence of calls, as a C caller would do it: the
    callback is registered once (NOTIFY-7 keeps it across reinit), each later call is
    preceded by SspiReinitAsyncContext (REINIT-1), and completion is signalled through a
    plain lock instead of a fresh Event per call."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter
        self.ctx = adapter.create_async_context()
        self._done = threading.Lock()
        self._done.acquire()
        self._used = False
        adapter.set_async_notify_callback(self.ctx, self._notify, None)

    def _notify(self, _ctx: Any, _data: Any) -> None:
        self._done.release()

    def run(self, queue: Callable[[Handle], int], timeout: float = 10.0) -> int:
        """Queue one operation and return its completion status (or the refusal)."""
        adapter = self.adapter
        if self._used:
            reinit = adapter.reinit_async_context(self.ctx)
            if reinit != st.STATUS_SUCCESS:
                raise RuntimeError(f"SspiReinitAsyncContext refused: {st.describe(reinit)}")
        queued = queue(self.ctx)
        if queued != st.SEC_E_OK:
            return queued
        self._used = True
        # Inline completion has already released the lock; only a pending call waits.
        if not self._done.acquire(False) and not self._done.acquire(timeout=timeout):
            raise CallTimeout(f"no completion callback within {timeout}s")
        return adapter.get_async_call_status(self.ctx)

    def close(self) -> None:
        self.adapter.free_async_context(self.ctx)


def acquire(adapter: Adapter, package: str, use: int, auth: Mapping[str, Any] | None) -> tuple[int, Handle | None]:
    outputs = CallOutputs()
    status = wait_call(
        adapter, lambda c: adapter.acquire_credentials_handle_async(c, None, package, use, auth, outputs)
    )
    return status, outputs.credential


def token_outputs(capacity: int = 4096) -> CallOutputs:
    # Positional arguments: the dataclasses' keyword handling costs as much as the rest.
    return CallOutputs(None, None, [SecBuffer(SECBUFFER_TOKEN, b"", capacity)])


def initialize(
    adapter: Adapter, cred: Handle | None, ctxt: Handle | None, token: bytes | None,
    target: str = "host/server", req: int = 0, outputs: CallOutputs | None = None,
) -> tuple[int, CallOutputs]:
    out = outputs if outputs is not None else token_outputs()
    inputs = None if token is None else [SecBuffer(SECBUFFER_TOKEN, token)]
    status = wait_call(
        adapter, lambda c: adapter.initialize_security_context_async(c, cred, ctxt, target, req, inputs, out)
    )
    return status, out


def accept(
    adapter: Adapter, cred: Handle | None, ctxt: Handle | None, token: bytes, req: int = 0,
    outputs: CallOutputs | None = None,
) -> tuple[int, CallOutputs]:
    out = outputs if outputs is not None else token_outputs()
    inputs = [SecBuffer(SECBUFFER_TOKEN, token)]
    status = wait_call(adapter, lambda c: adapter.accept_security_context_async(c, cred, ctxt, inputs, req, out))
    return status, out


def delete(adapter: Adapter, ctxt: Handle | None) -> int:
    return wait_call(adapter, lambda c: adapter.delete_security_context_async(c, ctxt))


def free(adapter: Adapter, cred: Handle | None) -> int:
    return wait_call(adapter, lambda c: adapter.free_credentials_handle_async(c, cred))


def token(outputs: CallOutputs) -> bytes:
    assert outputs.output is not None
    return outputs.output[0].data


def _delete_on(adapter: Adapter, ctx: Handle, *, context: Handle) -> int:
    return adapter.delete_security_context_async(ctx, context)


def _free_on(adapter: Adapter, ctx: Handle, *, credential: Handle) -> int:
    return adapter.free_credentials_handle_async(ctx, credential)


def _accept_on(adapter: Adapter, cred: Handle | None, context: Handle | None, inputs: list[SecBuffer],
               out: CallOutputs, ctx: Handle) -> int:
    return adapter.accept_security_context_async(ctx, cred, context, inputs, 0, out)


def _initialize_on(adapter: Adapter, cred: Handle | None, context: Handle | None, inputs: list[SecBuffer],
                   out: CallOutputs, ctx: Handle) -> int:
    return adapter.initialize_security_context_async(ctx, cred, context, "host/server", 0, inputs, out)


@dataclass
class Handshake:
    """The handles and statuses of one client/server exchange."""

    client_cred: Handle | None
    server_cred: Handle | None
    client_ctx: Handle | None = None
    server_ctx: Handle | None = None
    statuses: tuple[int, ...] = ()

    def release(self, adapter: Adapter, caller: AsyncCaller | None = None) -> None:
        """Delete both contexts and free both credentials (on ``caller``'s async context)."""
        runner = caller if caller is not None else AsyncCaller(adapter)
        try:
            for ctxt in (self.client_ctx, self.server_ctx):
                if ctxt is not None:
                    runner.run(functools.partial(_delete_on, adapter, context=ctxt))
            for cred in (self.client_cred, self.server_cred):
                if cred is not None:
                    runner.run(functools.partial(_free_on, adapter, credential=cred))
        finally:
            if caller is None:
                runner.close()


def handshake(
    adapter: Adapter, client_auth: Mapping[str, Any], server_auth: Mapping[str, Any], package: str = "NTLM",
    max_legs: int = 6, caller: AsyncCaller | None = None,
) -> Handshake:
    """Run ISC/ASC legs until a leg fails or produces no token; statuses in leg order.

    Every call goes through one reused async context (``caller``, or a temporary one)."""
    runner = caller if caller is not None else AsyncCaller(adapter)
    try:
        return _handshake(adapter, runner.run, client_auth, server_auth, package, max_legs)
    finally:
        if caller is None:
            runner.close()


def _handshake(
    adapter: Adapter, run: Callable[[Callable[[Handle], int]], int], client_auth: Mapping[str, Any],
    server_auth: Mapping[str, Any], package: str, max_legs: int,
) -> Handshake:
    outs = [CallOutputs(), CallOutputs()]
    run(lambda c: adapter.acquire_credentials_handle_async(c, None, package, SECPKG_CRED_OUTBOUND, client_auth,
                                                           outs[0]))
    run(lambda c: adapter.acquire_credentials_handle_async(c, None, package, SECPKG_CRED_INBOUND, server_auth,
                                                           outs[1]))
    ccred, scred = outs[0].credential, outs[1].credential
    result = Handshake(ccred, scred)
    out = token_outputs()
    statuses = [run(lambda c: adapter.initialize_security_context_async(c, ccred, None, "host/server", 0, None,
                                                                        out))]
    result.client_ctx = out.new_context
    message = token(out)
    for leg in range(max_legs):
        out = token_outputs()
        inputs = [SecBuffer(SECBUFFER_TOKEN, message)]
        if leg % 2 == 0:
            sctx = result.server_ctx
            status = run(functools.partial(_accept_on, adapter, scred, sctx, inputs, out))
            result.server_ctx = out.new_context or result.server_ctx
        else:
            cctx = result.client_ctx
            status = run(functools.partial(_initialize_on, adapter, ccred, cctx, inputs, out))
            result.client_ctx = out.new_context or result.client_ctx
        statuses.append(status)
        message = token(out)
        if st.failed(status) or not message:
            break  # a failure, or nothing left for the peer to process
    result.statuses = tuple(statuses)
    return result
