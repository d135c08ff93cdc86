"""The verdict oracle of federated tasks (docs/federated.md §11.6).

:class:`FederatedVerifier` is what the chain asks about updates (tag 9) and
round closes (tag 10); it wraps the result
:class:`~p2pml.node.verifier.Verifier` and passes everything else through.
Unknown answers are recorded as wanted (the block waits, "pending data") and
resolved by fetching the artifacts and running the federated core in the
worker pool (``p2pml.ml.fedjobs``), never on the event loop. Every global
model it computes is kept by hash, added to IPFS, and scored on the task's
holdout for the learning curve.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pml.chain.fedspec import MAX_UPDATE_BYTES  # consensus: every task's updates fit
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.types import RoundCloseTx, UpdateTx
from p2pml.config import TrainingSettings
from p2pml.errors import DatasetError, MissingDataError, TrainingError
from p2pml.ipfs.store import DatasetStore
from p2pml.ml.fedjobs import (
    FedAggregateRequest,
    FedCheckRequest,
    FedData,
    FedGainsRequest,
    FedScoreRequest,
)
from p2pml.ml.jobpool import JobPool
from p2pml.ml.scheduling import Priority
from p2pml.node.verifier import Request, Verifier

log = logging.getLogger(__name__)

CACHE_MAX = 10_000
#: What a round close must carry: hash(G_{r+1}) and the round's gains.
Close = tuple[bytes, tuple[int, ...]]


@dataclass(frozen=True)
class UpdateCheck:
    """A wanted verdict on an update (the oracle's request)."""

    tx: UpdateTx
    spec: Any
    seed: bytes

    @property
    def key(self) -> tuple[bytes, bytes]:
        return (self.tx.id, self.seed)


@dataclass(frozen=True)
class CloseCheck:
    """A wanted G_{r+1}: the round state it is computed from."""

    task_id: bytes
    spec: Any
    seed: bytes
    closed: tuple[Any, ...]  # [[height, updates], ...] of the closed rounds
    models: tuple[bytes, ...]
    updates: tuple[tuple[bytes, str, int], ...]

    @property
    def key(self) -> tuple[Any, ...]:
        # Everything G_{r+1} depends on: the round, G_r, and each update's
        # participant (the aggregation order) and sample count (its weight)
        # with its CID; two branches may hold the same CIDs under other keys.
        start = self.models[-1] if self.models else b""
        return (self.task_id, self.seed, len(self.models), start, self.updates)


def close_check(task_id: bytes, task: Mapping[str, Any], fed: Mapping[str, Any]) -> CloseCheck:
    return CloseCheck(
        task_id,
        task["spec"],
        bytes(task["seed"]),
        tuple(fed["closed"]),
        tuple(bytes(h) for h in fed["models"]),
        tuple((bytes(p), str(c), int(n)) for p, c, n in fed["updates"]),
    )


class FederatedVerifier:
    def __init__(
        self,
        inner: Verifier,
        store: DatasetStore,
        pool: JobPool,
        settings: TrainingSettings,
        cache_dir: Path,
    ) -> None:
        self.inner = inner
        self.store = store
        self._pool = pool
        self._settings = settings
        self._cache_dir = cache_dir
        self._updates: OrderedDict[tuple[bytes, bytes], str] = OrderedDict()
        #: close key -> (hash(G_{r+1}), the round's gains: () unless improvement)
        self._closes: OrderedDict[tuple[Any, ...], Close] = OrderedDict()
        self._wanted: dict[Any, UpdateCheck | CloseCheck] = {}
        self._inflight: dict[Any, asyncio.Future[Any]] = {}
        #: model hash -> canonical encoding / IPFS CID / holdout metric
        self.models: dict[bytes, bytes] = {}
        self.model_cids: dict[bytes, str] = {}
        self.metrics: dict[bytes, float | None] = {}
        self.on_new_model: Callable[[], None] = lambda: None

    # -- the oracle (sync, called by ChainState, the mempool and templates) ------------

    def verdict(self, tx: Any, task: dict[str, Any], audit: bool) -> str | None:
        got = self.peek(tx, task, audit)
        if got is None:
            if isinstance(tx, UpdateTx):
                want: UpdateCheck | CloseCheck = UpdateCheck(tx, task["spec"], bytes(task["seed"]))
            elif isinstance(tx, RoundCloseTx):
                want = close_check(tx.task_id, task, task["fed"])
            else:
                return self.inner.verdict(tx, task, audit)
            self._wanted[want.key] = want
        return got

    def peek(self, tx: Any, task: dict[str, Any], audit: bool) -> str | None:
        if isinstance(tx, UpdateTx):
            return self._updates.get((tx.id, bytes(task["seed"])))
        if isinstance(tx, RoundCloseTx):
            close = self._closes.get(close_check(tx.task_id, task, task["fed"]).key)
            if close is None:
                return None
            if close[0] != tx.model_hash:
                return "bad-round-hash"
            return "" if close[1] == tuple(tx.gains) else "bad-round-gains"
        return self.inner.peek(tx, task, audit)

    def expected_close(
        self, task_id: bytes, task: Mapping[str, Any], fed: Mapping[str, Any]
    ) -> Close | None:
        return self._closes.get(close_check(task_id, task, fed).key)

    # -- PendingVerdicts for the verification loop -----------------------------------

    @property
    def wanted(self) -> Mapping[Any, Any]:
        return {**self.inner.wanted, **self._wanted}

    def take_wanted(self) -> list[Any]:
        mine = list(self._wanted.values())
        self._wanted.clear()
        return [*self.inner.take_wanted(), *mine]

    async def resolve(self, reqs: Iterable[Any]) -> int:
        reqs = list(reqs)
        results = [r for r in reqs if isinstance(r, Request)]
        mine = [r for r in reqs if not isinstance(r, Request)]
        missing = await self.inner.resolve(results) if results else 0
        answers = await asyncio.gather(*(self.answer(r) for r in mine))
        return missing + sum(1 for a in answers if a is None)

    def want_again(self, reqs: Iterable[Any]) -> None:
        reqs = list(reqs)
        self.inner.want_again(r for r in reqs if isinstance(r, Request))
        for r in reqs:
            if isinstance(r, UpdateCheck | CloseCheck) and not self._known(r):
                self._wanted.setdefault(r.key, r)

    def artifact_unfetchable(self, result_id: bytes) -> bool:
        return self.inner.artifact_unfetchable(result_id)

    def _known(self, r: UpdateCheck | CloseCheck) -> bool:
        return r.key in (self._updates if isinstance(r, UpdateCheck) else self._closes)

    # -- resolving ---------------------------------------------------------------------

    async def check(self, req: Any, background: bool = False) -> Any:
        """A result's verdict from the wrapped verifier, or :meth:`answer`. The
        mempool keeps the oracle of its first caller, so every service that
        pools transactions must get this one."""
        if isinstance(req, Request):
            return await self.inner.check(req, background)
        return await self.answer(req)

    async def answer(self, req: UpdateCheck | CloseCheck) -> Any:
        """The answer (a reason for an update, a :data:`Close` for a close), None if
        data is missing.
        Concurrent askers share one computation."""
        if isinstance(req, UpdateCheck) and req.key in self._updates:
            return self._updates[req.key]
        if isinstance(req, CloseCheck) and req.key in self._closes:
            return self._closes[req.key]
        fut = self._inflight.get(req.key)
        if fut is None:
            fut = asyncio.ensure_future(self._compute(req))
            self._inflight[req.key] = fut
            fut.add_done_callback(lambda _f: self._inflight.pop(req.key, None))
        return await asyncio.shield(fut)

    async def _compute(self, req: UpdateCheck | CloseCheck) -> Any:
        try:
            if isinstance(req, UpdateCheck):
                return await self._check_update(req)
            return await self._aggregate(req)
        except (DatasetError, TrainingError, MissingDataError) as exc:
            log.info("federated check %s: data missing or job failed: %s", type(req).__name__, exc)
            return None

    async def data(self, spec: TaskSpec) -> FedData:
        path = await self.store.fetch(spec.dataset_cid, self._settings.max_dataset_bytes)
        return FedData(str(path), str(self._cache_dir), self._settings.max_dataset_bytes)

    async def score_data(self, spec: TaskSpec) -> FedData:
        """What scores the global models: the task's public validation CSV (fetched
        and parsed as datasets are), else its dataset's holdout."""
        fed = spec.federated
        if fed is None or not fed.validation:
            return await self.data(spec)
        path = await self.store.fetch(fed.validation, self._settings.max_dataset_bytes)
        return FedData(
            str(path), str(self._cache_dir), self._settings.max_dataset_bytes, validation=True
        )

    async def _bytes(self, cid: str) -> bytes:
        path = await self.store.fetch(cid, MAX_UPDATE_BYTES)
        return await asyncio.to_thread(path.read_bytes)

    async def _check_update(self, req: UpdateCheck) -> str:
        spec = TaskSpec.from_wire(req.spec)
        artifact = await self._bytes(req.tx.update_cid)
        # A private update cannot be re-derived: it is checked by rule only.
        private = spec.federated is not None and spec.federated.is_private
        job = FedCheckRequest(
            spec,
            req.tx.task_id,
            req.seed,
            req.tx.participant,
            req.tx.n_samples,
            artifact,
            None if private else await self.data(spec),
            base0=req.tx.base if req.tx.round == 0 else None,
        )
        reason: str = await self._pool.run(
            "fed_check", job, self._settings.max_job_seconds, Priority.BLOCK
        )
        self._remember(self._updates, req.key, reason)
        return reason

    async def _aggregate(self, req: CloseCheck) -> Close:
        """hash(G_{r+1}) and the round's gains for the round state of ``req``
        (computing any G before it that this node does not hold, e.g. after a
        restart)."""
        spec = TaskSpec.from_wire(req.spec)
        start: bytes | None = None
        todo: list[tuple[tuple[bytes, str, int], ...]] = [req.updates]
        if req.models:
            held = self.models.get(req.models[-1])
            if held is not None:
                start = held
            else:
                todo = [tuple((bytes(p), c, n) for p, c, n in ups) for _h, ups in req.closed] + todo
        # The hash needs no dataset; the metric is scored after it, best effort.
        # One job per round: consensus bounds one round's artifacts (P x size
        # <= 2^23 values, docs/federated.md §3), not R of them at once.
        out: list[tuple[bytes, bytes, float | None]] = []
        base = start  # G_r of the round being closed, once the loop is done
        for updates in todo:
            base = start
            arts = [(p, await self._bytes(cid), n) for p, cid, n in updates]
            job = FedAggregateRequest(spec, req.task_id, req.seed, start, [arts], None)
            got = await self._pool.run(
                "fed_aggregate", job, self._settings.max_job_seconds, Priority.BLOCK
            )
            out.extend(got)
            start = bytes(got[-1][1])
        fresh = [(d, enc) for d, enc, _m in out if d not in self.models]
        for digest, encoding in fresh:
            self.models[digest] = encoding
            self.metrics[digest] = None
        digest = out[-1][0]
        if digest not in self.model_cids:
            try:
                self.model_cids[digest] = await self.store.add_bytes(self.models[digest])
            except DatasetError as exc:
                log.warning("could not store a global model on IPFS: %s", exc)
        gains = await self._gains(spec, req, base)
        if fresh:
            # Before the close is known, so a closed round shows its metric; a
            # failed or timed-out score only leaves it None.
            await self._score(spec, req, fresh)
        close = (bytes(digest), gains)
        self._remember(self._closes, req.key, close)
        self.on_new_model()
        return close

    async def _gains(self, spec: TaskSpec, req: CloseCheck, base: bytes | None) -> tuple[int, ...]:
        """The round's gains (consensus, docs/federated.md §11.5): () unless the
        task rewards improvement. A validation CSV that cannot be fetched, or a
        job that fails or times out, is missing data (raised: the close waits);
        one that does not parse is the verdict () inside the job."""
        fed = spec.federated
        if fed is None or not fed.by_improvement or not req.updates:
            return ()
        arts = [(p, await self._bytes(cid), n) for p, cid, n in req.updates]
        data = await self.score_data(spec)
        job = FedGainsRequest(spec, req.task_id, req.seed, base, arts, data)
        gains: list[int] = await self._pool.run(
            "fed_gains", job, self._settings.max_job_seconds, Priority.BLOCK
        )
        return tuple(int(g) for g in gains)

    async def _score(
        self, spec: TaskSpec, req: CloseCheck, fresh: list[tuple[bytes, bytes]]
    ) -> None:
        """Each new global model's metric (the learning curve); no verdict
        depends on it, so a validation set that is missing, unparsable or too
        slow to score leaves the metric None."""
        try:
            data = await self.score_data(spec)
            job = FedScoreRequest(spec, req.task_id, req.seed, [enc for _d, enc in fresh], data)
            scores = await self._pool.run(
                "fed_score", job, self._settings.max_job_seconds, Priority.BLOCK
            )
        except (DatasetError, TrainingError, MissingDataError) as exc:
            log.info("federated score of %s: %s", req.task_id.hex()[:16], exc)
            return
        for (digest, _enc), metric in zip(fresh, scores, strict=True):
            self.metrics[digest] = metric

    async def global_model(
        self, task_id: bytes, task: Mapping[str, Any], fed: Mapping[str, Any]
    ) -> bytes | None:
        """The canonical encoding of G_r, the model round ``fed['round']`` starts from."""
        if not fed["models"]:
            # G_0 in a worker too (a round without updates keeps it): the node
            # process itself does not load numpy.
            spec = TaskSpec.from_wire(task["spec"])
            job = FedAggregateRequest(spec, task_id, bytes(task["seed"]), None, [[]], None)
            [(_digest, encoding, _metric)] = await self._pool.run(
                "fed_aggregate", job, self._settings.max_job_seconds, Priority.TRAIN
            )
            return bytes(encoding)
        last = bytes(fed["models"][-1])
        if last not in self.models:
            closed = list(fed["closed"])
            prior = {
                "closed": closed[:-1],
                "models": fed["models"][:-1],
                "updates": closed[-1][1],
            }
            if await self.answer(close_check(task_id, task, prior)) is None:
                return None
        return self.models.get(last)

    @staticmethod
    def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > CACHE_MAX:
            cache.popitem(last=False)
