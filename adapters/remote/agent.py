"""The agent: any in-process adapter served over protocol v1 (docs/protocol.md).

    python -m adapters.remote.agent --adapter simulator|native|MODULE:FACTORY
        [--option KEY=VALUE ...] [--listen stdio|tcp:127.0.0.1:PORT] [--allow-remote] [--once]
    [--no-held-callbacks]

stdio (the default) serves one connection on stdin/stdout and exits at EOF or
``shutdown``; the real stdout is kept for the protocol and fd 1 is pointed at stderr, so a
stray print() in an implementation cannot corrupt the stream.  tcp serves each accepted
connection on its own thread and binds to loopback unless ``--allow-remote`` is given; the
bound address is printed on stderr (useful with port 0).
"""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import itertools
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from adapters.api import AdapterError, ImplementationCrashed, ImplementationHung, Unsupported
from adapters.remote import codec
from adapters.remote import protocol as p
from adapters.remote.framing import LineReader, LineTooLong, StreamClosed, StreamTimeout, Transport
from adapters.remote.jsonfast import dumps, loads, response_line
from adapters.remote.session import RpcError, Session

AGENT_NAME = "adapters.remote.agent"
Factory = Callable[[dict[str, str]], Any]
ReadLine = Callable[[float | None], bytes]

LEAVE_WAIT_S = 1.0  # longest wait for a released callback thread to return into the implementation
SPIN_S = 0.0002  # longest busy-wait for the next request before sleeping (adaptive, see LineReader._spin)


class Tracer:
    """``--trace FILE``: every line in ("> ") and out ("< "), for debugging and transcripts."""

    def __init__(self, path: str | None) -> None:
        self._file = open(path, "ab") if path else None  # kept open for the life of the agent
        self._lock = threading.Lock()
        self.enabled = self._file is not None  # checked by callers first: no call per message when off

    def __call__(self, direction: bytes, data: bytes) -> None:
        if self._file is None:
            return
        with self._lock:
            for one in data.splitlines():
                self._file.write(direction + one + b"\n")
            self._file.flush()


class Writer:
    """Serialised, whole-line writes (callbacks arrive from the implementation's threads).

    While the serving thread handles a request, the notifications it produces itself
    (inline completions, ``control.complete``) are held and written together with the
    response: one write, so one wake-up of the client instead of two.  Notifications from
    the implementation's own threads are written at once.  A held callback (the
    ``held-callbacks`` extension) cannot wait for the response: ``send_now`` writes it,
    with whatever was held before it, at once.  Holding nests: a request handled while a
    held callback waits (a call the client's callback makes) holds and releases its own.
    """

    def __init__(self, transport: Transport, trace: Tracer) -> None:
        self._t = transport
        self._trace = trace
        self._lock = threading.Lock()
        self._held: list[bytes] | None = None
        self._holder = 0
        self.broken = False

    def hold(self) -> tuple[list[bytes] | None, int]:
        """Start holding the calling thread's notifications; returns what to restore."""
        saved = self._held, self._holder
        self._held, self._holder = [], threading.get_ident()
        return saved

    def send(self, message: dict[str, Any]) -> None:
        data = dumps(message).encode() + b"\n"
        if self._held is not None and threading.get_ident() == self._holder:
            self._held.append(data)
            return
        self._write(data)

    def send_now(self, message: dict[str, Any]) -> None:
        """Write ``message`` at once, after anything the calling thread holds."""
        data = dumps(message).encode() + b"\n"
        held = self._held
        if held and threading.get_ident() == self._holder:
            held.append(data)
            data = b"".join(held)
            held.clear()
        self._write(data)

    def release(self, response: dict[str, Any] | bytes | None,
                saved: tuple[list[bytes] | None, int] = (None, 0)) -> None:
        """Write what was held, then ``response`` (a message, or its encoded line), in one
        write; then hold what the enclosing request held (``saved``, from ``hold``)."""
        held = self._held
        self._held, self._holder = saved
        if response is not None and not isinstance(response, bytes):
            response = dumps(response).encode() + b"\n"
        if held:
            if response is not None:
                held.append(response)
            self._write(b"".join(held))
        elif response is not None:
            self._write(response)

    def _write(self, data: bytes) -> None:
        with self._lock:
            if self.broken:
                return
            if self._trace.enabled:
                self._trace(b"< ", data)
            try:
                self._t.write_all(data, None)
            except StreamClosed:
                self.broken = True  # the client went away; the read loop ends at EOF


