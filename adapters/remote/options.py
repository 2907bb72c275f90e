"""The remote adapter's options (all strings, as the CLI passes them)."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from adapters.remote import protocol as p

CLIENT_KEYS = frozenset({
    "command", "connect", "agent_adapter", "call_timeout_ms", "start_timeout_ms", "idle_timeout_ms",
    "max_message_bytes", "held_callbacks",
})


@dataclass(frozen=True)
class RemoteOptions:
    command: tuple[str, ...] | None  # argv of the agent to start (None with connect)
    connect: tuple[str, int] | None
    call_timeout: float  # seconds
    start_timeout: float
    idle_timeout: float
    max_message_bytes: int
    held_callbacks: bool = True  # offer the held-callbacks extension (docs/protocol.md, section 5)
    forwarded: dict[str, str] = field(default_factory=dict)  # the agent adapter's own options

    @property
    def pool_key(self) -> tuple[object, ...]:
        return ("connect", *self.connect) if self.connect else ("command", *(self.command or ()))


def _positive_int(options: Mapping[str, str], key: str, default: int) -> int:
    raw = options.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"remote option {key}={raw!r}: not an integer") from None
    if value <= 0:
        raise ValueError(f"remote option {key}={raw!r}: must be positive")
    return value


def _bool(options: Mapping[str, str], key: str, default: bool) -> bool:
    raw = options.get(key)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"remote option {key}={raw!r}: expected true or false")


def parse_command(raw: str) -> tuple[str, ...]:
    """A JSON array of strings, or a shlex-split string (never run through a shell)."""
    text = raw.strip()
    if text.startswith("["):
        try:
            argv = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"remote option command: bad JSON array: {exc}") from None
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            raise ValueError("remote option command: the JSON array must hold strings only")
    else:
        try:
            argv = shlex.split(text)
        except ValueError as exc:
            raise ValueError(f"remote option command: {exc}") from None
    if not argv:
        raise ValueError("remote option command: empty command")
    return tuple(argv)


def parse_connect(raw: str) -> tuple[str, int]:
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"remote option connect={raw!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def parse(options: Mapping[str, str]) -> RemoteOptions:
    if "command" in options and "connect" in options:
        raise ValueError("remote options command and connect exclude each other")
    forwarded = {k: v for k, v in options.items() if k not in CLIENT_KEYS}
    command: tuple[str, ...] | None = None
    connect: tuple[str, int] | None = None
    if "connect" in options:
        connect = parse_connect(options["connect"])
    elif "command" in options:
        command = parse_command(options["command"])
    else:
        agent_adapter = options.get("agent_adapter", "simulator")
        command = (sys.executable, "-m", "adapters.remote.agent", "--adapter", agent_adapter, "--listen", "stdio")
        for key, value in sorted(forwarded.items()):
            command += ("--option", f"{key}={value}")
    return RemoteOptions(
        command=command,
        connect=connect,
        call_timeout=_positive_int(options, "call_timeout_ms", p.DEFAULT_CALL_TIMEOUT_MS) / 1000.0,
        start_timeout=_positive_int(options, "start_timeout_ms", p.DEFAULT_START_TIMEOUT_MS) / 1000.0,
        idle_timeout=_positive_int(options, "idle_timeout_ms", p.DEFAULT_IDLE_TIMEOUT_MS) / 1000.0,
        max_message_bytes=_positive_int(options, "max_message_bytes", p.DEFAULT_MAX_MESSAGE_BYTES),
        held_callbacks=_bool(options, "held_callbacks", True),
        forwarded=forwarded,
    )
