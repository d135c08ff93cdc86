"""Issue 16 caps: the largest round close a task may ask for runs in one real
worker under the smallest ``worker_memory_mb`` a node may configure, and
states its peak RSS (VmHWM of the worker, a fresh pool)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from p2pml.chain.fedspec import MAX_ROUND_VALUES, FederatedSpec
from p2pml.chain.taskspec import TaskSpec
from p2pml.config import MIN_WORKER_MEMORY_MB
from p2pml.federated import rounds
from p2pml.federated.encoding import encode
from p2pml.ipfs.cid import cid_of_bytes
from p2pml.ml.fedjobs import FedAggregateRequest
from p2pml.ml.pool import TrainingPool
from tests.framework.waiting import TIMEOUT_FACTOR

pytestmark = pytest.mark.asyncio(loop_scope="function")

MIB = 1024**2
K, D = 64, 4095  # sgd_classifier: size K (D + 1) = 2^18
P = MAX_ROUND_VALUES // (K * (D + 1))  # 32 participants: P x size is the cap


@pytest_asyncio.fixture
async def pool() -> AsyncIterator[TrainingPool]:
    p = TrainingPool(1, memory_mb=MIN_WORKER_MEMORY_MB)
    await p.start()
    await p.run("info", None, 120 * TIMEOUT_FACTOR)  # imports done
    yield p
    await p.close()


def peak_rss(pool: TrainingPool) -> int:
    (pid,) = pool.pids
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


async def test_the_largest_allowed_median_close_fits_the_smallest_worker(
    pool: TrainingPool,
) -> None:
    fed = FederatedSpec("median", P, 1, 10, tuple(range(K)), clip=1.0)
    spec = TaskSpec(
        dataset_cid=cid_of_bytes(b"unused"),
        target="y",
        model="sgd_classifier",
        kind="classification",
        metric="accuracy",
        features=tuple(f"f{i}" for i in range(D)),
        federated=fed,
    )
    spec.validate()  # allowed: exactly at the cap
    layout = rounds.layout_of(spec.to_wire())
    assert P * layout.size == MAX_ROUND_VALUES
    seed = hashlib.sha256(b"seed").digest()
    g0 = rounds.initial(spec.to_wire(), seed)
    rng = np.random.default_rng(1)
    updates = [
        (
            hashlib.sha256(bytes([i])).digest(),
            encode(layout, g0 + rng.normal(scale=1e-4, size=layout.size)),
            10,
        )
        for i in range(P)
    ]
    before = peak_rss(pool)
    started = time.perf_counter()
    job = FedAggregateRequest(spec, b"t" * 32, seed, None, [updates], None)
    [(digest, encoding, _metric)] = await pool.run("fed_aggregate", job, 300 * TIMEOUT_FACTOR)
    seconds = time.perf_counter() - started
    peak = peak_rss(pool)
    print(
        f"close of {P} x {layout.size}: {seconds:.1f} s, peak RSS {before / MIB:.0f} -> "
        f"{peak / MIB:.0f} MiB (limit {MIN_WORKER_MEMORY_MB} MiB)"
    )
    assert len(digest) == 32 and len(encoding) == layout.encoded_bytes
    # Inputs 64 MiB a copy: bytes, vectors, deltas, clipped, stacked, sorted.
    assert peak < MIN_WORKER_MEMORY_MB * MIB
