"""Every allowlisted estimator's artifact round-trips through real embedded IPFS:
trained and stored on one node, fetched and verified by another over bitswap."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from p2pml.config import IpfsSettings, TrainingSettings
from p2pml.ipfs import embedded_swarm_addrs, open_dataset_store
from p2pml.ipfs.caching import CachingDatasetStore
from p2pml.ml.artifact import load_model
from p2pml.ml.estimators import ESTIMATORS
from p2pml.ml.partition import derive_random_state
from p2pml.ml.pool import TrainingPool
from p2pml.ml.trainer import Trainer
from p2pml.ml.verify import ResultClaim
from tests.integration.ml.test_ml_training import ALICE, CASES, SEED, TASK, make_spec

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def two_stores(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[CachingDatasetStore, CachingDatasetStore]]:
    base = tmp_path_factory.mktemp("ipfs-ml")
    a = open_dataset_store(IpfsSettings(mode="embedded", timeout=60), base / "a")
    await a.start()
    b = open_dataset_store(
        IpfsSettings(mode="embedded", timeout=60, peers=tuple(embedded_swarm_addrs(a))),
        base / "b",
    )
    await b.start()
    yield a, b
    await b.close()
    await a.close()


@pytest.mark.parametrize(("model", "dataset", "target", "metric", "params"), CASES)
async def test_artifact_round_trips_through_ipfs(
    tmp_path: Path,
    pool: TrainingPool,
    data_dir: Path,
    two_stores: tuple[CachingDatasetStore, CachingDatasetStore],
    model: str,
    dataset: str,
    target: str,
    metric: str,
    params: dict[str, Any],
) -> None:
    a, b = two_stores
    cid = await a.add(data_dir / f"{dataset}.csv")
    settings = TrainingSettings(enabled=True, max_job_seconds=120.0)
    trainer_a = Trainer(a, pool, settings, tmp_path / "parsed-a")
    spec = make_spec(cid, model, target, metric, params)
    out = await trainer_a.train_round(spec, TASK, SEED, ALICE, 0)
    # Node b has neither the dataset nor the model: both come over bitswap.
    artifact = (await b.fetch(out.model_cid)).read_bytes()
    loaded = load_model(artifact, model, spec.param_dict, derive_random_state(SEED, TASK, ALICE, 0))
    cls = type(loaded)
    assert f"{cls.__module__}.{cls.__name__}".endswith(ESTIMATORS[model].class_path.split(".")[-1])
    trainer_b = Trainer(b, pool, settings, tmp_path / "parsed-b")
    await trainer_b.verify(
        ResultClaim(spec, TASK, SEED, ALICE, 0, artifact, out.metric, out.train_rows, audit=True)
    )
