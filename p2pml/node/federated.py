"""Federated tasks on this node (docs/federated.md, "On the chain").

:class:`FederatedVerifier` is the verdict oracle the chain asks about updates
(tag 9) and round closes (tag 10); it wraps the result
:class:`~p2pml.node.verifier.Verifier` and passes everything else through.
Unknown answers are recorded as wanted (the block waits, "pending data") and
resolved by fetching the artifacts and running the federated core in the
worker pool (``p2pml.ml.fedjobs``), never on the event loop. Every global
model it computes is kept by hash, added to IPFS, and scored on the task's
holdout for the learning curve.

:class:`FederatedService` takes part in rounds: when round r of a federated
task is open and has room, it trains from G_r on this node's chain-seeded
shard, adds the update to IPFS and publishes the UpdateTx; it also gives the
miner the round-close transactions that are due.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pml.chain.federated_rounds import RoundCloseHandler, fed_key, round_due
from p2pml.chain.index import ChainUpdate
from p2pml.chain.ledger import BlockContext, StateView
from p2pml.chain.tasks import task_key
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.txrules import handler_for
from p2pml.chain.types import PoolTx, RoundCloseTx, Transaction, UpdateTx
from p2pml.config import TrainingSettings
from p2pml.crypto import Identity
from p2pml.errors import DatasetError, MissingDataError, P2PMLError, TrainingError, ValidationError
from p2pml.ipfs.store import DatasetStore
from p2pml.ml.fedjobs import (
    FedAggregateRequest,
    FedCheckRequest,
    FedData,
    FedDescribeRequest,
    FedTrainRequest,
)
from p2pml.ml.jobpool import JobPool
from p2pml.ml.scheduling import Priority
from p2pml.node.mempool import Mempool
from p2pml.node.ports import ChainAccess, Spawn, TxRelay
from p2pml.node.verifier import Request, Verifier

log = logging.getLogger(__name__)

MAX_UPDATE_BYTES = 64 * 1024 * 1024
CACHE_MAX = 10_000
FED_PREFIX = b"fed:"
#: What POST /tasks fills in when a federated body leaves it out.
FEDERATED_DEFAULTS: dict[str, Any] = {
    "aggregation": "fedavg",
    "local_epochs": 1,
    "participants": 5,
    "round_blocks": 10,
}


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
        start = self.models[-1] if self.models else b""
        return (self.task_id, self.seed, start, tuple(u[1] for u in self.updates))


def _close_check(task_id: bytes, task: Mapping[str, Any], fed: Mapping[str, Any]) -> CloseCheck:
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
        self._closes: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
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
                want = _close_check(tx.task_id, task, task["fed"])
            else:
                return self.inner.verdict(tx, task, audit)
            self._wanted[want.key] = want
        return got

    def peek(self, tx: Any, task: dict[str, Any], audit: bool) -> str | None:
        if isinstance(tx, UpdateTx):
            return self._updates.get((tx.id, bytes(task["seed"])))
        if isinstance(tx, RoundCloseTx):
            digest = self._closes.get(_close_check(tx.task_id, task, task["fed"]).key)
            if digest is None:
                return None
            return "" if digest == tx.model_hash else "bad-round-hash"
        return self.inner.peek(tx, task, audit)

    def expected_close(
        self, task_id: bytes, task: Mapping[str, Any], fed: Mapping[str, Any]
    ) -> bytes | None:
        return self._closes.get(_close_check(task_id, task, fed).key)

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
        """The answer (a reason for an update, a hash for a close), None if data is missing.
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

    async def _bytes(self, cid: str) -> bytes:
        path = await self.store.fetch(cid, MAX_UPDATE_BYTES)
        return await asyncio.to_thread(path.read_bytes)

    async def _check_update(self, req: UpdateCheck) -> str:
        spec = TaskSpec.from_wire(req.spec)
        artifact = await self._bytes(req.tx.update_cid)
        job = FedCheckRequest(
            spec,
            req.tx.task_id,
            req.seed,
            req.tx.participant,
            req.tx.n_samples,
            artifact,
            await self.data(spec),
        )
        reason: str = await self._pool.run(
            "fed_check", job, self._settings.max_job_seconds, Priority.BLOCK
        )
        self._remember(self._updates, req.key, reason)
        return reason

    async def _aggregate(self, req: CloseCheck) -> bytes:
        """hash(G_{r+1}) for the round state of ``req`` (computing any G before it
        that this node does not hold, e.g. after a restart)."""
        spec = TaskSpec.from_wire(req.spec)
        start: bytes | None = None
        todo: list[tuple[tuple[bytes, str, int], ...]] = [req.updates]
        if req.models:
            held = self.models.get(req.models[-1])
            if held is not None:
                start = held
            else:
                todo = [tuple((bytes(p), c, n) for p, c, n in ups) for _h, ups in req.closed] + todo
        rounds = [[(p, await self._bytes(cid), n) for p, cid, n in updates] for updates in todo]
        try:
            data: FedData | None = await self.data(spec)
        except DatasetError:
            data = None  # the aggregate needs no dataset; only the metric does
        job = FedAggregateRequest(spec, req.task_id, req.seed, start, rounds, data)
        out = await self._pool.run(
            "fed_aggregate", job, self._settings.max_job_seconds, Priority.BLOCK
        )
        for digest, encoding, metric in out:
            if digest not in self.models:
                self.models[digest] = encoding
                self.metrics[digest] = metric
        digest = out[-1][0]
        if digest not in self.model_cids:
            try:
                self.model_cids[digest] = await self.store.add_bytes(self.models[digest])
            except DatasetError as exc:
                log.warning("could not store a global model on IPFS: %s", exc)
        self._remember(self._closes, req.key, digest)
        self.on_new_model()
        return bytes(digest)

    async def global_model(
        self, task_id: bytes, task: Mapping[str, Any], fed: Mapping[str, Any]
    ) -> bytes | None:
        """The canonical encoding of G_r, the model round ``fed['round']`` starts from."""
        if not fed["models"]:
            from p2pml.federated import rounds
            from p2pml.federated.encoding import encode

            spec = task["spec"]
            return encode(rounds.layout_of(spec), rounds.initial(spec, bytes(task["seed"])))
        last = bytes(fed["models"][-1])
        if last not in self.models:
            closed = list(fed["closed"])
            prior = {
                "closed": closed[:-1],
                "models": fed["models"][:-1],
                "updates": closed[-1][1],
            }
            if await self.answer(_close_check(task_id, task, prior)) is None:
                return None
        return self.models.get(last)

    @staticmethod
    def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > CACHE_MAX:
            cache.popitem(last=False)


