"""Randomness nobody can choose: holdout split, partitions, random_state.

Everything derives from the 32-byte hash of the block that includes the task
(the *seed*), the 32-byte task id, the trainer's 32-byte Ed25519 public key
and the round. The exact algorithm is specified in ``docs/tasks.md`` so that
another implementation reproduces it bit for bit. In short:

* row keys: SHAKE-256 over an explicit byte layout, read as 8n bytes, row
  ``i``'s key is bytes ``[8i, 8i+8)`` as an unsigned 64-bit big-endian int;
* a selection of ``k`` rows is the ``k`` rows with the smallest
  ``(key, row index)``, returned in ascending row-index order;
* sizes use IEEE-754 double multiplication and floor.

Pure: numpy and hashlib only, no I/O. Inputs of the wrong length raise
``ValueError`` (callers validate lengths before this point).
"""

from __future__ import annotations

import functools
import hashlib
import math
from typing import Final

import numpy as np
import numpy.typing as npt

from p2pml.errors import ValidationError

HOLDOUT_DOMAIN: Final = b"p2pml/holdout/v1"
PARTITION_DOMAIN: Final = b"p2pml/partition/v1"
RANDOM_STATE_DOMAIN: Final = b"p2pml/random_state/v1"

#: Fewer rows than this and a task cannot be trained (nor evaluated) sensibly.
MIN_ROWS: Final = 10

IndexArray = npt.NDArray[np.int64]


def _check32(name: str, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != 32:
        raise ValueError(f"{name} must be 32 bytes")


def _check_round(round: int) -> None:
    if isinstance(round, bool) or not isinstance(round, int) or not 0 <= round < 2**32:
        raise ValueError("round must be an int in [0, 2**32)")


def holdout_size(n_rows: int, holdout_fraction: float) -> int:
    """floor(n_rows * holdout_fraction) in IEEE-754 double arithmetic."""
    return math.floor(float(n_rows) * holdout_fraction)


def partition_size(n_rows: int, partition_fraction: float) -> int:
    """floor(n_rows * partition_fraction): a fraction of ALL rows, not of the rest."""
    return math.floor(float(n_rows) * partition_fraction)


def check_sizes(n_rows: int, holdout_fraction: float, partition_fraction: float) -> None:
    """Refuse datasets too small for the task: ``ValidationError("too-few-rows")``."""
    h = holdout_size(n_rows, holdout_fraction)
    p = partition_size(n_rows, partition_fraction)
    if n_rows < MIN_ROWS or h < 1 or p < 2 or h + p > n_rows:
        raise ValidationError(
            "too-few-rows",
            f"{n_rows} rows give holdout {h} and partition {p} (need >= {MIN_ROWS} rows, "
            "holdout >= 1, partition >= 2)",
        )


def row_keys(message: bytes, n_rows: int) -> npt.NDArray[np.uint64]:
    """Key of every row: SHAKE-256(message) read as n big-endian uint64s."""
    if n_rows < 0:
        raise ValueError("n_rows must be >= 0")
    stream = hashlib.shake_256(message).digest(8 * n_rows) if n_rows else b""
    return np.frombuffer(stream, dtype=">u8").astype(np.uint64)


def row_keys_be(message: bytes, n_rows: int) -> npt.NDArray[np.uint64]:
    """:func:`row_keys` as a read-only big-endian view of the SHAKE output (no copy)."""
    if n_rows < 0:
        raise ValueError("n_rows must be >= 0")
    stream = hashlib.shake_256(message).digest(8 * n_rows) if n_rows else b""
    return np.frombuffer(stream, dtype=">u8")


def _smallest(keys: npt.NDArray[np.uint64], k: int) -> IndexArray:
    # A stable sort orders equal keys by row index: selection by (key, index).
    order = np.argsort(keys, kind="stable")
    return np.sort(order[:k]).astype(np.int64)


def holdout_message(seed: bytes, task_id: bytes) -> bytes:
    _check32("seed", seed)
    _check32("task_id", task_id)
    return HOLDOUT_DOMAIN + seed + task_id


def partition_message(seed: bytes, task_id: bytes, trainer_pubkey: bytes, round: int) -> bytes:
    _check32("seed", seed)
    _check32("task_id", task_id)
    _check32("trainer_pubkey", trainer_pubkey)
    _check_round(round)
    return PARTITION_DOMAIN + seed + task_id + trainer_pubkey + round.to_bytes(4, "big")


def holdout_indices(
    seed: bytes, task_id: bytes, n_rows: int, holdout_fraction: float
) -> IndexArray:
    """The holdout rows (ascending), identical for every trainer and verifier.

    Cached (read-only) per process: a verifier checks many results of one
    task, and each partition derivation needs the holdout too.
    """
    return _holdout_cached(seed, task_id, n_rows, holdout_fraction)


@functools.lru_cache(maxsize=32)
def _holdout_cached(
    seed: bytes, task_id: bytes, n_rows: int, holdout_fraction: float
) -> IndexArray:
    keys = row_keys(holdout_message(seed, task_id), n_rows)
    out = _smallest(keys, holdout_size(n_rows, holdout_fraction))
    out.setflags(write=False)
    return out


def partition_indices(
    seed: bytes,
    task_id: bytes,
    trainer_pubkey: bytes,
    round: int,
    n_rows: int,
    holdout_fraction: float,
    partition_fraction: float,
) -> IndexArray:
    """The training rows (ascending) of ``trainer_pubkey`` in ``round``.

    The partition_size(n_rows, partition_fraction) non-holdout rows with the
    smallest partition keys; disjoint from the holdout by construction.
    """
    check_sizes(n_rows, holdout_fraction, partition_fraction)
    holdout = holdout_indices(seed, task_id, n_rows, holdout_fraction)
    keys = row_keys(partition_message(seed, task_id, trainer_pubkey, round), n_rows)
    candidates = np.ones(n_rows, dtype=bool)
    candidates[holdout] = False
    rest = np.flatnonzero(candidates)  # ascending, so a stable sort breaks ties by index
    chosen = rest[_smallest(keys[rest], partition_size(n_rows, partition_fraction))]
    return chosen.astype(np.int64)


def derive_random_state(seed: bytes, task_id: bytes, trainer_pubkey: bytes, round: int) -> int:
    """The estimator's random_state: 31 bits of SHA-256 (valid for every sklearn RNG)."""
    _check32("seed", seed)
    _check32("task_id", task_id)
    _check32("trainer_pubkey", trainer_pubkey)
    _check_round(round)
    digest = hashlib.sha256(
        RANDOM_STATE_DOMAIN + seed + task_id + trainer_pubkey + round.to_bytes(4, "big")
    ).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFF_FFFF