def make_factory(name: str) -> Factory:
    """``simulator``/``native``/``remote`` via the registry, or ``module:function``."""
    if ":" in name:
        module_name, attr = name.split(":", 1)
        factory: Factory = getattr(importlib.import_module(module_name), attr)
        return factory

    def create(options: dict[str, str]) -> Any:
        from adapters.registry import create_adapter

        if name == "native":
            options = {**options, "isolate": "false"}  # the agent process is the isolation
        return create_adapter(name, options)

    return create


class Server:
    """Serves requests from one connection, one session at a time."""

    def __init__(self, factory: Factory, base_options: Mapping[str, str], adapter_name: str,
                 max_message_bytes: int, trace: Tracer | None = None, held_callbacks: bool = True) -> None:
        self.trace = trace or Tracer(None)
        self.factory = factory
        self.base_options = dict(base_options)
        self.adapter_name = adapter_name
        self.max_bytes = max_message_bytes
        self.held_callbacks = held_callbacks  # accept the client's offer of the extension

    def serve(self, transport: Transport, read_line: ReadLine | None = None) -> None:
        """Answer requests until EOF, ``shutdown``, or an unreadable stream.

        ``read_line(deadline)`` replaces the transport's reader (blocking stdin on Windows,
        where pipes cannot be polled, and the deadline is not applied); it raises
        StreamClosed at EOF, LineTooLong, and StreamTimeout after ``deadline``.
        """
        if read_line is None:
            read_line = LineReader(transport, self.max_bytes, SPIN_S).read_line
        link = _Link(self, read_line, Writer(transport, self.trace))
        try:
            while link.step(None):
                pass
        finally:
            link.end()


