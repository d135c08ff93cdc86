"""Partition derivation: reproducible from the spec, disjoint, right-sized, unbiased."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pml.errors import ValidationError
from p2pml.ml.partition import (
    check_sizes,
    derive_random_state,
    holdout_indices,
    holdout_size,
    partition_indices,
    partition_size,
)

SEED = bytes(range(32))
TASK = hashlib.sha256(b"task").digest()
ALICE = hashlib.sha256(b"alice").digest()
BOB = hashlib.sha256(b"bob").digest()

b32 = st.binary(min_size=32, max_size=32)


def reference(
    seed: bytes, task: bytes, key: bytes, rnd: int, n: int, h: float, p: float
) -> tuple[list[int], list[int]]:
    """An independent, loop-by-loop reading of docs/tasks.md."""

    def keys(msg: bytes) -> list[int]:
        stream = hashlib.shake_256(msg).digest(8 * n)
        return [int.from_bytes(stream[8 * i : 8 * i + 8], "big") for i in range(n)]

    hk = keys(b"p2pml/holdout/v1" + seed + task)
    hold = sorted(sorted(range(n), key=lambda i: (hk[i], i))[: int(n * h)])
    pk = keys(b"p2pml/partition/v1" + seed + task + key + rnd.to_bytes(4, "big"))
    rest = [i for i in range(n) if i not in set(hold)]
    part = sorted(sorted(rest, key=lambda i: (pk[i], i))[: int(n * p)])
    return hold, part


@pytest.mark.parametrize(("n", "h", "p"), [(10, 0.1, 0.5), (137, 0.2, 0.8), (1000, 0.25, 0.3)])
def test_matches_reference_reading_of_the_spec(n: int, h: float, p: float) -> None:
    hold, part = reference(SEED, TASK, ALICE, 3, n, h, p)
    assert holdout_indices(SEED, TASK, n, h).tolist() == hold
    assert partition_indices(SEED, TASK, ALICE, 3, n, h, p).tolist() == part


def test_known_answer_vectors() -> None:
    # Pinned outputs: any change to the derivation breaks consensus and this test.
    assert holdout_indices(SEED, TASK, 20, 0.2).tolist() == HOLDOUT_20
    assert partition_indices(SEED, TASK, ALICE, 0, 20, 0.2, 0.25).tolist() == PART_20
    assert derive_random_state(SEED, TASK, ALICE, 0) == RS_ALICE_0


HOLDOUT_20 = [1, 4, 9, 15]
PART_20 = [5, 8, 13, 18, 19]
RS_ALICE_0 = 2124423470


@settings(max_examples=60, deadline=None)
@given(
    seed=b32,
    task=b32,
    key=b32,
    rnd=st.integers(0, 63),
    n=st.integers(10, 3000),
    h=st.floats(0.01, 0.5),
    p=st.floats(0.01, 0.99),
)
def test_properties(
    seed: bytes, task: bytes, key: bytes, rnd: int, n: int, h: float, p: float
) -> None:
    p = min(p, 1.0 - h)
    try:
        check_sizes(n, h, p)
    except ValidationError as e:
        assert e.reason == "too-few-rows"
        return
    hold = holdout_indices(seed, task, n, h)
    part = partition_indices(seed, task, key, rnd, n, h, p)
    assert len(hold) == holdout_size(n, h) == int(n * h)
    assert len(part) == partition_size(n, p) == int(n * p)
    assert np.all(np.diff(hold) > 0) and np.all(np.diff(part) > 0)  # ascending, unique
    assert hold.min() >= 0 and hold.max() < n and part.min() >= 0 and part.max() < n
    assert not set(hold.tolist()) & set(part.tolist())
    # Deterministic, and the holdout does not depend on the trainer or round.
    assert np.array_equal(part, partition_indices(seed, task, key, rnd, n, h, p))
    other = bytes([key[0] ^ 1]) + key[1:]
    assert np.array_equal(hold, holdout_indices(seed, task, n, h))
    if len(part) >= 20 and n - len(hold) - len(part) >= 20:
        assert not np.array_equal(part, partition_indices(seed, task, other, rnd, n, h, p))
        assert not np.array_equal(part, partition_indices(seed, task, key, rnd + 1, n, h, p))


def test_depends_on_seed_task_trainer_round() -> None:
    n, h, p = 1000, 0.2, 0.4
    base = partition_indices(SEED, TASK, ALICE, 0, n, h, p)
    variants = [
        partition_indices(SEED[::-1], TASK, ALICE, 0, n, h, p),
        partition_indices(SEED, ALICE, ALICE, 0, n, h, p),
        partition_indices(SEED, TASK, BOB, 0, n, h, p),
        partition_indices(SEED, TASK, ALICE, 1, n, h, p),
    ]
    for v in variants:
        overlap = len(np.intersect1d(base, v)) / len(base)
        assert 0.2 < overlap < 0.8  # roughly independent draws, not shifted copies
    assert not np.array_equal(holdout_indices(SEED, TASK, n, h), holdout_indices(SEED, BOB, n, h))
    rs = {derive_random_state(SEED, TASK, k, r) for k in (ALICE, BOB) for r in range(4)}
    assert len(rs) == 8 and all(0 <= x < 2**31 for x in rs)


def test_rows_are_selected_uniformly() -> None:
    n, counts = 200, np.zeros(200)
    for r in range(400):
        counts[partition_indices(SEED, TASK, ALICE, r, n, 0.1, 0.5)] += 1
    hold = holdout_indices(SEED, TASK, n, 0.1)
    assert counts[hold].sum() == 0
    rest = np.delete(counts, hold)
    # Each non-holdout row is picked with p = 100/180; binomial sd over 400 draws ~ 9.9.
    assert abs(rest.mean() - 400 * 100 / 180) < 1e-9
    assert rest.min() > 400 * 100 / 180 - 50 and rest.max() < 400 * 100 / 180 + 50


def test_too_few_rows() -> None:
    for n, h, p in [(9, 0.2, 0.5), (10, 0.05, 0.5), (10, 0.2, 0.1)]:
        with pytest.raises(ValidationError) as e:
            partition_indices(SEED, TASK, ALICE, 0, n, h, p)
        assert e.value.reason == "too-few-rows"


def test_bad_lengths() -> None:
    with pytest.raises(ValueError):
        holdout_indices(SEED[:31], TASK, 100, 0.2)
    with pytest.raises(ValueError):
        partition_indices(SEED, TASK, ALICE + b"x", 0, 100, 0.2, 0.5)
    with pytest.raises(ValueError):
        derive_random_state(SEED, TASK, ALICE, -1)


def test_one_million_rows() -> None:
    # Its speed is a figure in scripts/bench_training.py, not a test bound.
    part = partition_indices(SEED, TASK, ALICE, 0, 1_000_000, 0.2, 0.5)
    assert len(part) == 500_000 and bool((np.diff(part) > 0).all())  # ascending, distinct
    holdout = holdout_indices(SEED, TASK, 1_000_000, 0.2)
    assert len(np.intersect1d(part, holdout)) == 0
