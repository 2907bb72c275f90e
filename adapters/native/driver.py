"""A small synchronous driver over any Adapter: queue, wait for the callback, read status.

Used by the native adapter's tests, its benchmark and the subprocess probes; it follows
the documented flow (create -> register -> queue -> callback -> status -> free, A.7) and
knows nothing about pytest or scenarios.
"""

from __future__ import annotations

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


def acquire(adapter: Adapter, package: str, use: int, auth: Mapping[str, Any] | None) -> tuple[int, Handle | None]:
    outputs = CallOutputs()
    status = wait_call(
        adapter, lambda c: adapter.acquire_credentials_handle_async(c, None, package, use, auth, outputs)
    )
    return status, outputs.credential


def token_outputs(capacity: int = 4096) -> CallOutputs:
    return CallOutputs(output=[SecBuffer(SECBUFFER_TOKEN, size=capacity)])


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


@dataclass
class Handshake:
    """The handles and statuses of one client/server exchange."""

    client_cred: Handle | None
    server_cred: Handle | None
    client_ctx: Handle | None = None
    server_ctx: Handle | None = None
    statuses: tuple[int, ...] = ()

    def release(self, adapter: Adapter) -> None:
        for ctxt in (self.client_ctx, self.server_ctx):
            if ctxt is not None:
                delete(adapter, ctxt)
        for cred in (self.client_cred, self.server_cred):
            if cred is not None:
                free(adapter, cred)


def handshake(
    adapter: Adapter, client_auth: Mapping[str, Any], server_auth: Mapping[str, Any], package: str = "NTLM",
    max_legs: int = 6,
) -> Handshake:
    """Run ISC/ASC legs until a leg fails or produces no token; statuses in leg order."""
    _, ccred = acquire(adapter, package, SECPKG_CRED_OUTBOUND, client_auth)
    _, scred = acquire(adapter, package, SECPKG_CRED_INBOUND, server_auth)
    result = Handshake(ccred, scred)
    statuses: list[int] = []
    status, out = initialize(adapter, ccred, None, None)
    statuses.append(status)
    result.client_ctx = out.new_context
    message = token(out)
    for leg in range(max_legs):
        if leg % 2 == 0:
            status, out = accept(adapter, scred, result.server_ctx, message)
            result.server_ctx = out.new_context or result.server_ctx
        else:
            status, out = initialize(adapter, ccred, result.client_ctx, message)
            result.client_ctx = out.new_context or result.client_ctx
        statuses.append(status)
        message = token(out)
        if st.failed(status) or not message:
            break  # a failure, or nothing left for the peer to process
    result.statuses = tuple(statuses)
    return result
