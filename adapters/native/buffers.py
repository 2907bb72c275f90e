"""SecBufferDesc marshalling with guard zones, and copy-back at completion.

Every buffer handed to the library is allocated with ``guard`` extra bytes after its
capacity, filled with a known pattern; the SecBuffer array itself gets one extra sentinel
entry after ``cBuffers``.  After the call :meth:`CBufferDesc.overruns` reports any guard
byte that changed (the library wrote past ``cbBuffer``) and a changed sentinel (the
library wrote a SecBuffer it was not given).  A write larger than the guard zone still
corrupts memory, which is why the adapter runs in a child process by default.

Memory the library allocated (ISC_REQ_ALLOCATE_MEMORY, or a NULL ``pvBuffer`` it chose
to fill) is read and released with FreeContextBuffer exactly once (SCH-8).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from dataclasses import dataclass

from adapters.api import SecBuffer
from adapters.constants import SECBUFFER_EXTRA, SECBUFFER_MISSING, SECBUFFER_VERSION
from adapters.native import ffi

DEFAULT_GUARD = 1024
PATTERN = b"\xa5\x5a\xc3\x3c"
_SENTINEL_ULONG = 0xA5A5A5A5
_SENTINEL_PTR = 0  # NULL: a library that fills it allocates instead of writing through it
COUNT_ONLY_TYPES = frozenset({SECBUFFER_EXTRA, SECBUFFER_MISSING})


@functools.lru_cache(maxsize=8)
def _pattern(length: int) -> bytes:
    return (PATTERN * (length // len(PATTERN) + 1))[:length]


@dataclass(slots=True)
class _Slot:
    """One caller buffer and the memory we gave the library for it."""

    source: SecBuffer
    capacity: int
    memory: ctypes.Array[ctypes.c_char] | None  # None: pvBuffer NULL
    original_type: int

    @property
    def address(self) -> int:
        return ctypes.addressof(self.memory) if self.memory is not None else 0


@dataclass(frozen=True, slots=True)
class Overrun:
    index: int
    capacity: int
    written_past: int  # lower bound: bytes after cbBuffer that no longer hold the pattern
    sentinel: bool = False  # the SecBuffer after cBuffers was written

    def describe(self, role: str) -> str:
        if self.sentinel:
            return f"{role}: the library wrote SecBuffer[{self.index}], beyond cBuffers={self.index}"
        return (
            f"{role} buffer {self.index}: the library wrote at least {self.written_past} byte(s) past "
            f"cbBuffer={self.capacity}"
        )


@dataclass(frozen=True, slots=True)
class Returned:
    """What the library left in one SecBuffer after the call."""

    type: int
    cb: int
    data: bytes
    library_allocated: bool


class CBufferDesc:
    """A C SecBufferDesc built from the caller's SecBuffer list for one call.

    ``allocate``: output buffers are handed over with ``pvBuffer`` NULL / ``cbBuffer`` 0 so
    the library allocates them (ISC_REQ_ALLOCATE_MEMORY / ASC_REQ_ALLOCATE_MEMORY).
    Otherwise a buffer with capacity 0 and no data is passed as NULL/0 as C callers do
    (SCH-5's empty slot), and any other buffer gets ``capacity + guard`` bytes.
    """

    def __init__(self, buffers: list[SecBuffer], *, allocate: bool = False, guard: int = DEFAULT_GUARD) -> None:
        self.guard = max(16, guard)
        self.slots: list[_Slot] = []
        count = len(buffers)
        self.array = (ffi.SecBuffer * (count + 1))()
        for index, buf in enumerate(buffers):
            capacity = max(buf.cb, len(buf.data))
            memory = None
            if not allocate and capacity > 0:
                memory = ctypes.create_string_buffer(capacity + self.guard)
                ctypes.memmove(memory, buf.data, len(buf.data))
                tail = _pattern(self.guard)
                ctypes.memmove(ctypes.addressof(memory) + capacity, tail, self.guard)
            slot = _Slot(buf, 0 if memory is None else capacity, memory, buf.type)
            self.slots.append(slot)
            entry = self.array[index]
            entry.cbBuffer = slot.capacity if memory is not None else 0
            entry.BufferType = buf.type & 0xFFFFFFFF
            entry.pvBuffer = slot.address or None
        sentinel = self.array[count]
        sentinel.cbBuffer = _SENTINEL_ULONG
        sentinel.BufferType = _SENTINEL_ULONG
        sentinel.pvBuffer = None
        self.desc = ffi.SecBufferDesc(SECBUFFER_VERSION, count, self.array)

    def pointer(self) -> ctypes._Pointer[ffi.SecBufferDesc]:
        return ctypes.pointer(self.desc)

    # ---- after the call -------------------------------------------------------------
    def overruns(self) -> list[Overrun]:
        found: list[Overrun] = []
        tail = _pattern(self.guard)
        for index, slot in enumerate(self.slots):
            if slot.memory is None:
                continue
            seen = ctypes.string_at(slot.address + slot.capacity, self.guard)
            if seen != tail:
                last = max(i for i in range(self.guard) if seen[i] != tail[i])
                found.append(Overrun(index, slot.capacity, last + 1))
        sentinel = self.array[len(self.slots)]
        if (
            sentinel.cbBuffer != _SENTINEL_ULONG
            or sentinel.BufferType != _SENTINEL_ULONG
            or (sentinel.pvBuffer or 0) != _SENTINEL_PTR
        ):
            found.append(Overrun(len(self.slots), 0, 0, sentinel=True))
        return found

    def _owner(self, address: int) -> tuple[_Slot, int] | None:
        for slot in self.slots:
            if slot.memory is not None and slot.address <= address < slot.address + slot.capacity + self.guard:
                return slot, address - slot.address
        return None

    def returned(self, free: Callable[[int], int]) -> list[Returned]:
        """Read every SecBuffer back; library allocations are freed (once each) with ``free``."""
        results: list[Returned] = []
        freed: set[int] = set()
        for index in range(len(self.slots)):
            entry = self.array[index]
            kind, cb, address = int(entry.BufferType), int(entry.cbBuffer), int(entry.pvBuffer or 0)
            if (kind & 0x0FFFFFFF) in COUNT_ONLY_TYPES or address == 0:
                # EXTRA/MISSING carry only a count; their pvBuffer is not ours to read (SCH-24).
                results.append(Returned(kind, cb, b"", False))
                continue
            owner = self._owner(address)
            if owner is not None:
                slot, offset = owner
                readable = min(cb, slot.capacity + self.guard - offset)
                results.append(Returned(kind, cb, ctypes.string_at(address, readable), False))
                continue
            data = ctypes.string_at(address, cb)
            if address not in freed:
                freed.add(address)
                free(address)
            results.append(Returned(kind, cb, data, True))
        stray = int(self.array[len(self.slots)].pvBuffer or 0)
        if stray and stray not in freed:
            free(stray)  # the library allocated into the sentinel slot; do not leak it
        return results

    def copy_back(self, returned: list[Returned], *, inputs: bool) -> None:
        """Write the results into the caller's SecBuffer objects (GEN-10: at completion).

        For input lists only buffers the library changed are touched, so EXTRA/MISSING
        land in the caller's input list (SCH-25) and untouched tokens stay as they were.
        """
        for slot, result in zip(self.slots, returned, strict=True):
            target = slot.source
            if inputs and result.type == slot.original_type and result.cb == slot.capacity and (
                result.type & 0x0FFFFFFF
            ) not in COUNT_ONLY_TYPES:
                if slot.memory is not None:
                    now = ctypes.string_at(slot.address, slot.capacity)
                    if now != target.data.ljust(slot.capacity, b"\0"):
                        target.data = now  # modified in place (DecryptMessage)
                continue
            target.type = result.type
            if (result.type & 0x0FFFFFFF) in COUNT_ONLY_TYPES:
                target.data = b""
                target.size = result.cb
            else:
                target.data = result.data
                target.size = None if len(result.data) == result.cb else result.cb
