"""Constants of remote protocol v1 (docs/protocol.md): version, error codes, PROTO-n rules,
and the rule that matches a callback to the queued call it completes.

Kept free of any I/O so that the client, the agent, the tests and the documentation all
read the same numbers (and match callbacks the same way) from one place.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol, TypeVar

PROTOCOL_VERSION = "1"
JSONRPC = "2.0"

DEFAULT_CALL_TIMEOUT_MS = 5000
DEFAULT_START_TIMEOUT_MS = 15000
DEFAULT_IDLE_TIMEOUT_MS = 60000
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024

# ---- the held-callbacks extension (docs/protocol.md, section 5) --------------------------------
HELD_CALLBACKS = "held-callbacks"  # offered in initialize.extensions, accepted in its result
CALLBACK_RETURNED = "callback_returned"  # client -> agent notification: {"hold": token}
MAX_HOLD_TIMEOUT_MS = 600_000  # an agent holds a callback at most this long whatever is offered

# ---- JSON-RPC 2.0 error codes ----------------------------------------------------------------
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# Application codes (the -32000..-32099 server range).
UNSUPPORTED = -32001  # adapters.api.Unsupported raised by the implementation
NOT_INITIALIZED = -32002  # a call before `initialize` (or after `close`)
IMPLEMENTATION_CRASHED = -32003  # the wrapped implementation died (e.g. an isolated native worker)
IMPLEMENTATION_HUNG = -32004  # the wrapped implementation stopped answering
ADAPTER_ERROR = -32005  # any other adapters.api.AdapterError
VERSION_MISMATCH = -32006  # `initialize` asked for a protocol version the agent does not speak

# ---- protocol rules the client checks (party "implementation": the agent broke them) ----------
PROTO: dict[str, str] = {
    "PROTO-1": "every message is one line of UTF-8 JSON holding a JSON-RPC 2.0 object",
    "PROTO-2": "no message line is longer than the client's max_message_bytes",
    "PROTO-3": "every response carries the id of a request the client sent and has not been answered",
    "PROTO-4": "initialize answers with protocol version '1', a name, a version and capability lists",
    "PROTO-5": "a callback notification names an async-context handle minted in this session",
    "PROTO-6": "a callback notification carries a callback_data value the client registered",
    "PROTO-7": "at most one callback notification per accepted queued call (OQ-13)",
    "PROTO-8": "every request is answered within call_timeout_ms",
    "PROTO-9": "the agent keeps its stream open and alive for the whole session",
    "PROTO-10": "the agent sends only the notifications of the protocol, never requests",
    "PROTO-11": "results have the shape docs/protocol.md gives for their method",
    # Recorded by the agent, party "caller": the client's side kept the implementation waiting.
    "PROTO-12": "the client returns every held callback within the hold timeout (held-callbacks)",
}

# Methods that are answered even when no session is open.
SESSION_FREE_METHODS = frozenset({"initialize", "shutdown"})

CONTROL_METHODS = (
    "control.mode",
    "control.set_mode",
    "control.pending",
    "control.complete",
    "control.complete_all",
    "control.inject_fault",
)


# ---- matching a callback to the call it completes ----------------------------------------------


class QueuedCall(Protocol):
    silent: bool  # queued with no callback registered: its completion sends no notification


Q = TypeVar("Q", bound=QueuedCall)


def take_completed(calls: deque[Q]) -> Q | None:
    """Remove and return the queued call a callback on one async context completes.

    ``calls`` holds that context's accepted calls in queue order.  Client and agent apply the
    same rule, so both attach a notification to the same call (docs/protocol.md, section 5).
    A call queued while no callback was registered (a NULL-callback delete, NOTIFY-4/5)
    completes without a callback, so it can never be the one a callback names.  Calls on one
    async context run one at a time (CTX-4, OQ-7), so when a callback arrives for a call
    queued after such silent calls, those completed already: they are dropped too, never
    left in front to capture a later completion.  A callback with only silent calls queued
    (an implementation calling a callback nobody registered) is given the oldest of them.
    """
    if not calls:
        return None
    if not calls[0].silent:  # the usual case: the oldest call is the notified one
        return calls.popleft()
    for i, call in enumerate(calls):
        if not call.silent:
            for _ in range(i):
                calls.popleft()
            return calls.popleft()
    return calls.popleft()


def drop_silent_before(calls: deque[Q], accepted: Q) -> None:
    """``accepted`` was just accepted: silent calls queued before it have completed (CTX-4,
    OQ-7) and will never be named by a notification; forget them so they cannot pile up.
    (``accepted`` may be gone already: an inline completion took it.)"""
    if not calls or calls[0] is accepted:
        return
    kept: list[Q] = []
    before = True
    for call in calls:
        if call is accepted:
            before = False
        elif before and call.silent:
            continue
        kept.append(call)
    if len(kept) != len(calls):
        calls.clear()
        calls.extend(kept)
