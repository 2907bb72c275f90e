"""The native adapter: a real SSPI library (secur32.dll, sspi-rs' libsspi, ...) via ctypes.

Options (strings, ``--adapter-option KEY=VALUE``):

* ``library``: path of the SSPI library (else ``SSPI_CONFORMANCE_LIBRARY``, secur32.dll on
  Windows, or the libsspi inside the installed sspilib wheel);
* ``isolate``: ``true`` (default) runs the library in a child process through the remote
  adapter, so a segfault becomes ``crashed`` and a deadlock ``hung``; ``false`` loads it
  into this process;
* ``call_timeout_ms``: per-call limit (enforced by the isolating client; in process it
  bounds how long close() waits for queued calls);
* ``completion``: ``threaded`` (default: queued operations run on worker threads) or
  ``inline`` (the synchronous twin runs on the caller's thread and the callback fires
  before the queueing call returns, as OQ-2 allows);
* ``workers``: worker threads that run queued operations in threaded mode (default 4);
* ``guard_bytes``: guard zone after every buffer handed to the library (default 1024).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Mapping

from adapters.api import Adapter

OPTIONS = ("library", "isolate", "completion", "call_timeout_ms", "workers", "guard_bytes")
COMPLETIONS = ("threaded", "inline")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _flag(options: Mapping[str, str], key: str, default: bool) -> bool:
    raw = options.get(key)
    if raw is None:
        return default
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"native adapter option {key}={raw!r}: expected true or false")


def _positive_int(options: Mapping[str, str], key: str, default: int | None) -> int | None:
    raw = options.get(key)
    if raw is None:
        return default
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ValueError(f"native adapter option {key}={raw!r}: expected a positive integer") from None
    if value <= 0:
        raise ValueError(f"native adapter option {key}={raw!r}: expected a positive integer")
    return value


def _completion(options: Mapping[str, str]) -> str:
    raw = str(options.get("completion", "threaded")).strip().lower()
    if raw not in COMPLETIONS:
        raise ValueError(
            f"native adapter option completion={options.get('completion')!r}: expected {' or '.join(COMPLETIONS)}"
        )
    return raw


def _check(options: Mapping[str, str]) -> None:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown native adapter option(s) {', '.join(unknown)} (known: {', '.join(OPTIONS)})")
    _flag(options, "isolate", True)
    _completion(options)
    for key in ("call_timeout_ms", "workers", "guard_bytes"):
        _positive_int(options, key, None)


def loads_foreign_code(options: Mapping[str, str]) -> bool:
    """``isolate=false`` loads the library into the calling process (adapters/registry.py)."""
    return not _flag(options, "isolate", True)


def create_inprocess(options: Mapping[str, str] | None = None) -> Adapter:
    """The NativeAdapter loaded into this process (what the isolation agent runs)."""
    from adapters.native.adapter import NativeAdapter
    from adapters.native.buffers import DEFAULT_GUARD

    opts = dict(options or {})
    _check(opts)
    return NativeAdapter(
        library_path=opts.get("library") or None,
        workers=_positive_int(opts, "workers", 4) or 4,
        completion=_completion(opts),
        guard_bytes=_positive_int(opts, "guard_bytes", DEFAULT_GUARD) or DEFAULT_GUARD,
        call_timeout_ms=_positive_int(opts, "call_timeout_ms", None),
    )


def create(options: Mapping[str, str] | None = None) -> Adapter:
    """``isolate=false``: in process.  Otherwise the same adapter in a child process via
    ``adapters.remote.create`` when that exists, else in process with a warning."""
    opts = dict(options or {})
    _check(opts)
    if not _flag(opts, "isolate", True):
        return create_inprocess(opts)
    try:
        remote = importlib.import_module("adapters.remote")
    except ImportError:
        remote = None
    remote_create = getattr(remote, "create", None)
    if remote_create is None:
        warnings.warn(
            "adapters.remote.create is not available: the native adapter runs IN PROCESS, so a crash "
            "of the library will take the test run down (pass isolate=false to silence this)",
            RuntimeWarning,
            stacklevel=2,
        )
        return create_inprocess(opts)
    forwarded = {k: v for k, v in opts.items() if k != "isolate"}
    adapter: Adapter = remote_create({"agent_adapter": "native", **forwarded})
    return adapter


__all__ = ["OPTIONS", "create", "create_inprocess"]