class _Link:
    """One connection being served: its reader, writer, open session and held callbacks.

    Held callbacks (docs/protocol.md, section 5): when the client accepted the extension,
    the implementation's callback sends its notification with a ``hold`` token and waits
    until the client says ``callback_returned`` with that token, so the calls the client's
    callback makes reach the implementation while its callback is still on the stack.  A
    callback running on the thread that reads the connection (inline completion,
    ``control.complete``) keeps reading and handling requests, nested, until its token
    comes back; one on another thread (the implementation's own) waits on an event that
    the reading thread sets.  Every wait ends at the hold timeout, or when the stream ends.
    """

    def __init__(self, server: Server, read_line: ReadLine, writer: Writer) -> None:
        self.server = server
        self.read_line = read_line
        self.writer = writer
        self.session: Session | None = None
        self.reader = threading.get_ident()
        self.ended = False  # EOF, shutdown or an unreadable stream: stop serving, release waits
        self.hold_timeout: float | None = None  # seconds; None: the session holds no callback
        self._lock = threading.Lock()
        self._tokens = itertools.count(1)
        self._events: dict[int, tuple[threading.Event, threading.Event]] = {}  # held on other threads:
        # token -> (the client returned it, the waiting thread went back to the implementation)
        self._reading_held: set[int] = set()  # tokens held on the reading thread (nested levels)
        self._returned: set[int] = set()  # ... of which the client returned these

    # ---- reading ---------------------------------------------------------------------------
    def step(self, deadline: float | None) -> bool:
        """Read and handle one message; False once the connection is over."""
        if self.ended:
            return False
        try:
            line = self.read_line(deadline)
        except StreamTimeout:
            return True
        except StreamClosed:
            self._end()
            return False
        except LineTooLong:
            # The stream cannot be resynchronised cheaply; say why, then hang up.
            self.writer.send_now(_error(None, p.INVALID_REQUEST, f"message longer than {self.server.max_bytes} bytes"))
            self._end()
            return False
        if not line.strip():
            return True
        if self.server.trace.enabled:
            self.server.trace(b"> ", line)
        self._handle(line)
        return not self.ended

    def _end(self) -> None:
        self.ended = True
        with self._lock:
            events = [returned for returned, _ in self._events.values()]
        for event in events:  # callbacks held on the implementation's threads return now
            event.set()

    def end(self) -> None:
        """The connection is over: release held callbacks, close the session."""
        self._end()
        self._close_session()

    def _close_session(self) -> None:
        """Close the open session, if any; its adapter's close failing changes nothing here."""
        session = self.session
        if session is not None and not session.closed:
            try:
                session.close()
            except Exception:
                pass

    # ---- held callbacks --------------------------------------------------------------------
    def notify(self, message: dict[str, Any]) -> None:
        """Send a callback notification from inside the implementation's callback; with
        held callbacks in force, return only when the client's callback has returned."""
        timeout = self.hold_timeout
        if timeout is None or self.ended:
            self.writer.send(message)
            return
        token = next(self._tokens)
        message["params"]["hold"] = token
        deadline = time.monotonic() + timeout
        if threading.get_ident() == self.reader:
            self._reading_held.add(token)
            try:
                self.writer.send_now(message)  # the response cannot carry it: nothing comes back until it is read
                while token not in self._returned and not self.ended:
                    if time.monotonic() >= deadline:
                        self._gave_up(token, timeout)
                        break
                    self.step(deadline)  # the client's nested calls, served on this thread
            finally:
                self._reading_held.discard(token)
                self._returned.discard(token)
            return
        returned, left = threading.Event(), threading.Event()
        with self._lock:
            self._events[token] = (returned, left)
        try:
            self.writer.send(message)
            if not returned.wait(timeout) and not self.ended:
                self._gave_up(token, timeout)
        finally:
            with self._lock:
                self._events.pop(token, None)
            left.set()

    def _returned_token(self, token: Any) -> None:
        with self._lock:
            events = self._events.get(token) if type(token) is int else None
        if events is not None:
            returned, left = events
            returned.set()
            # The next request may be one the client made after seeing this callback end:
            # let the callback return into the implementation first, as it has in-process
            # by then (bounded: a stuck implementation thread must not stop the reader).
            left.wait(LEAVE_WAIT_S)
        elif token in self._reading_held:
            self._returned.add(token)
        # Otherwise a token given up on (it came too late) or never sent: nothing waits for it.

    def _gave_up(self, token: int, timeout: float) -> None:
        message = (f"the client did not return held callback {token} within {timeout * 1000:.0f} ms "
                   f"(held-callbacks); the implementation's callback was released, so calls the "
                   f"caller's callback still makes reach it after its callback returned")
        print(f"{AGENT_NAME}: {message}", file=sys.stderr, flush=True)
        session = self.session
        if session is not None:
            session.note("PROTO-12", message, "caller")

    # ---- one message -----------------------------------------------------------------------
    def _handle(self, line: bytes) -> None:
        writer = self.writer
        try:
            msg = loads(line)
        except ValueError as exc:
            writer.send_now(_error(None, p.PARSE_ERROR, f"not JSON: {exc}"))
            return
        if not isinstance(msg, dict) or msg.get("jsonrpc") != p.JSONRPC or not isinstance(msg.get("method"), str):
            rid = msg.get("id") if isinstance(msg, dict) else None
            writer.send_now(_error(rid, p.INVALID_REQUEST, "not a JSON-RPC 2.0 request"))
            return
        method, rid, params = msg["method"], msg.get("id"), msg.get("params", {})
        if params is None:
            params = {}
        if method == p.CALLBACK_RETURNED and rid is None:  # the one notification a client sends
            self._returned_token(params.get("hold") if isinstance(params, dict) else None)
            return
        session = self.session
        saved = writer.hold()
        try:
            if not isinstance(params, dict):
                raise RpcError(p.INVALID_PARAMS, "params must be an object")
            if method == "initialize":
                if self._reading_held or self._events:
                    raise RpcError(p.INVALID_REQUEST, "initialize while a callback is held")
                result = self._initialize(params)
            elif method == "shutdown":
                if session is not None and not session.closed:
                    session.close()
                result = {}
                self._end()
            elif method == "close":
                if session is None or session.closed:
                    raise RpcError(p.NOT_INITIALIZED, "no open session")
                result = session.close()
            elif session is None or session.closed:
                raise RpcError(p.NOT_INITIALIZED, f"{method} before initialize")
            else:
                handler = session.methods.get(method)
                if handler is None:
                    raise RpcError(p.METHOD_NOT_FOUND, f"method not found: {method}")
                result = handler(params)
        except RpcError as exc:
            response = _error(rid, exc.code, str(exc), exc.data)
        except Unsupported as exc:
            response = _error(rid, p.UNSUPPORTED, str(exc) or method)
        except ImplementationCrashed as exc:
            response = _error(rid, p.IMPLEMENTATION_CRASHED, str(exc))
        except ImplementationHung as exc:
            response = _error(rid, p.IMPLEMENTATION_HUNG, str(exc))
        except AdapterError as exc:
            response = _error(rid, p.ADAPTER_ERROR, f"{type(exc).__name__}: {exc}")
        except (ValueError, TypeError) as exc:
            response = _error(rid, p.INVALID_PARAMS, str(exc), {"exception": type(exc).__name__})
        except Exception as exc:
            response = _error(rid, p.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}",
                              {"exception": type(exc).__name__})
        else:
            try:
                encoded = response_line(rid, result) if rid is not None else None
            except (TypeError, ValueError) as exc:  # a result JSON cannot carry: say so, keep serving
                response = _error(rid, p.INTERNAL_ERROR, f"result of {method} cannot be encoded: {exc}",
                                  {"exception": type(exc).__name__})
            else:
                writer.release(encoded, saved)
                return
        writer.release(response if rid is not None else None, saved)

    def _initialize(self, params: Mapping[str, Any]) -> Any:
        version = params.get("protocol")
        if version != p.PROTOCOL_VERSION:
            raise RpcError(p.VERSION_MISMATCH, f"protocol {version!r} not spoken; this agent speaks "
                                               f"{p.PROTOCOL_VERSION!r}", {"protocol": [p.PROTOCOL_VERSION]})
        options = params.get("options") or {}
        if not isinstance(options, dict) or not all(isinstance(v, str) for v in options.values()):
            raise RpcError(p.INVALID_PARAMS, "options must map names to strings")
        self._close_session()
        self.session = None
        server = self.server
        adapter = server.factory({**server.base_options, **options})
        self.hold_timeout = None
        extensions: dict[str, Any] = {}
        held = _held_offer(params) if server.held_callbacks else None
        if held is not None:
            self.hold_timeout = held / 1000.0
            extensions[p.HELD_CALLBACKS] = {"timeout_ms": held}
        self.session = Session(adapter, self.notify)
        caps = adapter.capabilities()
        result = {
            "protocol": p.PROTOCOL_VERSION,
            "implementation": {"name": caps.name, "version": caps.version},
            "capabilities": codec.encode_capabilities(caps),
            "agent": {"name": AGENT_NAME, "pid": os.getpid(), "adapter": server.adapter_name},
        }
        if extensions:  # only what the client offered: an old client sees the v1 answer it knows
            result["extensions"] = extensions
        return result


