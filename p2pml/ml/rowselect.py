"""The holdout and partition of ``p2pml.ml.partition`` in bounded memory.

Same selection rule (the ``k`` candidate rows with the smallest
``(key, row index)``), computed without sorting all ``n`` keys: a histogram of
the keys' top 16 bits finds the bucket that holds the ``k``-th smallest key,
only that bucket is sorted, and the result is a boolean row mask. Extra
memory is the key stream itself (8 bytes a row, the SHAKE output), the mask
(1 byte a row) and one bucket (about n / 65536 rows), instead of an argsort's
16+ bytes a row. Tests check the result equals ``partition.py`` bit for bit.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from p2pml.ml.partition import (
    check_sizes,
    holdout_message,
    holdout_size,
    partition_message,
    partition_size,
    row_keys_be,
)

Mask = npt.NDArray[np.bool_]

#: Rows per step of a pass over the keys (bounds the temporaries).
STEP: Final = 1 << 20
_SHIFT: Final = 48


def smallest_mask(keys: npt.NDArray[np.uint64], k: int, exclude: Mask | None = None) -> Mask:
    """Mask of the ``k`` rows not in ``exclude`` with the smallest (key, index)."""
    n = len(keys)
    out = np.zeros(n, dtype=bool)
    if k <= 0:
        return out
    hist = np.zeros(1 << (64 - _SHIFT), dtype=np.int64)
    for a in range(0, n, STEP):
        top = (keys[a : a + STEP] >> np.uint64(_SHIFT)).astype(np.int64)
        if exclude is not None:
            top = top[~exclude[a : a + STEP]]
        hist += np.bincount(top, minlength=len(hist))
    if k >= int(hist.sum()):
        out[:] = True if exclude is None else ~exclude
        return out
    cum = np.cumsum(hist)
    bucket = int(np.searchsorted(cum, k))  # first bucket with cum >= k
    below = int(cum[bucket - 1]) if bucket else 0
    # Rows of that bucket, ordered by (key, index): the (k - below)-th is the last taken.
    idx_parts, key_parts = [], []
    for a in range(0, n, STEP):
        chunk = keys[a : a + STEP]
        hit = (chunk >> np.uint64(_SHIFT)) == np.uint64(bucket)
        if exclude is not None:
            hit &= ~exclude[a : a + STEP]
        where = np.flatnonzero(hit)
        idx_parts.append(where + a)
        key_parts.append(chunk[where].astype(np.uint64))
    idx = np.concatenate(idx_parts)
    bkeys = np.concatenate(key_parts)
    order = np.lexsort((idx, bkeys))
    last = order[k - below - 1]
    t_key, t_idx = bkeys[last], idx[last]
    for a in range(0, n, STEP):
        chunk = keys[a : a + STEP].astype(np.uint64)
        rows = np.arange(a, a + len(chunk))
        take = (chunk < t_key) | ((chunk == t_key) & (rows <= t_idx))
        if exclude is not None:
            take &= ~exclude[a : a + STEP]
        out[a : a + STEP] = take
    return out


def holdout_mask(seed: bytes, task_id: bytes, n_rows: int, holdout_fraction: float) -> Mask:
    keys = row_keys_be(holdout_message(seed, task_id), n_rows)
    return smallest_mask(keys, holdout_size(n_rows, holdout_fraction))


def partition_mask(
    seed: bytes,
    task_id: bytes,
    trainer_pubkey: bytes,
    round: int,
    n_rows: int,
    holdout: Mask,
    holdout_fraction: float,
    partition_fraction: float,
) -> Mask:
    """The partition as a mask; ``holdout`` is :func:`holdout_mask` of the task."""
    check_sizes(n_rows, holdout_fraction, partition_fraction)
    keys = row_keys_be(partition_message(seed, task_id, trainer_pubkey, round), n_rows)
    return smallest_mask(keys, partition_size(n_rows, partition_fraction), exclude=holdout)
