"""SecBufferDesc marshalling with guard zones, and copy-back at completion.

Every buffer handed to the library gets ``guard`` extra bytes after its capacity, filled
with a known pattern; the SecBuffer array itself gets one extra sentinel entry after
``cBuffers``.  After the call :meth:`CBufferDesc.finish` reports any guard byte that
changed (the library wrote past ``cbBuffer``) and a changed sentinel (the library wrote a
SecBuffer it was not given).  A write larger than the guard zone still corrupts memory,
which is why the adapter runs in a child process by default.

Memory the library allocated (ISC_REQ_ALLOCATE_MEMORY, or a NULL ``pvBuffer`` it chose
to fill) is read and released with FreeContextBuffer exactly once (SCH-8).

Speed (docs/native.md, Performance): the C side of a call is reused, as a C caller
reuses its stack frame.  A :class:`_Frame` (SecBufferDesc + SecBuffer array + a
``byref`` to it) is pooled per buffer count, and buffer memory is pooled per power-of-two
size class as a ``bytearray`` seen by C through a ``c_char`` array over it, so filling it
(data, zero padding, guard pattern) is three slice assignments and the guard check is one
bytes comparison.  The whole SecBuffer array is written and read with one ``struct``
pack/unpack.  Pools are plain lists (``pop``/``append`` are atomic under the GIL), so
worker threads share them without a lock.
"""

from __future__ import annotations

import ctypes
import functools
import struct
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
# One SecBuffer as the host lays it out (ULONG, ULONG, pointer); SecBufferDesc has the
# same shape (ulVersion, cBuffers, pBuffers).
_ENTRY = struct.Struct("@IIP")
assert _ENTRY.size == ctypes.sizeof(ffi.SecBuffer), "SecBuffer layout differs from struct '@IIP'"
assert _ENTRY.size == ctypes.sizeof(ffi.SecBufferDesc), "SecBufferDesc layout differs from struct '@IIP'"
_SENTINEL_ENTRY = (_SENTINEL_ULONG, _SENTINEL_ULONG, _SENTINEL_PTR)
_ZEROS = memoryview(bytes(1 << 16))  # padding source: a slice of it copies without allocating
_POOLED_MAX = 1 << 20  # larger blocks are not kept (a fuzzer's huge buffers must not pin memory)
_POOL_DEPTH = 16  # blocks kept per size class: enough for every worker thread


