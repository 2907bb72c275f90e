"""The remote adapter: an implementation in another process, reached over protocol v1.

Options (strings):

* ``command``: the agent to start, as a JSON array or a shlex-split string (no shell);
* ``connect=HOST:PORT``: use an agent already listening on TCP instead;
* ``agent_adapter`` (default ``simulator``): with neither, start
  ``python -m adapters.remote.agent --adapter NAME --listen stdio`` with every option not
  listed here forwarded as ``--option KEY=VALUE``;
* ``call_timeout_ms`` (5000), ``start_timeout_ms`` (15000: first ``initialize`` of a
  newly started agent), ``idle_timeout_ms`` (60000: a pooled agent idle longer is
  discarded), ``max_message_bytes`` (16 MiB);
* ``held_callbacks`` (true): offer the agent the held-callbacks extension, so the calls a
  callback makes reach the implementation while its callback is still running.

Options not listed are the agent adapter's own; they are also sent in ``initialize``.
See docs/protocol.md.
"""

from __future__ import annotations

from adapters.api import Adapter, AdapterError
from adapters.remote import pool
from adapters.remote.client import RemoteAdapter
from adapters.remote.connection import Connection
from adapters.remote.options import RemoteOptions, parse


def create(options: dict[str, str]) -> Adapter:
    """A new session on a pooled or newly started agent; ValueError for bad options."""
    opts = parse(options)
    conn = pool.take(opts)
    if conn is not None:
        try:
            return _open(conn, opts, opts.call_timeout)
        except ValueError:
            raise
        except AdapterError:
            conn.close()  # a pooled agent that fails to re-initialize is replaced once
    return _open(pool.start(opts), opts, opts.start_timeout)


def _open(conn: Connection, opts: RemoteOptions, timeout: float) -> RemoteAdapter:
    key = opts.pool_key
    adapter = RemoteAdapter(conn, opts.call_timeout, release=lambda c: pool.give_back(key, c),
                            held_callbacks=opts.held_callbacks)
    try:
        adapter.initialize(opts.forwarded, timeout)
    except BaseException:
        conn.sink = None
        if conn.healthy and conn.dead is None:
            pool.give_back(key, conn)  # e.g. a bad adapter option: the agent itself is fine
        else:
            conn.close()
        raise
    return adapter


__all__ = ["RemoteAdapter", "create"]
