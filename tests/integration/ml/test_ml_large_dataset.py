"""A dataset larger than a worker's memory limit trains end to end (issue 17).

Real worker processes under ``RLIMIT_AS`` (the ``[training] worker_memory_mb``
limit) parse, train and verify a dataset whose float64 matrix alone is larger
than that limit: the in-memory path could not even hold X.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from p2pml.chain.taskspec import TaskSpec
from p2pml.errors import TrainingError, ValidationError
from p2pml.ipfs.cid import cid_of_bytes
from p2pml.ml.dataset import MAX_CELLS
from p2pml.ml.partition import partition_size
from p2pml.ml.pool import TrainingPool
from p2pml.ml.verify import ResultClaim, verify_result_async
from p2pml.ml.worker import TrainRequest
from tests.framework.waiting import TIMEOUT_FACTOR

pytestmark = pytest.mark.asyncio(loop_scope="module")

MEMORY_MB = 640  # an idle worker maps ~350 MiB: ~290 MiB left for a job
MIB = 1024 * 1024
FEATURES = 40
ROWS = 2_228_224  # 544 blocks of 4096 rows
SEED = hashlib.sha256(b"block").digest()
TASK = hashlib.sha256(b"large task").digest()
ALICE = hashlib.sha256(b"alice").digest()
CID = cid_of_bytes(b"the large dataset of this test")  # only a cache key here
JOB_SECONDS = 900 * TIMEOUT_FACTOR


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One-digit features (2 bytes a cell in the CSV, 8 in X) and a text label."""
    rng = np.random.default_rng(17)
    digits = rng.integers(0, 10, size=(4096, FEATURES))
    label = np.where(digits[:, 0] + digits[:, 1] > 9, "yes", "no")
    block = "".join(
        ",".join(map(str, row)) + f",{lab}\n" for row, lab in zip(digits, label, strict=True)
    ).encode()
    path = tmp_path_factory.mktemp("large") / "big.csv"
    with path.open("wb") as f:
        f.write((",".join(f"f{i}" for i in range(FEATURES)) + ",label\n").encode())
        for _ in range(ROWS // 4096):
            f.write(block)
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def limited() -> AsyncIterator[TrainingPool]:
    p = TrainingPool(1, memory_mb=MEMORY_MB)
    await p.start()
    yield p
    await p.close()


def spec(model: str, **params: object) -> TaskSpec:
    return TaskSpec(
        dataset_cid=CID,
        target="label",
        model=model,
        kind="classification",
        metric="accuracy",
        params=tuple(params.items()),  # type: ignore[arg-type]
    )


def request(s: TaskSpec, path: Path) -> TrainRequest:
    cache = path.parent / "parsed"
    return TrainRequest(s, TASK, SEED, ALICE, 0, str(path), str(cache), 1 << 30, 4 << 30)


async def test_sgd_trains_and_verifies_a_dataset_larger_than_worker_memory(
    limited: TrainingPool, big_csv: Path
) -> None:
    x_bytes = ROWS * FEATURES * 8
    assert x_bytes > MEMORY_MB * MIB and ROWS * (FEATURES + 1) > MAX_CELLS
    info = await limited.run("info", None, 30 * TIMEOUT_FACTOR)
    assert info["rlimit_as"] == (MEMORY_MB * MIB, MEMORY_MB * MIB)
    s = spec("sgd_classifier", loss="log_loss", alpha=0.001)
    got = await limited.run("train", request(s, big_csv), JOB_SECONDS)
    assert got.train_rows == partition_size(ROWS, s.partition_fraction)
    assert got.metric > 0.8  # the label is a linear rule of two features
    # Verification runs in the same limited worker, on the same chunked path.
    claim = ResultClaim(s, TASK, SEED, ALICE, 0, got.artifact, got.metric, got.train_rows)
    cache = big_csv.parent / "parsed"
    await verify_result_async(
        limited,
        dataclasses.replace(claim, audit=True),
        big_csv,
        cache_dir=cache,
        max_dataset_bytes=1 << 30,
        timeout=JOB_SECONDS,
    )
    with pytest.raises(ValidationError) as e:
        await verify_result_async(
            limited,
            dataclasses.replace(claim, claimed_metric=got.metric - 0.1),
            big_csv,
            cache_dir=cache,
            max_dataset_bytes=1 << 30,
            timeout=JOB_SECONDS,
        )
    assert e.value.reason == "bad-result-metric"
    assert info["pid"] in limited.pids  # the worker was never replaced


async def test_a_non_incremental_estimator_is_refused_with_the_reason(
    limited: TrainingPool, big_csv: Path
) -> None:
    s = spec("random_forest_classifier", n_estimators=5)
    with pytest.raises(TrainingError) as e:
        await limited.run("train", request(s, big_csv), JOB_SECONDS)
    assert e.value.reason == "partition-too-large"
