"""ctypes mirrors of the SSPI structures, with the Windows data layout on every platform.

The library under test speaks the Windows ABI even on Linux (sspi-rs' libsspi is built
to be a drop-in secur32), so the Python side must not use the host's C types:

* ``ULONG`` / ``unsigned long`` is 32-bit on Windows (LLP64) but 64-bit on Linux (LP64),
  so it is ``c_uint32`` here, never ``c_ulong``.
* ``SEC_WCHAR`` is a UTF-16 code unit; ``wchar_t`` is 32-bit on Linux, so strings are
  encoded by hand into ``c_uint16`` arrays, never passed as ``c_wchar_p``.
* ``ULONG_PTR`` (the two halves of a SecHandle) is pointer-sized: ``c_size_t``.
* ``TimeStamp`` is a 64-bit count of 100 ns ticks.

Nothing here loads a library; see :mod:`adapters.native.library`.
"""

from __future__ import annotations

import ctypes
import functools
from ctypes import POINTER, Structure, c_int32, c_int64, c_size_t, c_uint16, c_uint32, c_void_p
from typing import Any

ULONG = c_uint32
USHORT = c_uint16
ULONG_PTR = c_size_t
SECURITY_STATUS = c_int32  # a LONG; callers mask it to the unsigned 32-bit value
TimeStamp = c_int64
SEC_WCHAR = c_uint16
PSEC_WCHAR = POINTER(SEC_WCHAR)

SEC_WINNT_AUTH_IDENTITY_ANSI = 0x1
SEC_WINNT_AUTH_IDENTITY_UNICODE = 0x2

# SecInvalidateHandle(): both halves set to (ULONG_PTR)-1.
INVALID_HANDLE_PART = (1 << (8 * ctypes.sizeof(c_size_t))) - 1


class SecHandle(Structure):
    """CredHandle / CtxtHandle: two ULONG_PTR owned by the package."""

    _fields_ = [("dwLower", ULONG_PTR), ("dwUpper", ULONG_PTR)]

    def pair(self) -> tuple[int, int]:
        return int(self.dwLower), int(self.dwUpper)


class SecBuffer(Structure):
    _fields_ = [("cbBuffer", ULONG), ("BufferType", ULONG), ("pvBuffer", c_void_p)]


class SecBufferDesc(Structure):
    _fields_ = [("ulVersion", ULONG), ("cBuffers", ULONG), ("pBuffers", POINTER(SecBuffer))]


class SEC_WINNT_AUTH_IDENTITY_W(Structure):
    """Lengths are in UTF-16 code units, without the terminator."""

    _fields_ = [
        ("User", PSEC_WCHAR),
        ("UserLength", ULONG),
        ("Domain", PSEC_WCHAR),
        ("DomainLength", ULONG),
        ("Password", PSEC_WCHAR),
        ("PasswordLength", ULONG),
        ("Flags", ULONG),
    ]


class SecPkgContext_Sizes(Structure):
    _fields_ = [
        ("cbMaxToken", ULONG),
        ("cbMaxSignature", ULONG),
        ("cbBlockSize", ULONG),
        ("cbSecurityTrailer", ULONG),
    ]


class SecPkgContext_StreamSizes(Structure):
    _fields_ = [
        ("cbHeader", ULONG),
        ("cbTrailer", ULONG),
        ("cbMaximumMessage", ULONG),
        ("cBuffers", ULONG),
        ("cbBlockSize", ULONG),
    ]


class SecPkgInfoW(Structure):
    _fields_ = [
        ("fCapabilities", ULONG),
        ("wVersion", USHORT),
        ("wRPCID", USHORT),
        ("cbMaxToken", ULONG),
        ("Name", PSEC_WCHAR),
        ("Comment", PSEC_WCHAR),
    ]


PSecHandle = POINTER(SecHandle)
PSecBufferDesc = POINTER(SecBufferDesc)
PTimeStamp = POINTER(TimeStamp)
PULONG = POINTER(ULONG)

# Every structure the adapter shares with the library, for layout checks.
STRUCTURES: dict[str, type[Structure]] = {
    "SecHandle": SecHandle,
    "SecBuffer": SecBuffer,
    "SecBufferDesc": SecBufferDesc,
    "SEC_WINNT_AUTH_IDENTITY_W": SEC_WINNT_AUTH_IDENTITY_W,
    "SecPkgContext_Sizes": SecPkgContext_Sizes,
    "SecPkgContext_StreamSizes": SecPkgContext_StreamSizes,
    "SecPkgInfoW": SecPkgInfoW,
}


def wide(text: str) -> ctypes.Array[c_uint16]:
    """A NUL-terminated UTF-16LE copy of ``text`` that C may read (kept alive by the caller)."""
    units = text.encode("utf-16-le")
    count = len(units) // 2
    array = (c_uint16 * (count + 1))()
    ctypes.memmove(array, units, len(units))
    return array


@functools.lru_cache(maxsize=256)
def wide_cached(text: str) -> ctypes.Array[c_uint16]:
    """:func:`wide` for strings the library only reads (``const SEC_WCHAR*`` arguments:
    package, principal, target, identity fields), shared between calls so that a hot
    loop does not re-encode the same names.  Never hand it to a call that may write."""
    return wide(text)


def wide_length(text: str) -> int:
    """Length of ``text`` in UTF-16 code units (what the *Length fields count)."""
    return len(text.encode("utf-16-le")) // 2


def read_wide(pointer: Any, limit: int = 4096) -> str | None:
    """Decode a NUL-terminated UTF-16 string written by the library (None for NULL)."""
    address = ctypes.cast(pointer, c_void_p).value
    if not address:
        return None
    units = ctypes.cast(address, POINTER(c_uint16))
    length = 0
    while length < limit and units[length] != 0:
        length += 1
    return ctypes.string_at(address, 2 * length).decode("utf-16-le", errors="replace")


def as_status(value: int) -> int:
    """SECURITY_STATUS (signed LONG) as the unsigned 32-bit value used everywhere else."""
    return int(value) & 0xFFFFFFFF


__all__ = [
    "INVALID_HANDLE_PART",
    "PULONG",
    "SECURITY_STATUS",
    "SEC_WINNT_AUTH_IDENTITY_ANSI",
    "SEC_WINNT_AUTH_IDENTITY_UNICODE",
    "SEC_WINNT_AUTH_IDENTITY_W",
    "STRUCTURES",
    "ULONG",
    "ULONG_PTR",
    "PSecBufferDesc",
    "PSecHandle",
    "PTimeStamp",
    "SecBuffer",
    "SecBufferDesc",
    "SecHandle",
    "SecPkgContext_Sizes",
    "SecPkgContext_StreamSizes",
    "SecPkgInfoW",
    "TimeStamp",
    "as_status",
    "read_wide",
    "wide",
    "wide_cached",
    "wide_length",
]