class FederatedService:
    def __init__(
        self,
        identity: Identity,
        chain: ChainAccess,
        mempool: Mempool,
        verifier: FederatedVerifier,
        relay: TxRelay,
        pool: JobPool,
        settings: TrainingSettings,
        spawn: Spawn,
        on_pool_change: Callable[[], None],
    ) -> None:
        self._identity = identity
        self._chain = chain
        self._mempool = mempool
        self.verifier = verifier
        self._relay = relay
        self._pool = pool
        self._settings = settings
        self._spawn = spawn
        self._on_pool_change = on_pool_change
        self.enabled = settings.enabled
        self.tasks: set[bytes] = set()  # open federated tasks
        self._claimed: set[tuple[bytes, bytes, int]] = set()
        self._computing: set[Any] = set()
        #: task id -> what happened to this node's updates and to peers' gossiped ones
        self.events: dict[bytes, list[dict[str, Any]]] = defaultdict(list)
        verifier.on_new_model = on_pool_change
        chain.on_tip_changed(self._tip_changed)

    def start(self) -> None:
        """At start: every open federated task in the chain state."""
        for key in [k for k in self._chain.chain.state if k.startswith(FED_PREFIX)]:
            self.tasks.add(key[len(FED_PREFIX) :])
        self._advance()

    def _tip_changed(self, update: ChainUpdate) -> None:
        for key in update.state_changes:
            if key.startswith(FED_PREFIX):
                self.tasks.add(key[len(FED_PREFIX) :])
        self._advance()

    def _advance(self) -> None:
        state = self._chain.chain.state
        for task_id in list(self.tasks):
            task, fed = state.get(task_key(task_id)), state.get(fed_key(task_id))
            if task is None or fed is None or not task["open"]:
                self.tasks.discard(task_id)
                continue
            if self.enabled:
                self._maybe_train(task_id, task, fed)
            # Due at the next height: compute G_{r+1} now, so the next template
            # (ours or a peer's block) finds it.
            height = self._chain.chain.height + 1
            if (
                fed["round"] < task["spec"]["rounds"]
                and round_due(fed, task["spec"], height)
                and self.verifier.expected_close(task_id, task, fed) is None
            ):
                self._compute_close(task_id, task, fed)

    def _maybe_train(self, task_id: bytes, task: dict[str, Any], fed: dict[str, Any]) -> None:
        me = self._identity.public_key
        seed, rnd = bytes(task["seed"]), int(fed["round"])
        f = task["spec"]["federated"]
        if (task_id, seed, rnd) in self._claimed or rnd >= task["spec"]["rounds"]:
            return
        if (
            any(bytes(u[0]) == me for u in fed["updates"])
            or len(fed["updates"]) >= f["participants"]
        ):
            return
        if self._chain.chain.height + 1 >= fed["opened_at"] + f["round_blocks"]:
            return
        self._claimed.add((task_id, seed, rnd))
        self._spawn(self._train(task_id, seed, rnd), "federated-train")

    async def _train(self, task_id: bytes, seed: bytes, rnd: int) -> None:
        state = self._chain.chain.state
        task, fed = state.get(task_key(task_id)), state.get(fed_key(task_id))
        if task is None or fed is None or fed["round"] != rnd or bytes(task["seed"]) != seed:
            return
        me = self._identity
        t0 = time.monotonic()
        try:
            spec = TaskSpec.from_wire(task["spec"])
            start = await self.verifier.global_model(task_id, task, fed)
            if start is None:
                raise TrainingError("global-model-unavailable", f"G_{rnd} could not be computed")
            data = await self.verifier.data(spec)
            job = FedTrainRequest(spec, task_id, seed, me.public_key, rnd, start, data)
            artifact, n = await self._pool.run(
                "fed_train", job, self._settings.max_job_seconds, Priority.TRAIN
            )
            cid = await self.verifier.store.add_bytes(artifact)
            tx = UpdateTx(
                task_id=task_id,
                seed=seed,
                round=rnd,
                participant=me.public_key,
                update_cid=cid,
                n_samples=n,
                fee=self._chain.params.min_result_fee,
            ).signed_by(me, self._chain.params.genesis_hash)
            await self.submit(tx, "self")
        except (P2PMLError, ValidationError) as exc:
            reason = getattr(exc, "reason", type(exc).__name__)
            self._note(task_id, rnd, me.public_key, "refused", reason, str(exc))
            log.warning("federated round %d of %s: %s", rnd, task_id.hex()[:16], exc)
            return
        self._note(task_id, rnd, me.public_key, "sent", "", cid)
        log.info(
            "federated round %d of %s: update of %d rows in %.1fs -> %s",
            rnd,
            task_id.hex()[:16],
            n,
            time.monotonic() - t0,
            cid,
        )
        await self._relay.tx(tx)

    def _note(
        self, task_id: bytes, rnd: int, who: bytes, what: str, reason: str, detail: str
    ) -> None:
        self.events[task_id].append(
            {
                "round": rnd,
                "participant": who.hex(),
                "event": what,
                "reason": reason,
                "detail": detail,
                "time": time.time(),
            }
        )

    async def submit(self, tx: UpdateTx, source: str) -> None:
        """Pool an update once its artifact passed the check; ValidationError with
        the reason if it may not enter. A gossiped one is checked first (the
        artifact fetched), then pooled and relayed by us."""
        task = self._chain.chain.state.get(task_key(tx.task_id))
        if task is not None and "federated" in task["spec"]:
            verdict = await self.verifier.answer(UpdateCheck(tx, task["spec"], bytes(task["seed"])))
            if verdict:
                self._note(tx.task_id, tx.round, tx.participant, "rejected", verdict, source)
        self._mempool.admit(tx, self._chain.chain, self.verifier.peek)
        log.info(
            "update %s of round %d from %s entered the mempool", tx.id.hex()[:16], tx.round, source
        )
        self._on_pool_change()
        if source != "self":
            await self._relay.tx(tx)

    # -- round closes for block templates ----------------------------------------------

    def closes(self, selected: Iterable[PoolTx]) -> list[Transaction]:
        """Round-close transactions due in a block on the tip holding ``selected``
        (applied in order first): those whose G_{r+1} this node has computed.
        Missing ones are computed in the background; the miner is told when done."""
        if not self.tasks:
            return []
        chain = self._chain.chain
        view = StateView(chain.state)
        ctx = BlockContext(
            self._chain.params, chain.height + 1, bytes(32), 0, verdict=self.verifier.peek
        )
        for tx in selected:
            trial = view.child()
            try:
                handler_for(tx).apply(tx, trial, ctx)
            except ValidationError:
                continue
            view.merge(trial)
        out: list[Transaction] = []
        for task_id in sorted(self.tasks):
            task, fed = view.get(task_key(task_id)), view.get(fed_key(task_id))
            if task is None or fed is None or not task["open"]:
                continue
            if fed["round"] >= task["spec"]["rounds"] or not round_due(
                fed, task["spec"], ctx.height
            ):
                continue
            digest = self.verifier.expected_close(task_id, task, fed)
            if digest is None:
                self._compute_close(task_id, task, fed)
                continue
            close = RoundCloseTx(task_id, int(fed["round"]), digest)
            trial = view.child()
            try:
                RoundCloseHandler().apply(close, trial, ctx)
            except ValidationError as exc:
                log.debug("round close of %s not possible: %s", task_id.hex()[:16], exc)
                continue
            view.merge(trial)
            out.append(close)
        return out

    def _compute_close(
        self, task_id: bytes, task: Mapping[str, Any], fed: Mapping[str, Any]
    ) -> None:
        req = _close_check(task_id, task, fed)
        if req.key in self._computing:
            return
        self._computing.add(req.key)

        async def run() -> None:
            try:
                await self.verifier.answer(req)
            finally:
                self._computing.discard(req.key)

        self._spawn(run(), "federated-aggregate")

    # -- the API -----------------------------------------------------------------------

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """A POST /tasks body with its federated spec filled in: defaults, and the
        features and class list read from the dataset (which fix the layout)."""
        fed = body.get("federated")
        if not isinstance(fed, dict):
            return body
        need_features, need_classes = not body.get("features"), "classes" not in fed
        fed = {**FEDERATED_DEFAULTS, **fed}
        if need_features or need_classes:
            probe = TaskSpec(
                dataset_cid=str(body.get("dataset_cid", "")),
                target=str(body.get("target", "")),
                model=str(body.get("model", "")),
                kind=str(body.get("kind", "")),
                metric=str(body.get("metric", "")),
                features=tuple(body.get("features") or ()),
            )
            try:
                features, classes = await self._pool.run(
                    "fed_describe",
                    FedDescribeRequest(probe, await self.verifier.data(probe)),
                    self._settings.max_job_seconds,
                    Priority.TRAIN,
                )
            except (DatasetError, TrainingError) as exc:
                raise ValidationError("bad-task-cid", f"cannot read the dataset: {exc}") from None
            if need_features:
                body = {**body, "features": features}
            if need_classes:
                fed["classes"] = classes
        return {**body, "federated": fed}

    # -- views for the API -------------------------------------------------------------

    def describe(self, task_id: bytes) -> dict[str, Any] | None:
        """Rounds (model hash, CID, holdout metric, updates), and this node's events."""
        state = self._chain.chain.state
        fed = state.get(fed_key(task_id))
        if fed is None:
            return None
        rounds = []
        for i, ((height, updates), digest) in enumerate(
            zip(fed["closed"], fed["models"], strict=True)
        ):
            h = bytes(digest)
            rounds.append(
                {
                    "round": i,
                    "closed_at": height,
                    "model_hash": h.hex(),
                    "model_cid": self.verifier.model_cids.get(h),
                    "metric": self.verifier.metrics.get(h),
                    "updates": [
                        {"participant": bytes(p).hex(), "update_cid": c, "n_samples": n}
                        for p, c, n in updates
                    ],
                }
            )
        final = bytes(fed["models"][-1]) if fed["models"] else None
        task = state.get(task_key(task_id))
        ready = task is not None and self.verifier.expected_close(task_id, task, fed) is not None
        return {
            # This node holds G_{r+1} of the round state at the tip (a close can be mined).
            "next_model_ready": ready,
            "round": fed["round"],
            "opened_at": fed["opened_at"],
            "model_hash": final.hex() if final else None,
            "model_cid": self.verifier.model_cids.get(final) if final else None,
            "pending_updates": [
                {"participant": bytes(p).hex(), "update_cid": c, "n_samples": n}
                for p, c, n in fed["updates"]
            ],
            "rounds": rounds,
            "events": list(self.events.get(task_id, [])),
        }

    def final_model(self, task_id: bytes) -> str | None:
        """The IPFS CID of the last committed global model, if this node stored it."""
        fed = self._chain.chain.state.get(fed_key(task_id))
        if fed is None or not fed["models"]:
            return None
        return self.verifier.model_cids.get(bytes(fed["models"][-1]))
