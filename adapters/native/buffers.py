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
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from adapters.api import SecBuffer
from adapters.constants import SECBUFFER_EXTRA, SECBUFFER_MISSING, SECBUFFER_VERSION
from adapters.native import ffi

DEFAULT_GUARD = 1024
PATTERN = b"\xa5\x5a\xc3\x3c"
_SENTINEL_ULONG = 0xA5A5A5A5
_SENTINEL_PTR = 0  # NULL: a library that fills it allocates instead of writing through it
COUNT_ONLY_TYPES = frozenset({SECBUFFER_EXTRA, SECBUFFER_MISSING})
# One SecBuffer as the host lays it out (ULONG, ULONG, pointer), to read the whole array at once.
_ENTRY = struct.Struct("@IIP")
assert _ENTRY.size == ctypes.sizeof(ffi.SecBuffer), "SecBuffer layout differs from struct '@IIP'"


@functools.lru_cache(maxsize=8)
def _pattern(length: int) -> bytes:
    return (PATTERN * (length // len(PATTERN) + 1))[:length]


def _head(memory: ctypes.Array[ctypes.c_char], count: int) -> bytes:
    """The first ``count`` bytes (fewer if the array is shorter): a c_char array slices to bytes."""
    return cast(bytes, memory[:count])


class _Slot:
    """One caller buffer and the memory we gave the library for it."""

    __slots__ = ("address", "capacity", "memory", "original_type", "source")

    def __init__(self, source: SecBuffer, capacity: int, memory: ctypes.Array[ctypes.c_char] | None,
                 original_type: int) -> None:
        self.source = source
        self.capacity = capacity
        self.memory = memory  # None: pvBuffer NULL
        self.address = ctypes.addressof(memory) if memory is not None else 0
        self.original_type = original_type


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
        self.guard = guard = max(16, guard)
        tail = _pattern(guard)
        slots: list[_Slot] = []
        count = len(buffers)
        self.array = array = (ffi.SecBuffer * (count + 1))()
        for index, buf in enumerate(buffers):
            data = buf.data
            size = buf.size
            capacity = size if size is not None and size > len(data) else len(data)
            memory = None
            if not allocate and capacity > 0:
                # Allocation, caller data and guard pattern in one C-level copy.
                image = data + bytes(capacity - len(data)) + tail if len(data) < capacity else data + tail
                memory = (ctypes.c_char * (capacity + guard)).from_buffer_copy(image)
            slot = _Slot(buf, capacity if memory is not None else 0, memory, buf.type)
            slots.append(slot)
            entry = array[index]
            entry.cbBuffer = slot.capacity
            entry.BufferType = buf.type & 0xFFFFFFFF
            entry.pvBuffer = slot.address or None
        sentinel = array[count]
        sentinel.cbBuffer = _SENTINEL_ULONG
        sentinel.BufferType = _SENTINEL_ULONG
        self.slots = slots
        self.desc = ffi.SecBufferDesc(SECBUFFER_VERSION, count, array)

    def finish(self, free: Callable[[int], int], *, inputs: bool) -> list[Overrun]:
        """After the call: the guard check, then read-back and copy-back in one pass."""
        entries = self._entries()
        found = self.overruns(entries)
        self.copy_back(self.returned(free, entries), inputs=inputs)
        return found

    def pointer(self) -> ctypes._Pointer[ffi.SecBufferDesc]:
        return ctypes.pointer(self.desc)

    # ---- after the call -------------------------------------------------------------
    def _entries(self) -> list[tuple[int, int, int]]:
        """(cbBuffer, BufferType, pvBuffer) of every entry, sentinel included, read from
        the array's memory in one copy rather than field by field."""
        raw = bytes(self.array)
        return [_ENTRY.unpack_from(raw, offset) for offset in range(0, len(raw), _ENTRY.size)]

    def overruns(self, entries: list[tuple[int, int, int]] | None = None) -> list[Overrun]:
        found: list[Overrun] = []
        guard = self.guard
        tail = _pattern(guard)
        for index, slot in enumerate(self.slots):
            memory = slot.memory
            if memory is None:
                continue
            seen = cast(bytes, memory[slot.capacity:])  # a c_char array slices to bytes
            if seen != tail:
                last = max(i for i in range(guard) if seen[i] != tail[i])
                found.append(Overrun(index, slot.capacity, last + 1))
        cb, kind, address = (entries or self._entries())[len(self.slots)]
        if cb != _SENTINEL_ULONG or kind != _SENTINEL_ULONG or address != _SENTINEL_PTR:
            found.append(Overrun(len(self.slots), 0, 0, sentinel=True))
        return found

    def _owner(self, address: int) -> tuple[_Slot, int] | None:
        for slot in self.slots:
            if slot.memory is not None and slot.address <= address < slot.address + slot.capacity + self.guard:
                return slot, address - slot.address
        return None

    def returned(
        self, free: Callable[[int], int], entries: list[tuple[int, int, int]] | None = None
    ) -> list[Returned]:
        """Read every SecBuffer back; library allocations are freed (once each) with ``free``."""
        if entries is None:
            entries = self._entries()
        results: list[Returned] = []
        freed: set[int] = set()
        for index, slot in enumerate(self.slots):
            cb, kind, address = entries[index]
            if (kind & 0x0FFFFFFF) in COUNT_ONLY_TYPES or address == 0:
                # EXTRA/MISSING carry only a count; their pvBuffer is not ours to read (SCH-24).
                results.append(Returned(kind, cb, b"", False))
                continue
            if address == slot.address:  # the common case: our own buffer, from its start
                data = _head(slot.memory, cb) if slot.memory is not None else b""
                results.append(Returned(kind, cb, data, False))
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
        stray = entries[len(self.slots)][2]
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
                    now = _head(slot.memory, slot.capacity)
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
