"""Constants of remote protocol v1 (docs/protocol.md): version, error codes, PROTO-n rules.

Kept free of any I/O so that the client, the agent, the tests and the documentation all
read the same numbers from one place.
"""

from __future__ import annotations

PROTOCOL_VERSION = "1"
JSONRPC = "2.0"

DEFAULT_CALL_TIMEOUT_MS = 5000
DEFAULT_START_TIMEOUT_MS = 15000
DEFAULT_IDLE_TIMEOUT_MS = 60000
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024

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
