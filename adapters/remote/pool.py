"""Starting agents, connecting to them, and keeping healthy ones for the next scenario.

The engine builds one adapter per scenario and closes it at the end; starting a Python
agent costs ~100 ms, so a closed session's connection goes back to a small pool keyed by
command (or address), and the next create() opens a new session on it with
``initialize``.  Only healthy connections are kept: a crashed, hung or protocol-breaking
agent is killed and reaped, and the next create() starts a fresh one.  Pooled agents are
shut down at interpreter exit, or dropped when idle longer than idle_timeout_ms.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from adapters.api import ImplementationCrashed
from adapters.remote.connection import Connection
from adapters.remote.framing import Transport
from adapters.remote.options import RemoteOptions

MAX_IDLE_PER_KEY = 4
SHUTDOWN_GRACE_S = 0.5

_lock = threading.Lock()
_idle: dict[tuple[object, ...], list[Connection]] = {}
_REPO_ROOT = str(Path(__file__).resolve().parents[2])


def _child_env() -> dict[str, str]:
    """The agent must import ``adapters`` even when the project is not installed."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH", "")
    if _REPO_ROOT not in path.split(os.pathsep):
        env["PYTHONPATH"] = _REPO_ROOT + (os.pathsep + path if path else "")
    return env


def start(opts: RemoteOptions) -> Connection:
    """A new connection: start the agent command, or connect to ``host:port``."""
    if opts.connect is not None:
        host, port = opts.connect
        try:
            sock = socket.create_connection((host, port), timeout=opts.start_timeout)
        except OSError as exc:
            raise ImplementationCrashed(f"cannot connect to remote agent at {host}:{port}: {exc}") from None
        return Connection(Transport.for_socket(sock), f"tcp:{host}:{port}", opts.max_message_bytes)
    assert opts.command is not None
    stderr = tempfile.TemporaryFile()
    try:
        proc = subprocess.Popen(
            list(opts.command), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, bufsize=0,
            close_fds=True, env=_child_env(),
        )
    except OSError as exc:
        stderr.close()
        raise ImplementationCrashed(f"cannot start remote agent {opts.command[0]!r}: {exc}") from None
    assert proc.stdin is not None and proc.stdout is not None
    transport = Transport(proc.stdout.fileno(), proc.stdin.fileno(), owners=(proc.stdout, proc.stdin))
    label = f"{Path(opts.command[0]).name} (pid {proc.pid})"
    return Connection(transport, label, opts.max_message_bytes, process=proc, stderr=stderr)


def take(opts: RemoteOptions) -> Connection | None:
    """A pooled healthy connection for these options, or None."""
    now = time.monotonic()
    stale: list[Connection] = []
    found: Connection | None = None
    with _lock:
        conns = _idle.get(opts.pool_key, [])
        while conns:
            conn = conns.pop()
            if conn.healthy and now - conn.last_used <= opts.idle_timeout:
                found = conn
                break
            stale.append(conn)
    for conn in stale:
        conn.close(SHUTDOWN_GRACE_S if conn.dead is None else 0.0)
    return found


def give_back(key: tuple[object, ...], conn: Connection) -> None:
    """Return a connection after its session closed; unhealthy or surplus ones are ended."""
    conn.last_used = time.monotonic()
    if conn.healthy:
        with _lock:
            conns = _idle.setdefault(key, [])
            if len(conns) < MAX_IDLE_PER_KEY:
                conns.append(conn)
                return
    conn.close(SHUTDOWN_GRACE_S if conn.dead is None else 0.0)


def drain() -> None:
    """Shut down every pooled agent (at exit, and for tests that count processes)."""
    with _lock:
        conns = [c for cs in _idle.values() for c in cs]
        _idle.clear()
    for conn in conns:
        conn.close(SHUTDOWN_GRACE_S)


atexit.register(drain)