@functools.lru_cache(maxsize=8)
def _pattern(length: int) -> bytes:
    return (PATTERN * (length // len(PATTERN) + 1))[:length]


@functools.lru_cache(maxsize=64)
def _layout(count: int) -> struct.Struct:
    """The SecBuffer array of ``count`` entries plus the sentinel, as one struct."""
    return struct.Struct("@" + "IIP" * (count + 1))


class _Block:
    """Pooled buffer memory: a bytearray (fast slice writes) that C sees as a c_char array."""

    __slots__ = ("address", "c", "size", "store")

    def __init__(self, size: int) -> None:
        self.size = size
        self.store = bytearray(size)
        # from_buffer pins the bytearray (it can no longer be resized), so the address holds.
        self.c = (ctypes.c_char * size).from_buffer(self.store)
        self.address = ctypes.addressof(self.c)


_BLOCKS: dict[int, list[_Block]] = {}


def _take_block(need: int) -> _Block:
    size = 1 << max(11, (need - 1).bit_length())  # size class: next power of two, at least 2 KiB
    pool = _BLOCKS.get(size)
    if pool:
        try:
            return pool.pop()
        except IndexError:  # another thread took the last one
            pass
    return _Block(size)


def _give_block(block: _Block) -> None:
    if block.size <= _POOLED_MAX:
        pool = _BLOCKS.setdefault(block.size, [])
        if len(pool) < _POOL_DEPTH:
            pool.append(block)


class _Frame:
    """A SecBufferDesc and its SecBuffer array (with the sentinel entry), reused per count."""

    __slots__ = ("array", "array_address", "count", "desc", "layout", "ref")

    def __init__(self, count: int) -> None:
        self.count = count
        self.array = (ffi.SecBuffer * (count + 1))()
        self.array_address = ctypes.addressof(self.array)
        self.desc = ffi.SecBufferDesc(SECBUFFER_VERSION, count, self.array)
        self.ref = ctypes.byref(self.desc)  # what the library is handed, built once
        self.layout = _layout(count)


_FRAMES: dict[int, list[_Frame]] = {}


def _take_frame(count: int) -> _Frame:
    pool = _FRAMES.get(count)
    if pool:
        try:
            return pool.pop()
        except IndexError:
            pass
    return _Frame(count)


def _give_frame(frame: _Frame) -> None:
    pool = _FRAMES.setdefault(frame.count, [])
    if len(pool) < _POOL_DEPTH:
        pool.append(frame)


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


_NO_OVERRUNS: list[Overrun] = []  # shared empty result; callers only iterate it


class CBufferDesc:
    """A C SecBufferDesc built from the caller's SecBuffer list for one call.

    ``allocate``: output buffers are handed over with ``pvBuffer`` NULL / ``cbBuffer`` 0 so
    the library allocates them (ISC_REQ_ALLOCATE_MEMORY / ASC_REQ_ALLOCATE_MEMORY).
    Otherwise a buffer with capacity 0 and no data is passed as NULL/0 as C callers do
    (SCH-5's empty slot), and any other buffer gets ``capacity + guard`` bytes.

    Call :meth:`finish` exactly once after the library call: it checks, copies back and
    returns the C memory to the pools.
    """

    __slots__ = ("blocks", "buffers", "caps", "frame", "guard", "ref", "tail")

    def __init__(self, buffers: list[SecBuffer], *, allocate: bool = False, guard: int = DEFAULT_GUARD) -> None:
        self.guard = guard = max(16, guard)
        self.tail = tail = _pattern(guard)
        self.buffers = buffers
        count = len(buffers)
        self.frame = frame = _take_frame(count)
        self.ref = frame.ref
        blocks: list[_Block | None] = []
        caps: list[int] = []
        fields: list[int] = []
        for buf in buffers:
            data = buf.data
            used = len(data)
            size = buf.size
            capacity = size if size is not None and size > used else used
            if allocate or capacity <= 0:
                blocks.append(None)
                caps.append(0)
                fields += (0, buf.type & 0xFFFFFFFF, 0)
                continue
            block = _take_block(capacity + guard)
            store = block.store
            store[0:used] = data
            if capacity > used:
                pad = capacity - used
                store[used:capacity] = _ZEROS[:pad] if pad <= len(_ZEROS) else bytes(pad)
            store[capacity:capacity + guard] = tail
            blocks.append(block)
            caps.append(capacity)
            fields += (capacity, buf.type & 0xFFFFFFFF, block.address)
        fields += _SENTINEL_ENTRY
        frame.layout.pack_into(frame.array, 0, *fields)
        # The library could have rewritten the descriptor on the frame's last use.
        _ENTRY.pack_into(frame.desc, 0, SECBUFFER_VERSION, count, frame.array_address)
        self.blocks = blocks
        self.caps = caps

    def pointer(self) -> object:
        """What to pass as the PSecBufferDesc argument (a reusable ``byref``)."""
        return self.ref

    def finish(self, free: Callable[[int], int], *, inputs: bool) -> list[Overrun]:
        """After the call: guard check, read-back and copy-back into the caller's
        SecBuffers (GEN-10: at completion), then the memory goes back to the pools.

        For input lists only buffers the library changed are touched, so EXTRA/MISSING
        land in the caller's input list (SCH-25) and untouched tokens stay as they were.
        """
        frame = self.frame
        entries = frame.layout.unpack_from(frame.array, 0)
        guard, tail, blocks, caps = self.guard, self.tail, self.blocks, self.caps
        found = _NO_OVERRUNS
        count = len(caps)
        for index in range(count):
            block = blocks[index]
            if block is not None:
                capacity = caps[index]
                seen = block.store[capacity:capacity + guard]
                if seen != tail:
                    last = max(i for i in range(guard) if seen[i] != tail[i])
                    found = [*found, Overrun(index, capacity, last + 1)]
        base = 3 * count
        stray = entries[base + 2]
        if entries[base] != _SENTINEL_ULONG or entries[base + 1] != _SENTINEL_ULONG or stray != _SENTINEL_PTR:
            found = [*found, Overrun(count, 0, 0, sentinel=True)]
        freed: set[int] | None = None
        for index, target in enumerate(self.buffers):
            at = 3 * index
            cb, kind, address = entries[at], entries[at + 1], entries[at + 2]
            block = blocks[index]
            capacity = caps[index]
            count_only = (kind & 0x0FFFFFFF) in COUNT_ONLY_TYPES
            if inputs and not count_only and cb == capacity and kind == target.type & 0xFFFFFFFF:
                if block is not None:
                    now: bytes = block.c[:capacity]  # type: ignore[assignment]  # c_char slices are bytes
                    if now != target.data.ljust(capacity, b"\0"):
                        target.data = now  # modified in place (DecryptMessage)
                continue
            target.type = kind
            if count_only:
                # EXTRA/MISSING carry only a count; their pvBuffer is not ours to read (SCH-24).
                target.data = b""
                target.size = cb
                continue
            if address == 0:
                data = b""
            elif block is not None and address == block.address:  # our own buffer, from its start
                data = block.c[:min(cb, capacity + guard)]  # type: ignore[assignment]  # bytes, as above
            else:
                owner = self._owner(address)
                if owner is not None:
                    offset, limit = owner
                    data = ctypes.string_at(address, min(cb, limit - offset))
                else:
                    data = ctypes.string_at(address, cb)
                    if freed is None:
                        freed = set()
                    if address not in freed:
                        freed.add(address)
                        free(address)
            target.data = data
            target.size = None if len(data) == cb else cb
        if stray and (freed is None or stray not in freed):
            free(stray)  # the library allocated into the sentinel slot; do not leak it
        self._release()
        return found

    def _owner(self, address: int) -> tuple[int, int] | None:
        """(offset into, readable length of) the buffer of ours that ``address`` points into."""
        for block, capacity in zip(self.blocks, self.caps, strict=True):
            if block is not None and block.address <= address < block.address + capacity + self.guard:
                return address - block.address, capacity + self.guard
        return None

    def _release(self) -> None:
        for block in self.blocks:
            if block is not None:
                _give_block(block)
        _give_frame(self.frame)
        self.blocks = []
