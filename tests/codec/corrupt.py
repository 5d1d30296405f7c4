"""Corruptions of an encoded stream, shared by the malformed-input tests."""

import copy

import numpy as np

from netshrink.core.errors import NetshrinkFormatError


def truncations(payload: bytes) -> list[bytes]:
    return [payload[:cut] for cut in sorted({0, len(payload) // 2, max(0, len(payload) - 1)}) if cut < len(payload)]


def bit_flips(payload: bytes, how_many: int = 24, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    flipped = []
    for bit in rng.integers(0, 8 * len(payload), min(how_many, 8 * len(payload))):
        data = bytearray(payload)
        data[bit // 8] ^= 1 << (bit % 8)
        flipped.append(bytes(data))
    return flipped


def param_edits(params: dict) -> list[dict]:
    """Each key removed, set to junk types, or pushed out of range."""
    edited = []
    for key, value in params.items():
        without = copy.deepcopy(params)
        del without[key]
        edited.append(without)
        junk = [None, "x", -1, 2**70, 1.5, True, [], {}]
        if isinstance(value, list):
            junk += [value[:-1], value + [1], [-1] * len(value), [99] * len(value), ["a"] * len(value)]
        for bad in junk:
            changed = copy.deepcopy(params)
            changed[key] = bad
            edited.append(changed)
    return edited


def decodes_or_refuses(decode, *args) -> None:
    """Run a decoder on corrupt input: a result or NetshrinkFormatError, nothing else."""
    try:
        decode(*args)
    except NetshrinkFormatError:
        pass
