"""A static function: a small value for every key of a fixed set, stored without the keys.

An exact id -> value map keeps every id (8 bytes each, a sorted vocabulary); a strategy that only
needs each training id's small value (its cluster) can store far less. The xor retrieval structure
(the Bloomier filter of Chazelle, Kilian, Rubinfeld and Tal, SODA 2004, built by hypergraph peeling
as the xor filters of Graf and Lemire, "Xor Filters", JEA 2020, are) keeps an array A of about 1.23
slots per key, each slot as wide as the values, and answers

    value(id) = A[h0(id)] ^ A[h1(id)] ^ A[h2(id)]         h_i: a seeded hash into the i-th third of A

    3 keys, values [2, 0, 1], A of 3 x 11 slots:  value(977) = A[4] ^ A[17] ^ A[25] = 2

Keys of the set get their value exactly; any other id gets an arbitrary value below the next power
of two (a hash of it, in effect), which the caller folds into its range. Construction peels the
3-uniform hypergraph of slots (a slot used by one key is assigned last-in-first-out); it fails with
a small probability, and then retries with the next seed.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from recsys.tables.hashes import derive_salt, hash_ids

SLOTS_PER_KEY = 1.23
EXTRA_SLOTS_PER_THIRD = 11
ATTEMPTS = 16


def slot_dtype(largest: int) -> torch.dtype:
    """The narrowest integer type whose non-negative range holds every value up to `largest`."""
    for dtype in (torch.uint8, torch.int16, torch.int32):
        if largest <= torch.iinfo(dtype).max:
            return dtype
    return torch.int64


def third_size(keys: int) -> int:
    """Slots in each third of the array for `keys` keys."""
    return math.ceil(SLOTS_PER_KEY * keys / 3) + EXTRA_SLOTS_PER_THIRD


def slots_of(ids: torch.Tensor, salt: int, third: int) -> torch.Tensor:
    """[n, 3] slots of the ids: one in each third of an array of 3 * `third` slots."""
    return torch.stack([hash_ids(ids, derive_salt(salt, part), third) + part * third for part in range(3)], dim=1)


def peel(slots: np.ndarray, size: int) -> list[tuple[int, int]] | None:
    """(key, slot) pairs in peeling order, each slot used by no key peeled after it; None if it sticks."""
    counts = np.zeros(size, dtype=np.int64)
    lone_key = np.zeros(size, dtype=np.int64)
    for part in range(3):
        np.add.at(counts, slots[:, part], 1)
        np.bitwise_xor.at(lone_key, slots[:, part], np.arange(len(slots)))
    counts_list, lone_list, slots_list = counts.tolist(), lone_key.tolist(), slots.tolist()
    stack = [slot for slot in range(size) if counts_list[slot] == 1]
    order = []
    while stack:
        slot = stack.pop()
        if counts_list[slot] != 1:
            continue
        key = lone_list[slot]
        order.append((key, slot))
        for other in slots_list[key]:
            counts_list[other] -= 1
            lone_list[other] ^= key
            if counts_list[other] == 1:
                stack.append(other)
    return order if len(order) == len(slots) else None


def build_retrieval(keys: np.ndarray, values: np.ndarray, seed: int) -> tuple[torch.Tensor, int]:
    """(array, salt) such that `retrieve(array, salt, keys) == values`; keys must be distinct."""
    keys = np.asarray(keys, dtype=np.int64)
    values = np.asarray(values, dtype=np.int64)
    if len(np.unique(keys)) != len(keys):
        raise ValueError("a retrieval structure needs distinct keys")
    if len(values) and values.min() < 0:
        raise ValueError("retrieval values must be non-negative")
    dtype = slot_dtype(int(values.max()) if len(values) else 0)
    order, slots, salt = peel_keys(keys, [derive_salt(seed, attempt) for attempt in range(ATTEMPTS)])
    return assign(order, slots, values, 3 * third_size(len(keys)), dtype), salt


def peel_keys(keys: np.ndarray, salts: list[int]) -> tuple[list[tuple[int, int]], np.ndarray, int]:
    """(peeling order, [n, 3] slots, salt) of the keys under the first of `salts` whose slots peel.

    The order depends on the keys alone, so a structure whose values change (re-learned clusters) can
    be refilled by `assign` without peeling again."""
    third = third_size(len(keys))
    for salt in salts:
        slots = slots_of(torch.from_numpy(keys), salt, third).numpy()
        order = peel(slots, 3 * third)
        if order is not None:
            return order, slots, salt
    raise RuntimeError(f"no retrieval structure for {len(keys)} keys after {len(salts)} seeds")


def assign(order: list[tuple[int, int]], slots: np.ndarray, values: np.ndarray, size: int, dtype) -> torch.Tensor:
    """Fill the slots in reverse peeling order, so each key's three slots xor to its value."""
    array = [0] * size
    slots_list, values_list = slots.tolist(), values.tolist()
    for key, slot in reversed(order):
        first, second, third = slots_list[key]
        array[slot] = values_list[key] ^ array[first] ^ array[second] ^ array[third]  # array[slot] is still 0
    return torch.tensor(array, dtype=dtype)


def retrieve(array: torch.Tensor, salt: int, ids: torch.Tensor) -> torch.Tensor:
    """The stored value of every id (int64); an arbitrary value for ids outside the key set."""
    slots = slots_of(ids, salt, array.numel() // 3)
    picked = array[slots].to(torch.int64)
    return picked[:, 0] ^ picked[:, 1] ^ picked[:, 2]
