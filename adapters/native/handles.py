"""Opaque Python handles wrapping the C handles, and their accounting.

Each object is hashable by identity (the interface's ``Handle``).  The adapter keeps the
C values and a small life-cycle record per handle so it can tell the caller about double
frees, use after delete and leaks -- while still passing every call through to the
library, because what the library does with such a handle is the thing under test.

:class:`RawHandle` lets a caller forge C handle values (the zero handle, a garbage
handle, ``SecInvalidateHandle``) to probe the library's validation.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from adapters.async_state import State
from adapters.native import ffi

_ids = itertools.count(1)


class RawHandle(NamedTuple):
    """Caller-forged CredHandle/CtxtHandle values, passed to the library verbatim."""

    lower: int
    upper: int = 0


ZERO_HANDLE = RawHandle(0, 0)
INVALID_HANDLE = RawHandle(ffi.INVALID_HANDLE_PART, ffi.INVALID_HANDLE_PART)


@dataclass(eq=False)
class NativeCredential:
    """A CredHandle acquired through the adapter."""

    lower: int
    upper: int
    package: str
    owner: int
    ident: int = field(default_factory=lambda: next(_ids))
    freed: bool = False  # a free has been queued (later use is caller misuse)
    contexts: set[NativeContext] = field(default_factory=set)

    def c_handle(self) -> ffi.SecHandle:
        return ffi.SecHandle(self.lower, self.upper)

    def __repr__(self) -> str:
        return f"<credential #{self.ident} {self.package}{' freed' if self.freed else ''}>"


@dataclass(eq=False)
class NativeContext:
    """A CtxtHandle produced by ISC/ASC through the adapter."""

    lower: int
    upper: int
    owner: int
    credential: NativeCredential | None = None
    ident: int = field(default_factory=lambda: next(_ids))
    deleted: bool = False  # a delete has been queued
    busy: int = 0  # queued ISC/ASC/Delete calls not completed yet (CALL-6)

    def c_handle(self) -> ffi.SecHandle:
        return ffi.SecHandle(self.lower, self.upper)

    def __repr__(self) -> str:
        return f"<security context #{self.ident}{' deleted' if self.deleted else ''}>"


@dataclass(eq=False)
class NativeAsyncContext:
    """An async context: implemented by the adapter (the user-mode library has none)."""

    owner: int
    ident: int = field(default_factory=lambda: next(_ids))
    state: State = State.IDLE
    status: int = 0
    callback: Any = None
    data: Any = None
    operation: str | None = None

    def __repr__(self) -> str:
        return f"<async context #{self.ident} {self.state.value}>"
