"""DescriptorMap: slicing and scattering across descriptor elements."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from datamover_tcp.descriptor import DescriptorMap


@given(sizes=st.lists(st.integers(0, 40), min_size=1, max_size=6), data=st.data())
def test_slices_and_scatter_match_a_flat_buffer(sizes: list[int], data: st.DataObject) -> None:
    total = sum(sizes)
    flat = bytes((i * 7) & 0xFF for i in range(total))
    views, pos = [], 0
    for size in sizes:
        views.append(memoryview(bytearray(flat[pos:pos + size])))
        pos += size
    dmap = DescriptorMap(views)
    assert dmap.length == total
    offset = data.draw(st.integers(0, total))
    length = data.draw(st.integers(0, total - offset))
    assert b"".join(bytes(v) for v in dmap.slices(offset, length)) == flat[offset:offset + length]
    patch = bytes(range(length))
    dmap.scatter(offset, memoryview(patch))
    assert b"".join(bytes(v) for v in views) == flat[:offset] + patch + flat[offset + length:]


def test_out_of_range_is_refused() -> None:
    dmap = DescriptorMap([memoryview(bytearray(10))])
    with pytest.raises(ValueError):
        dmap.slices(5, 6)
    with pytest.raises(ValueError):
        dmap.scatter(8, memoryview(b"abc"))
    assert DescriptorMap(None).length == 0


def test_non_byte_formats_are_counted_in_bytes() -> None:
    words = memoryview(bytearray(16)).cast("I")
    dmap = DescriptorMap([words])
    assert dmap.length == 16
    dmap.scatter(4, memoryview(b"\x01\x00\x00\x00"))
    assert words[1] == 1
