"""Opaque Python handles wrapping the C handles, and their accounting.

Each object is hashable by identity (the interface's ``Handle``).  The adapter keeps the
C values and a small life-cycle record per handle so it can tell the caller about double
frees, use after delete and leaks -- while still passing every call through to the
library, because what the library does with such a handle is the thing under test.

:class:`RawHandle` lets a caller forge C handle values (the zero handle, a garbage
handle, ``SecInvalidateHandle``) to probe the library's validation.
"""

from __future__ import annotations

import ctypes
import itertools
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


class NativeCredential:
    """A CredHandle acquired through the adapter.

    ``c`` is the C handle itself and ``ref`` a ``byref`` to it, built once: every call on
    the credential hands the library this same CredHandle, as a C caller passes the
    address of its one variable (no per-call structure, no argument conversion).
    """

    __slots__ = ("c", "contexts", "freed", "ident", "lower", "owner", "package", "ref", "upper")

    def __init__(self, lower: int, upper: int, package: str, owner: int) -> None:
        self.lower = lower
        self.upper = upper
        self.package = package
        self.owner = owner
        self.ident = next(_ids)
        self.freed = False  # a free has been queued (later use is caller misuse)
        self.contexts: set[NativeContext] = set()
        self.c = ffi.SecHandle(lower, upper)
        self.ref = ctypes.byref(self.c)

    def c_handle(self) -> ffi.SecHandle:
        return ffi.SecHandle(self.lower, self.upper)

    def __repr__(self) -> str:
        return f"<credential #{self.ident} {self.package}{' freed' if self.freed else ''}>"


class NativeContext:
    """A CtxtHandle produced by ISC/ASC through the adapter (``c``/``ref``: as for
    :class:`NativeCredential`; the library may update ``c`` in place, see :meth:`sync`)."""

    __slots__ = ("busy", "c", "credential", "deleted", "ident", "lower", "owner", "ref", "upper")

    def __init__(self, lower: int, upper: int, owner: int, credential: NativeCredential | None = None) -> None:
        self.lower = lower
        self.upper = upper
        self.owner = owner
        self.credential = credential
        self.ident = next(_ids)
        self.deleted = False  # a delete has been queued
        self.busy = 0  # queued ISC/ASC/Delete calls not completed yet (CALL-6)
        self.c = ffi.SecHandle(lower, upper)
        self.ref = ctypes.byref(self.c)

    def set(self, lower: int, upper: int) -> None:
        self.lower, self.upper = lower, upper
        self.c.dwLower, self.c.dwUpper = lower, upper

    def sync(self) -> None:
        """Take the values the library left in the C handle (phContext is in/out in practice)."""
        self.lower, self.upper = self.c.dwLower, self.c.dwUpper

    def c_handle(self) -> ffi.SecHandle:
        return ffi.SecHandle(self.lower, self.upper)

    def __repr__(self) -> str:
        return f"<security context #{self.ident}{' deleted' if self.deleted else ''}>"


class NativeAsyncContext:
    """An async context: implemented by the adapter (the user-mode library has none)."""

    __slots__ = ("callback", "data", "ident", "operation", "owner", "state", "status")

    def __init__(self, owner: int) -> None:
        self.owner = owner
        self.ident = next(_ids)
        self.state = State.IDLE
        self.status = 0
        self.callback: Any = None
        self.data: Any = None
        self.operation: str | None = None

    def __repr__(self) -> str:
        return f"<async context #{self.ident} {self.state.value}>"