def _held_offer(params: Mapping[str, Any]) -> int | None:
    """The hold timeout (ms) the client offered with ``held-callbacks``, or None."""
    offered = params.get("extensions")
    if not isinstance(offered, dict) or p.HELD_CALLBACKS not in offered:
        return None
    terms = offered[p.HELD_CALLBACKS]
    timeout = terms.get("timeout_ms") if isinstance(terms, dict) else None
    if type(timeout) is not int or timeout <= 0:
        timeout = p.DEFAULT_CALL_TIMEOUT_MS
    return min(timeout, p.MAX_HOLD_TIMEOUT_MS)


def _error(rid: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": p.JSONRPC, "id": rid, "error": err}


# ---- listeners ---------------------------------------------------------------------------------


def serve_stdio(server: Server) -> None:
    proto_fd = os.dup(1)
    os.dup2(2, 1)  # stray writes to fd 1 now land on stderr, never in the protocol stream
    sys.stdout = sys.stderr
    if os.name == "nt":  # pipes cannot be polled or made non-blocking there: plain blocking reads
        server.serve(_BlockingFds(0, proto_fd), _blocking_reader(sys.stdin.buffer, server.max_bytes))
        return
    stdin_blocking = os.get_blocking(0)
    try:
        server.serve(Transport(0, proto_fd))
    finally:
        os.set_blocking(0, stdin_blocking)  # do not leave a terminal non-blocking


class _BlockingFds(Transport):
    """Windows stdio: blocking descriptors, written with plain os.write."""

    def __init__(self, read_fd: int, write_fd: int) -> None:  # no polling set-up (super() not called)
        self.read_fd, self.write_fd = read_fd, write_fd

    def write_all(self, data: bytes, deadline: float | None) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.write_fd, view):]
        except OSError as exc:
            raise StreamClosed(f"write failed: {exc}") from None


