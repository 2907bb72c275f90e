"""Native adapter: SecBufferDesc marshalling on its own (no library needed).

The C side is pooled (docs/native.md, Performance): a descriptor and its buffer memory are
reused by the next call of the same buffer count.  These tests play the library by hand
through the descriptor pointer and check that reuse never leaks one call into the next:
zero padding, guard pattern, sentinel, copy-back and FreeContextBuffer stay per call.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

from adapters.api import SecBuffer
from adapters.constants import SECBUFFER_DATA, SECBUFFER_EXTRA, SECBUFFER_TOKEN
from adapters.native import buffers
from adapters.native.buffers import CBufferDesc, marshal

GUARD = 64


def _c_buffer(desc: CBufferDesc, index: int) -> tuple[int, int, int]:
    entry = desc.view.pBuffers[index]
    return entry.cbBuffer, entry.BufferType, entry.pvBuffer or 0


def _memory(desc: CBufferDesc, index: int, length: int) -> bytes:
    _cb, _type, address = _c_buffer(desc, index)
    return ctypes.string_at(address, length)


def _recorder(freed: list[int]) -> Callable[[int], int]:
    def free(address: int) -> int:
        freed.append(address)
        return 0

    return free


def _no_free(address: int) -> int:
    raise AssertionError(f"FreeContextBuffer called on our own memory {address:#x}")


def test_reused_output_memory_is_zeroed_and_guarded_again() -> None:
    first = [SecBuffer(SECBUFFER_TOKEN, size=32)]
    desc = marshal(first, False, GUARD)
    _cb, _type, address = _c_buffer(desc, 0)
    ctypes.memset(address, 0x41, 32)  # the "library" fills the whole capacity
    desc.view.pBuffers[0].cbBuffer = 32
    assert desc.finish(_no_free, inputs=False) == []
    assert first[0].data == b"A" * 32

    second = [SecBuffer(SECBUFFER_TOKEN, size=32)]
    again = marshal(second, False, GUARD)
    assert again is desc  # the same frame, reused
    assert _c_buffer(again, 0)[2] == address  # and the same memory
    assert _memory(again, 0, 32 + GUARD) == bytes(32) + buffers._pattern(GUARD)
    again.finish(_no_free, inputs=False)
    assert second[0].data == bytes(32)  # nothing written: cbBuffer still 32 zero bytes


def test_an_overrun_is_reported_on_a_reused_frame_and_then_repaired() -> None:
    for attempt in range(2):
        out = [SecBuffer(SECBUFFER_TOKEN, size=16)]
        desc = marshal(out, False, GUARD)
        _cb, _type, address = _c_buffer(desc, 0)
        ctypes.memset(address, 0x42, 16 + 5)
        found = desc.finish(_no_free, inputs=False)
        assert [(o.index, o.capacity, o.written_past) for o in found] == [(0, 16, 5)], attempt
    clean = [SecBuffer(SECBUFFER_TOKEN, size=16)]
    desc = marshal(clean, False, GUARD)
    assert desc.finish(_no_free, inputs=False) == []  # the guard was rewritten for this call


def test_sentinel_write_is_reported_and_its_allocation_freed() -> None:
    freed: list[int] = []
    keep = ctypes.create_string_buffer(b"stray", 8)
    desc = marshal([SecBuffer(SECBUFFER_TOKEN, size=8)], False, GUARD)
    sentinel = desc.view.pBuffers[1]
    sentinel.cbBuffer, sentinel.pvBuffer = 5, ctypes.addressof(keep)
    found = desc.finish(_recorder(freed), inputs=False)
    assert [o.sentinel for o in found] == [True]
    assert freed == [ctypes.addressof(keep)]
    desc = marshal([SecBuffer(SECBUFFER_TOKEN, size=8)], False, GUARD)
    assert desc.finish(_no_free, inputs=False) == []  # the sentinel is reset for the next call


def test_library_allocation_is_read_and_freed_once() -> None:
    freed: list[int] = []
    allocated = ctypes.create_string_buffer(b"token-bytes", 11)
    out = [SecBuffer(SECBUFFER_TOKEN, size=0)]
    desc = marshal(out, True, GUARD)
    assert _c_buffer(desc, 0)[0::2] == (0, 0)  # ALLOCATE_MEMORY: NULL / 0
    entry = desc.view.pBuffers[0]
    entry.cbBuffer, entry.pvBuffer = 11, ctypes.addressof(allocated)
    assert desc.finish(_recorder(freed), inputs=False) == []
    assert out[0].data == b"token-bytes" and out[0].size is None
    assert freed == [ctypes.addressof(allocated)]


def test_inputs_untouched_stay_and_extra_lands_in_the_input_list() -> None:
    token = b"\x01" * 20
    inputs = [SecBuffer(SECBUFFER_TOKEN, token), SecBuffer(SECBUFFER_DATA, b"plain")]
    desc = marshal(inputs, False, GUARD)
    _cb, _type, address = _c_buffer(desc, 1)
    ctypes.memmove(address, b"PLAIN", 5)  # modified in place, as DecryptMessage does
    extra = desc.view.pBuffers[0]
    extra.BufferType, extra.cbBuffer = SECBUFFER_EXTRA, 7
    assert desc.finish(_no_free, inputs=True) == []
    assert inputs[0].type == SECBUFFER_EXTRA and inputs[0].data == b"" and inputs[0].size == 7  # SCH-25
    assert inputs[1].data == b"PLAIN"
    same = [SecBuffer(SECBUFFER_TOKEN, token)]
    desc = marshal(same, False, GUARD)
    desc.finish(_no_free, inputs=True)
    assert same[0].data is token  # untouched: the caller's own bytes object


def test_guard_size_can_change_between_calls_on_one_frame() -> None:
    for guard in (16, 256, 16):
        out = [SecBuffer(SECBUFFER_TOKEN, size=8)]
        desc = marshal(out, False, guard)
        assert _memory(desc, 0, 8 + guard)[8:] == buffers._pattern(guard)
        _cb, _type, address = _c_buffer(desc, 0)
        ctypes.memset(address + 8 + guard - 1, 0, 1)  # the last guard byte
        found = desc.finish(_no_free, inputs=False)
        assert [o.written_past for o in found] == [guard]


def test_huge_blocks_are_not_kept_by_the_pool() -> None:
    size = buffers._KEPT_MAX + 1
    desc = marshal([SecBuffer(SECBUFFER_TOKEN, size=size)], False, GUARD)
    block = desc.blocks[0]
    assert block is not None and block.size > buffers._KEPT_MAX
    desc.finish(_no_free, inputs=False)
    assert desc.blocks[0] is None


def test_a_guard_left_intact_is_kept_and_a_later_overrun_still_found() -> None:
    """A reused output slot of the same capacity keeps its verified guard (it is not
    rewritten); a write past cbBuffer in a later call is still reported, and the next call
    gets a freshly written guard again."""
    capacity = 24
    desc = marshal([SecBuffer(SECBUFFER_TOKEN, size=capacity)], False, GUARD, output=True)
    assert desc.finish(_no_free, inputs=False) == []  # clean call: the guard is verified
    block = desc.blocks[0]
    assert block is not None and block.guarded == capacity

    again = marshal([SecBuffer(SECBUFFER_TOKEN, size=capacity)], False, GUARD, output=True)
    assert again is desc
    assert _memory(again, 0, capacity + GUARD) == bytes(capacity) + buffers._pattern(GUARD)
    _cb, _type, address = _c_buffer(again, 0)
    ctypes.memset(address + capacity + 3, 0x00, 1)  # one byte inside the kept guard
    found = again.finish(_no_free, inputs=False)
    assert [(o.index, o.capacity, o.written_past) for o in found] == [(0, capacity, 4)]
    assert block.guarded == -1

    clean = marshal([SecBuffer(SECBUFFER_TOKEN, size=capacity)], False, GUARD, output=True)
    assert _memory(clean, 0, capacity + GUARD) == bytes(capacity) + buffers._pattern(GUARD)
    assert clean.finish(_no_free, inputs=False) == []


def test_a_guard_moves_with_the_capacity() -> None:
    """Shrinking then growing a slot's capacity rewrites the guard at each new offset and
    zeroes the old pattern's bytes that are now padding."""
    for capacity in (40, 8, 40, 56, 40):
        out = [SecBuffer(SECBUFFER_TOKEN, size=capacity)]
        desc = marshal(out, False, GUARD, output=True)
        assert _memory(desc, 0, capacity + GUARD) == bytes(capacity) + buffers._pattern(GUARD), capacity
        assert desc.finish(_no_free, inputs=False) == []
        assert out[0].data == bytes(capacity)


def test_outputs_and_inputs_have_separate_pools() -> None:
    out = marshal([SecBuffer(SECBUFFER_TOKEN, size=16)], False, GUARD, output=True)
    out.finish(_no_free, inputs=False)
    given = [SecBuffer(SECBUFFER_TOKEN, b"token")]
    inp = marshal(given, False, GUARD)
    assert inp is not out
    inp.finish(_no_free, inputs=True)
    assert marshal([SecBuffer(SECBUFFER_TOKEN, size=16)], False, GUARD, output=True) is out


def test_an_input_changed_in_place_is_copied_back() -> None:
    token = b"\x11" * 12
    given = [SecBuffer(SECBUFFER_TOKEN, token)]
    desc = marshal(given, False, GUARD)
    _cb, _type, address = _c_buffer(desc, 0)
    ctypes.memmove(address + 11, b"\x22", 1)  # the last byte only
    assert desc.finish(_no_free, inputs=True) == []
    assert given[0].data == b"\x11" * 11 + b"\x22"
