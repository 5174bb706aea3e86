"""Seeded 64-bit hashing of int64 id tensors, identical in training, export and serving.

The mixer is the SplitMix64 finaliser (Steele, Lea and Flood, "Fast splittable pseudorandom number
generators", OOPSLA 2014): xor-shift-multiply rounds that spread every input bit over the output.
torch has no unsigned 64-bit type, so the arithmetic runs on int64: multiplication wraps modulo
2^64 as unsigned multiplication does, and right shifts are made logical by masking.
"""

from __future__ import annotations

import zlib

import torch

UINT64 = 1 << 64
NON_NEGATIVE = (1 << 63) - 1
GOLDEN_GAMMA = 0x9E3779B97F4A7C15
FIRST_MULTIPLIER = 0xBF58476D1CE4E5B9
SECOND_MULTIPLIER = 0x94D049BB133111EB


def as_int64(value: int) -> int:
    """The int64 with the same 64 bits as the unsigned `value`."""
    value %= UINT64
    return value - UINT64 if value >= 1 << 63 else value


def shift_right(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bits."""
    return (values >> bits) & ((1 << (64 - bits)) - 1)


def mix64(values: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser on int64 bits: every input bit flips about half the output bits."""
    values = (values ^ shift_right(values, 30)) * as_int64(FIRST_MULTIPLIER)
    values = (values ^ shift_right(values, 27)) * as_int64(SECOND_MULTIPLIER)
    return values ^ shift_right(values, 31)


def mix64_int(value: int) -> int:
    """`mix64` of one Python integer, as an unsigned 64-bit value."""
    value %= UINT64
    value = ((value ^ (value >> 30)) * FIRST_MULTIPLIER) % UINT64
    value = ((value ^ (value >> 27)) * SECOND_MULTIPLIER) % UINT64
    return value ^ (value >> 31)


def derive_salt(seed: int, *keys: int) -> int:
    """An int64 salt for one (seed, keys...) combination: one independent hash function each."""
    state = seed
    for key in (*keys, 0):
        state = mix64_int(state * GOLDEN_GAMMA + key + 1)
    return as_int64(state)


def hash_ids(ids: torch.Tensor, salt: int, buckets: int) -> torch.Tensor:
    """Bucket in [0, buckets) of every int64 id under the hash function chosen by `salt`."""
    return (mix64(ids ^ salt) & NON_NEGATIVE) % buckets


def feature_key(feature: str) -> int:
    """A stable integer for a feature name, so a feature hashes alike whatever the feature order."""
    return zlib.crc32(feature.encode())
