"""The async ``Trainer`` service: fetch, train in the pool, store the artifact.

The event loop only awaits here: parsing, fitting, evaluation and
serialisation happen in :mod:`p2pml.ml.worker` processes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from p2pml.chain.taskspec import TaskSpec
from p2pml.config import TrainingSettings
from p2pml.errors import (
    DatasetError,
    DatasetTooLarge,
    MissingDataError,
    TrainingError,
    ValidationError,
)
from p2pml.ipfs.store import DatasetStore
from p2pml.ml.jobpool import JobPool
from p2pml.ml.scheduling import Priority
from p2pml.ml.verify import ResultClaim, verify_result_async
from p2pml.ml.worker import TrainRequest, TrainResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingOutcome:
    metric: float
    model_cid: str
    train_rows: int
    train_ms: int


class Trainer:
    """Trains task rounds on this node, within the configured policy.

    ``cache_dir`` holds parsed datasets (default: ``<dataset file>.parsed``
    beside each fetched dataset).
    """

    def __init__(
        self,
        store: DatasetStore,
        pool: JobPool,
        settings: TrainingSettings,
        cache_dir: Path | None = None,
    ) -> None:
        self._store = store
        self._pool = pool
        self._settings = settings
        self._cache_dir = cache_dir
        self._slots = asyncio.Semaphore(max(1, settings.max_concurrent_jobs))
        self._running = 0

    @property
    def running_jobs(self) -> int:
        return self._running

    def accepts(self, spec: TaskSpec) -> Literal[True] | str:
        """True, or the reason this node will not train ``spec`` now."""
        if not self._settings.enabled:
            return "training-disabled"
        try:
            spec.validate()
        except ValidationError as e:
            return e.reason
        allowed = self._settings.allowed_models
        if allowed and spec.model not in allowed:
            return "model-not-allowed"
        if self._running >= self._settings.max_concurrent_jobs:
            return "busy"
        return True

    def _cache_for(self, path: Path) -> Path:
        return self._cache_dir if self._cache_dir is not None else Path(str(path) + ".parsed")

    async def _dataset(self, spec: TaskSpec) -> Path:
        try:
            path = await self._store.fetch(spec.dataset_cid)
        except DatasetError as e:
            reason = (
                "dataset-too-large" if isinstance(e, DatasetTooLarge) else "dataset-unavailable"
            )
            raise TrainingError(reason, f"{spec.dataset_cid}: {e}") from None
        size = path.stat().st_size
        if size > self._settings.max_dataset_bytes:
            raise TrainingError(
                "dataset-too-large", f"{size} bytes > limit {self._settings.max_dataset_bytes}"
            )
        return path

    async def train_round(
        self, spec: TaskSpec, task_id: bytes, seed: bytes, trainer_pubkey: bytes, round: int
    ) -> TrainingOutcome:
        """Train one round; ``TrainingError`` with a stable reason on failure.

        Waits for a free slot when ``max_concurrent_jobs`` are running.
        """
        try:
            spec.validate()
        except ValidationError as e:
            raise TrainingError(e.reason, e.detail) from None
        if not 0 <= round < spec.rounds:
            raise TrainingError("bad-round", f"round {round} not in 0..{spec.rounds - 1}")
        for name, value in (("task_id", task_id), ("seed", seed), ("trainer", trainer_pubkey)):
            if len(value) != 32:
                raise TrainingError("bad-input", f"{name} must be 32 bytes")
        allowed = self._settings.allowed_models
        if allowed and spec.model not in allowed:
            raise TrainingError("model-not-allowed", spec.model)
        self._running += 1  # queued jobs count: accepts() says "busy" for them too
        try:
            async with self._slots:
                t0 = time.monotonic()
                path = await self._dataset(spec)
                t1 = time.monotonic()
                request = TrainRequest(
                    spec,
                    task_id,
                    seed,
                    trainer_pubkey,
                    round,
                    str(path),
                    str(self._cache_for(path)),
                    self._settings.max_dataset_bytes,
                    self._settings.parsed_cache_max_bytes,
                )
                result: TrainResult = await self._pool.run(
                    "train", request, self._settings.max_job_seconds, Priority.TRAIN
                )
                t2 = time.monotonic()
                try:
                    cid = await self._store.add_bytes(result.artifact)
                except DatasetError as e:
                    raise TrainingError("artifact-store-failed", str(e)) from None
        finally:
            self._running -= 1
        # Where a round's time went: the dataset, the pool (waiting for a
        # worker, then the job), storing the model.
        log.info(
            "trained %s round %d: %s=%.6g on %d rows in %d ms -> %s "
            "(dataset %d ms, pool %d ms, store %d ms)",
            spec.model,
            round,
            spec.metric,
            result.metric,
            result.train_rows,
            result.train_ms,
            cid,
            (t1 - t0) * 1000,
            (t2 - t1) * 1000,
            (time.monotonic() - t2) * 1000,
        )
        return TrainingOutcome(result.metric, cid, result.train_rows, result.train_ms)

    async def verify(self, claim: ResultClaim, background: bool = False) -> None:
        """Verify a peer's result in the pool (fetching the dataset as needed).
        ``background``: a gossiped result, whose job yields to block
        verification and training (:mod:`p2pml.ml.scheduling`).

        ``ValidationError`` if the result is invalid; ``MissingDataError``
        ("pending-data") if the dataset cannot be fetched now.
        """
        spec = claim.spec
        try:
            path = await self._dataset(spec)
        except TrainingError as e:
            if e.reason == "dataset-too-large":
                raise ValidationError("bad-result-dataset", e.detail) from None
            raise MissingDataError(spec.dataset_cid, e.detail) from None
        await verify_result_async(
            self._pool,
            claim,
            path,
            cache_dir=self._cache_for(path),
            max_dataset_bytes=self._settings.max_dataset_bytes,
            cache_max_bytes=self._settings.parsed_cache_max_bytes,
            timeout=self._settings.max_job_seconds,
            priority=Priority.BACKGROUND if background else Priority.BLOCK,
        )
