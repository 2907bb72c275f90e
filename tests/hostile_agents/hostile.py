"""A deliberately broken protocol-v1 agent, for the client's self-tests.

    python hostile.py MODE [TRIGGER]

It speaks just enough of the protocol (standard library only, as an agent in any language
would) to open a session, then misbehaves in MODE on the first request whose method is
TRIGGER (default ``get_async_call_status``).  Modes:

hang             never answer the trigger
exit             print a last word on stderr, exit with code 3 mid-call
signal           kill itself with SIGTERM mid-call
garbage          answer with a line that is not JSON
notjsonrpc       answer with a JSON object that is not JSON-RPC 2.0
huge             answer with a 100 MB line (no newline until the end)
flood            send callback notifications for an unknown context, for ever
unknown_ctx      send one callback for a context it never minted, then answer properly
bad_data         send one callback with a callback_data the client never registered
duplicate        on the trigger (a queueing call) call back twice
wrong_id         answer with an id the client never used
slow:SECONDS     answer after a delay
request          send the client a request (v1 agents only notify), then answer
exit_after_queue answer the trigger (a queueing call) with SEC_E_OK, then exit before calling back
hang_initialize  never answer initialize
bad_initialize   answer initialize claiming protocol version "2"
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

QUEUE_METHODS = {
    "acquire_credentials_handle_async", "initialize_security_context_async", "accept_security_context_async",
    "delete_security_context_async", "free_credentials_handle_async",
}


def send(obj: Any) -> None:
    sys.stdout.buffer.write(json.dumps(obj).encode() + b"\n")
    sys.stdout.buffer.flush()


def answer(rid: Any, result: Any) -> None:
    send({"jsonrpc": "2.0", "id": rid, "result": result})


def callback(ctx: str, data: Any) -> None:
    send({"jsonrpc": "2.0", "method": "callback",
          "params": {"ctx": ctx, "callback_data": data, "thread": 1, "time_ns": time.monotonic_ns()}})


def main(argv: list[str]) -> int:
    mode = argv[0]
    trigger = argv[1] if len(argv) > 1 else "get_async_call_status"
    contexts = 0
    data: dict[str, Any] = {}
    for raw in sys.stdin.buffer:
        msg = json.loads(raw)
        method, rid, params = msg["method"], msg.get("id"), msg.get("params") or {}
        if method == "initialize":
            if mode == "hang_initialize":
                time.sleep(3600)
            answer(rid, {"protocol": "2" if mode == "bad_initialize" else "1",
                         "implementation": {"name": "hostile", "version": mode},
                         "capabilities": {"packages": ["Sim"], "features": ["client"]}})
            continue
        if method == trigger:
            if misbehave(mode, rid, params, data):
                continue
        if method == "create_async_context":
            contexts += 1
            answer(rid, {"ctx": f"a{contexts}"})
        elif method == "set_async_notify_callback":
            data[params["ctx"]] = params.get("callback_data")
            answer(rid, {"status": 0})
        elif method in QUEUE_METHODS:
            callback(params["ctx"], data.get(params["ctx"]))  # inline completion
            answer(rid, {"status": 0})
        elif method in ("get_async_call_status", "reinit_async_context"):
            answer(rid, {"status": 0})
        elif method == "free_async_context":
            answer(rid, {})
        elif method in ("close", "diagnostics"):
            answer(rid, {"violations": []})
        elif method == "shutdown":
            answer(rid, {})
            return 0
        else:
            send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": f"method not found: {method}"}})
    return 0


def misbehave(mode: str, rid: Any, params: dict[str, Any], data: dict[str, Any]) -> bool:
    """Do the bad thing; True when the request needs no normal answer."""
    if mode == "hang":
        time.sleep(3600)
    elif mode == "exit":
        print("hostile agent: giving up mid-call", file=sys.stderr, flush=True)
        os._exit(3)
    elif mode == "signal":
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
    elif mode == "garbage":
        sys.stdout.buffer.write(b"this is not json\n")
        sys.stdout.buffer.flush()
        return True
    elif mode == "notjsonrpc":
        send({"id": rid, "result": {"status": 0}})
        return True
    elif mode == "huge":
        chunk = b"x" * (1 << 20)
        for _ in range(100):
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.write(b"\n")
        sys.stdout.buffer.flush()
        return True
    elif mode == "flood":
        while True:
            callback("a999", 1)
    elif mode == "unknown_ctx":
        callback("a999", 1)
    elif mode == "bad_data":
        callback(params["ctx"], 987654)  # instead of the registered value
        answer(rid, {"status": 0})
        return True
    elif mode == "duplicate":
        callback(params["ctx"], data.get(params["ctx"]))
        callback(params["ctx"], data.get(params["ctx"]))
        answer(rid, {"status": 0})
        return True
    elif mode == "wrong_id":
        answer(rid + 1000, {"status": 0})
        return True
    elif mode.startswith("slow:"):
        time.sleep(float(mode[5:]))
    elif mode == "request":
        send({"jsonrpc": "2.0", "id": "agent-1", "method": "ping", "params": {}})
    elif mode == "exit_after_queue":
        answer(rid, {"status": 0})
        time.sleep(0.05)
        os._exit(0)
    return False


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
