import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netshrink.codec.bitpack import pack_bits, pack_variable_bits, unpack_bits
from netshrink.core.errors import NetshrinkFormatError


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(1, 16), data=st.data())
def test_pack_unpack_round_trip(bits, data):
    values = np.array(data.draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=300)), dtype=np.int64)
    packed = pack_bits(values, bits)
    assert len(packed) == (values.size * bits + 7) // 8
    assert np.array_equal(unpack_bits(packed, bits, values.size), values)


def test_bit_order_is_little_endian():
    assert pack_bits(np.array([1, 0, 1, 1]), 1) == bytes([0b1101])
    assert pack_bits(np.array([0x3, 0x1]), 4) == bytes([0x13])
    assert pack_bits(np.array([0x1FF]), 9) == bytes([0xFF, 0x01])


def test_round_trip_across_chunks():
    values = np.random.default_rng(0).integers(0, 32, (1 << 20) + 77)
    assert np.array_equal(unpack_bits(pack_bits(values, 5), 5, values.size), values)


def test_unpack_dtype_is_smallest_unsigned():
    assert unpack_bits(b"\x00", 8, 1).dtype == np.uint8
    assert unpack_bits(b"\x00\x00", 9, 1).dtype == np.uint16


def test_variable_widths_concatenate():
    assert pack_variable_bits(np.array([1, 2, 0]), np.array([1, 2, 0])) == bytes([0b101])


def test_pack_rejects_values_that_do_not_fit():
    with pytest.raises(ValueError):
        pack_bits(np.array([8]), 3)


@pytest.mark.parametrize("length", [0, 2, 4])
def test_unpack_rejects_wrong_length(length):
    with pytest.raises(NetshrinkFormatError):
        unpack_bits(bytes(length), 5, 4)  # 4 values of 5 bits need exactly 3 bytes


@pytest.mark.parametrize("bits", [0, 17, -1, True])
def test_unpack_rejects_bad_bit_width(bits):
    with pytest.raises(NetshrinkFormatError):
        unpack_bits(b"", bits, 0)
