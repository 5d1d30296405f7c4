"""CRC-32 (the zlib / PNG polynomial) of pieces computed apart, then combined.

``zlib.crc32`` releases the GIL, so the pieces of one large tensor can be checksummed on several
threads; ``crc32_combine`` joins their results as if the bytes had been checksummed in one pass.
Hand-written because Python's ``zlib`` does not expose zlib's own ``crc32_combine``; this is the
same arithmetic (zlib 1.2.12 ``crc32.c``: multiplication modulo the CRC polynomial in GF(2),
and ``x^(8 n)`` by repeated squaring).
"""

from __future__ import annotations

_POLY = 0xEDB88320  # the CRC-32 polynomial, bit-reflected


def _multmodp(a: int, b: int) -> int:
    """``a * b`` modulo the polynomial (bit-reflected: bit 31 is x^0)."""
    m, product = 1 << 31, 0
    while a:
        if a & m:
            product ^= b
            a ^= m
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1
    return product


def _powers() -> list[int]:
    powers = [1 << 30]  # x^1
    for _ in range(31):
        powers.append(_multmodp(powers[-1], powers[-1]))  # x^(2^k)
    return powers


_X2N = _powers()


def _x8nmodp(nbytes: int) -> int:
    """``x^(8 nbytes)`` modulo the polynomial."""
    product, k = 1 << 31, 3
    while nbytes:
        if nbytes & 1:
            product = _multmodp(_X2N[k % 32], product)
        nbytes >>= 1
        k += 1
    return product


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """The CRC-32 of ``A + B`` from ``crc32(A)``, ``crc32(B)`` and ``len(B)``."""
    return _multmodp(_x8nmodp(length2), crc1) ^ crc2
