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
reuses its stack frame.  A :class:`CBufferDesc` (SecBufferDesc, SecBuffer array and
sentinel in one C structure, plus a ``byref`` to it) is pooled per buffer count, and each
of its slots keeps its memory: a ``bytearray`` seen by C through a ``c_char`` array, so
filling it (data, zero padding, guard pattern) is at most three slice assignments and the
guard check is one in-place comparison (``startswith`` at the guard's offset: no copy).
A guard zone left intact at the same offset, as a reused output buffer's is, is not
rewritten: the block remembers where its verified pattern lies (``_Block.guarded``) and
any write the library made past it is still found by the next check.  Descriptor and
array are written with one ``struct`` pack and read with one unpack.  Pools are plain
lists (``pop``/``append`` are atomic under the GIL), so worker threads share them without
a lock; inputs and outputs have separate pools so that an output slot keeps its block and
its guard position from one call to the next.  Nothing from an earlier call is visible to
the library: padding is zeroed, the sentinel rewritten and the guard rewritten or found
intact every time.
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
_KEPT_MAX = 1 << 20  # a frame does not keep a block larger than this between calls
_DESC_SIZE = ctypes.sizeof(ffi.SecBufferDesc)
# The frame of a single buffer (descriptor, SecBuffer, sentinel): the usual case, packed
# and unpacked with explicit fields (no field list built on the hot path).
_ONE = struct.Struct("@" + "IIP" * 3)


@functools.lru_cache(maxsize=8)
def _pattern(length: int) -> bytes:
    return (PATTERN * (length // len(PATTERN) + 1))[:length]


class _Block:
    """Buffer memory: a bytearray (slice writes are one memcpy) that C sees as a c_char array.

    ``guarded``: the offset (a capacity) at which the frame's current guard pattern was
    last written or verified intact, else -1.  Only this module writes into the block, and
    never past the capacity it lays out, so a pattern found intact after a call is still
    there for the next call of the same capacity.
    """

    __slots__ = ("address", "c", "guarded", "size", "store")

    def __init__(self, need: int) -> None:
        self.size = size = 1 << max(11, (need - 1).bit_length())  # next power of two, at least 2 KiB
        self.store = bytearray(size)
        # from_buffer pins the bytearray (it can no longer be resized), so the address holds.
        self.c = (ctypes.c_char * size).from_buffer(self.store)
        self.address = ctypes.addressof(self.c)
        self.guarded = -1


@functools.lru_cache(maxsize=64)
def _frame_type(count: int) -> type[ctypes.Structure]:
    """SecBufferDesc immediately followed by its SecBuffer array (``count`` + the sentinel)."""
    return type(f"_Frame{count}", (ctypes.Structure,), {
        "_fields_": [("desc", ffi.SecBufferDesc), ("buffers", ffi.SecBuffer * (count + 1))]
    })


_FRAMES: dict[int, list[CBufferDesc]] = {}  # input (and message) frames by buffer count
_OUTPUT_FRAMES: dict[int, list[CBufferDesc]] = {}  # output frames by buffer count

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
_NO_BUFFERS: list[SecBuffer] = []  # what an idle frame points at (never mutated)


def marshal(
    buffers: list[SecBuffer], allocate: bool = False, guard: int = DEFAULT_GUARD, output: bool = False
) -> CBufferDesc:
    """A C SecBufferDesc for ``buffers``, taken from the pool for its buffer count (and
    role: ``output`` frames are pooled apart, see the module docstring)."""
    count = len(buffers)
    frames = _OUTPUT_FRAMES if output else _FRAMES
    pool = frames.get(count)
    if pool is None:
        pool = frames.setdefault(count, [])
    try:
        desc = pool.pop()
    except IndexError:  # none free (or another thread took the last one)
        desc = CBufferDesc(count, pool)
    if count == 1 and guard == desc.guard:
        desc.fill_one(buffers, allocate)
    else:
        desc.fill(buffers, allocate, guard)
    return desc


class CBufferDesc:
    """A C SecBufferDesc built from the caller's SecBuffer list for one call.

    ``allocate``: output buffers are handed over with ``pvBuffer`` NULL / ``cbBuffer`` 0 so
    the library allocates them (ISC_REQ_ALLOCATE_MEMORY / ASC_REQ_ALLOCATE_MEMORY).
    Otherwise a buffer with capacity 0 and no data is passed as NULL/0 as C callers do
    (SCH-5's empty slot), and any other buffer gets ``capacity + guard`` bytes.

    Reused like a C caller's stack frame: get one from :func:`marshal`, pass :attr:`ref`,
    then call :meth:`finish` exactly once, which checks, copies back and returns it to the
    pool.  The descriptor, the array and the sentinel are one C structure, written with
    one ``struct`` pack and read with one unpack; each slot keeps its memory block.
    """

    __slots__ = ("array", "blocks", "buffers", "caps", "count", "guard", "head", "huge", "layout", "memory", "pool",
                 "ref", "tail", "view")

    def __init__(self, count: int, pool: list[CBufferDesc] | None = None) -> None:
        self.count = count
        self.pool = pool if pool is not None else []
        # The frame's memory is a bytearray that C sees through the ctypes frame laid over it
        # (from_buffer pins it): struct packs into and unpacks from the bytearray directly,
        # which is cheaper than through a ctypes object's buffer export.
        frame_type = _frame_type(count)
        self.memory = bytearray(ctypes.sizeof(frame_type))
        frame = frame_type.from_buffer(self.memory)
        self.view = frame.desc  # shares the frame's memory; byref keeps it (and the bytearray) alive
        self.ref = ctypes.byref(self.view)  # what the library is handed, built once
        # desc (ulVersion, cBuffers, pBuffers) then every SecBuffer, sentinel included.
        self.layout = struct.Struct("@" + "IIP" * (count + 2))
        self.array = ctypes.addressof(frame) + _DESC_SIZE  # pBuffers
        self.head = (SECBUFFER_VERSION, count, self.array)
        self.huge = False  # a slot holds a block too large to keep after the call
        self.blocks: list[_Block | None] = [None] * count
        self.caps = [0] * count
        self.buffers: list[SecBuffer] = _NO_BUFFERS
        self.guard = DEFAULT_GUARD
        self.tail = _pattern(DEFAULT_GUARD)

    def pointer(self) -> object:
        """What to pass as the PSecBufferDesc argument (a reusable ``byref``)."""
        return self.ref

    def fill(self, buffers: list[SecBuffer], allocate: bool, guard: int) -> None:
        """Lay ``buffers`` out for the call: data, zero padding up to the capacity, guard."""
        if guard != self.guard:
            self.guard = guard = max(16, guard)
            self.tail = _pattern(guard)
            for block in self.blocks:
                if block is not None:
                    block.guarded = -1  # a pattern of another length: rewrite it
        if self.count == 1:
            self.fill_one(buffers, allocate)
            return
        self.buffers = buffers
        # The descriptor is rewritten too: the library could have changed it last time.
        fields = list(self.head)
        for index in range(self.count):
            fields += self._slot(index, buffers[index], allocate)
        fields += _SENTINEL_ENTRY
        self.layout.pack_into(self.memory, 0, *fields)

    def _slot(self, index: int, buf: SecBuffer, allocate: bool) -> tuple[int, int, int]:
        """Prepare slot ``index``'s memory; returns its (cbBuffer, BufferType, pvBuffer)."""
        data = buf.data
        used = len(data)
        size = buf.size
        capacity = size if size is not None and size > used else used
        if allocate or capacity <= 0:
            self.caps[index] = 0
            return 0, buf.type & 0xFFFFFFFF, 0
        guard = self.guard
        block = self.blocks[index]
        if block is None or block.size < capacity + guard:
            block = self.blocks[index] = _Block(capacity + guard)
            if block.size > _KEPT_MAX:
                self.huge = True
        store = block.store
        store[0:used] = data
        if capacity > used:
            pad = capacity - used
            store[used:capacity] = _ZEROS[:pad] if pad <= len(_ZEROS) else bytes(pad)
        if block.guarded != capacity:
            store[capacity:capacity + guard] = self.tail
            block.guarded = capacity
        self.caps[index] = capacity
        return capacity, buf.type & 0xFFFFFFFF, block.address

    def fill_one(self, buffers: list[SecBuffer], allocate: bool) -> None:
        """:meth:`fill` for the usual single buffer: the slot prepared as :meth:`_slot` does,
        the descriptor written with one explicit pack instead of a field list."""
        self.buffers = buffers
        cb, buffer_type, address = self._slot(0, buffers[0], allocate)
        _ONE.pack_into(self.memory, 0, SECBUFFER_VERSION, 1, self.array, cb, buffer_type, address,
                       _SENTINEL_ULONG, _SENTINEL_ULONG, _SENTINEL_PTR)

    def finish(self, free: Callable[[int], int], *, inputs: bool) -> list[Overrun]:
        """After the call: guard check, read-back and copy-back into the caller's
        SecBuffers (GEN-10: at completion), then back to the pool.

        For input lists only buffers the library changed are touched, so EXTRA/MISSING
        land in the caller's input list (SCH-25) and untouched tokens stay as they were.
        """
        if self.count == 1:
            # The usual single buffer, left where we put it, guard and sentinel intact.
            _version, _count, _array, cb, kind, address, sentinel_cb, sentinel_kind, stray = _ONE.unpack_from(
                self.memory
            )
            capacity = self.caps[0]
            block = self.blocks[0]
            if (
                sentinel_cb == _SENTINEL_ULONG and sentinel_kind == _SENTINEL_ULONG and stray == _SENTINEL_PTR
                and (kind & 0x0FFFFFFF) not in COUNT_ONLY_TYPES
                and (
                    (address == 0 and capacity == 0)
                    # The guard compared in place: the block is at least capacity + guard long.
                    or (capacity and block is not None and address == block.address
                        and block.store.startswith(self.tail, capacity))
                )
            ):
                target = self.buffers[0]
                if inputs and cb == capacity and kind == target.type & 0xFFFFFFFF:
                    if capacity:
                        given = target.data
                        # Unchanged (the usual case) is tested in place; otherwise compare
                        # a copy with the caller's bytes, zero padding included.
                        if len(given) != capacity or not block.store.startswith(given):  # type: ignore[union-attr]
                            now: bytes = block.c[:capacity]  # type: ignore[union-attr,assignment]  # bytes
                            if now != given.ljust(capacity, b"\0"):
                                target.data = now  # modified in place (DecryptMessage)
                else:
                    target.type = kind
                    data: bytes = block.c[:min(cb, capacity + self.guard)] if capacity else b""  # type: ignore[union-attr,assignment]
                    target.data = data
                    target.size = None if len(data) == cb else cb
                self.buffers = _NO_BUFFERS
                if self.huge:
                    self._drop_huge()
                self.pool.append(self)
                return _NO_OVERRUNS
        entries = self.layout.unpack_from(self.memory, 0)
        found = self._overruns(entries)
        self._copy_back(entries, free, inputs)
        self._release()
        return found

    def _overruns(self, entries: tuple[int, ...]) -> list[Overrun]:
        found: list[Overrun] = []
        guard, tail = self.guard, self.tail
        for index in range(self.count):
            capacity = self.caps[index]
            block = self.blocks[index]
            if capacity and block is not None:
                seen = block.store[capacity:capacity + guard]
                if seen != tail:
                    last = max(i for i in range(guard) if seen[i] != tail[i])
                    found.append(Overrun(index, capacity, last + 1))
                    block.guarded = -1  # rewrite it next time
                else:
                    block.guarded = capacity
        base = 3 * (self.count + 1)
        if entries[base:base + 3] != _SENTINEL_ENTRY:
            found.append(Overrun(self.count, 0, 0, sentinel=True))
        return found

    def _copy_back(self, entries: tuple[int, ...], free: Callable[[int], int], inputs: bool) -> None:
        freed: set[int] = set()
        guard = self.guard
        for index in range(self.count):
            target = self.buffers[index]
            at = 3 * (index + 1)
            cb, kind, address = entries[at:at + 3]
            capacity = self.caps[index]
            block = self.blocks[index] if capacity else None
            count_only = (kind & 0x0FFFFFFF) in COUNT_ONLY_TYPES
            if inputs and not count_only and cb == capacity and kind == target.type & 0xFFFFFFFF:
                if block is not None:
                    now = bytes(block.store[:capacity])
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
                data = bytes(block.store[:min(cb, capacity + guard)])
            else:
                owner = self._owner(address)
                if owner is not None:
                    offset, limit = owner
                    data = ctypes.string_at(address, min(cb, limit - offset))
                else:
                    data = ctypes.string_at(address, cb)
                    if address not in freed:
                        freed.add(address)
                        free(address)
            target.data = data
            target.size = None if len(data) == cb else cb
        stray = entries[3 * (self.count + 1) + 2]
        if stray and stray not in freed:
            free(stray)  # the library allocated into the sentinel slot; do not leak it

    def _owner(self, address: int) -> tuple[int, int] | None:
        """(offset into, readable length of) the buffer of ours that ``address`` points into."""
        for index in range(self.count):
            block, capacity = self.blocks[index], self.caps[index]
            if capacity and block is not None and block.address <= address < block.address + capacity + self.guard:
                return address - block.address, capacity + self.guard
        return None

    def _release(self) -> None:
        self.buffers = _NO_BUFFERS
        if self.huge:
            self._drop_huge()
        self.pool.append(self)

    def _drop_huge(self) -> None:
        """A fuzzer's huge buffer must not stay pinned in the pool."""
        self.huge = False
        for index in range(self.count):
            block = self.blocks[index]
            if block is not None and block.size > _KEPT_MAX:
                self.blocks[index] = None