def _blocking_reader(stream: Any, max_bytes: int) -> ReadLine:
    def read_line(deadline: float | None = None) -> bytes:  # blocking pipes: no deadline (see serve)
        line = stream.readline(max_bytes + 1)
        if not line:
            raise StreamClosed("end of stream")
        if not line.endswith(b"\n"):
            if len(line) > max_bytes:
                raise LineTooLong(max_bytes)
            raise StreamClosed("end of stream inside a message")
        return bytes(line[:-1])

    return read_line


def parse_listen(value: str) -> tuple[str, int] | None:
    """None for stdio, else (host, port); ValueError for anything else."""
    if value == "stdio":
        return None
    if not value.startswith("tcp:"):
        raise ValueError(f"--listen must be stdio or tcp:HOST:PORT, got {value!r}")
    host, _, port = value[4:].rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--listen tcp:HOST:PORT needs a host and a port, got {value!r}")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_tcp(server: Server, host: str, port: int, once: bool) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.create_server((host, port), family=family) as listener:
        bound = listener.getsockname()
        print(f"{AGENT_NAME} listening on tcp:{host}:{bound[1]}", file=sys.stderr, flush=True)
        while True:
            conn, _ = listener.accept()
            worker = threading.Thread(target=_serve_socket, args=(server, conn), daemon=True)
            worker.start()
            if once:
                worker.join()
                return


def _serve_socket(server: Server, conn: socket.socket) -> None:
    with conn:
        server.serve(Transport.for_socket(conn))


def _options(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--option needs KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    """Run an agent; returns the process exit status (2 for a usage error)."""
    parser = argparse.ArgumentParser(prog="python -m adapters.remote.agent", description=__doc__.split("\n")[0])
    parser.add_argument("--adapter", default="simulator", help="simulator, native, or MODULE:FACTORY")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="adapter option")
    parser.add_argument("--listen", default="stdio", help="stdio (default) or tcp:HOST:PORT (port 0: any)")
    parser.add_argument("--allow-remote", action="store_true", help="allow binding to a non-loopback address")
    parser.add_argument("--once", action="store_true", help="tcp: serve one connection, then exit")
    parser.add_argument("--max-message-bytes", type=int, default=p.DEFAULT_MAX_MESSAGE_BYTES)
    parser.add_argument("--trace", metavar="FILE", help="append every protocol line to FILE")
    parser.add_argument("--no-held-callbacks", action="store_true",
                        help="refuse the held-callbacks extension (callbacks are not held: the v1 base behaviour)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        options = _options(args.option)
        listen = parse_listen(args.listen)
        if listen is not None and not args.allow_remote and not is_loopback(listen[0]):
            raise ValueError(f"refusing to listen on non-loopback {listen[0]} without --allow-remote")
        factory = make_factory(args.adapter)
    except (ValueError, ImportError, AttributeError) as exc:
        print(f"{AGENT_NAME}: {exc}", file=sys.stderr)
        return 2
    server = Server(factory, options, args.adapter, args.max_message_bytes, Tracer(args.trace),
                    held_callbacks=not args.no_held_callbacks)
    try:
        if listen is None:
            serve_stdio(server)
        else:
            serve_tcp(server, listen[0], listen[1], args.once)
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"{AGENT_NAME}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
