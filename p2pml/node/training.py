"""TrainingService: trains the rounds of open tasks this node accepts by
policy, and submits and relays its own results.

Rounds wait in a bounded queue ordered by what they pay (bounty plus result
reward, per round), not by arrival: a task asking for many rounds for little
cannot hold the node's workers. At most ``max_queued_rounds`` rounds wait
or run, at most ``max_rounds_per_publisher`` of them from one publisher;
past the cap a better-paying round evicts the worst-paying waiting one and
others are refused ("training-queue-full"). Refused and evicted rounds are
not lost: their tasks wait in a bounded backlog and are offered again each
time a round finishes. ``max_concurrent_jobs`` rounds run at once.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import Counter, OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Any

from p2pml.chain.index import ChainUpdate
from p2pml.chain.tasks import slot_key, task_key
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.types import Block, ResultTx, TaskTx
from p2pml.config import TrainingSettings
from p2pml.crypto import Identity
from p2pml.errors import DecodeError, TrainingError, ValidationError
from p2pml.node.ports import ChainAccess, ResultAdmission, Spawn, TrainingBackend, TxRelay

log = logging.getLogger(__name__)

MAX_BACKLOG_TASKS = 1_024  # tasks with rounds refused for room, offered again


@dataclass(order=True)
class _Round:
    sort_key: tuple[float, int]  # (-pay per round, arrival): smallest runs first
    task_id: bytes = field(compare=False)
    spec: TaskSpec = field(compare=False)
    seed: bytes = field(compare=False)
    rnd: int = field(compare=False)
    publisher: bytes = field(compare=False)

    @property
    def claim(self) -> tuple[bytes, bytes, int]:
        return (self.task_id, self.seed, self.rnd)


class TrainingService:
    def __init__(
        self,
        identity: Identity,
        chain: ChainAccess,
        trainer: TrainingBackend,
        results: ResultAdmission,
        relay: TxRelay,
        spawn: Spawn,
        settings: TrainingSettings,
    ) -> None:
        self._identity = identity
        self._chain = chain
        self.trainer = trainer
        self._results = results
        self._relay = relay
        self._spawn = spawn
        self._settings = settings
        self.enabled = settings.enabled
        #: task id -> failures this node had with it (round, reason, detail, time)
        self.failures: dict[bytes, list[dict[str, Any]]] = defaultdict(list)
        # (task, seed, round) queued, training or trained: a reorg that
        # re-mines a task gives it a new seed, and new partitions to train.
        self._claimed: set[tuple[bytes, bytes, int]] = set()
        self._waiting: list[_Round] = []  # a heap
        self._active = 0
        self._per_publisher: Counter[bytes] = Counter()
        self._seq = 0
        # Tasks with rounds that found no room, oldest first; and which
        # (task, seed, round) refusals were recorded (once each).
        self._backlog: OrderedDict[bytes, None] = OrderedDict()
        self._refused: set[tuple[bytes, bytes, int]] = set()
        self.jobs_done = 0
        self.jobs_failed = 0
        if settings.enabled:
            chain.on_tip_changed(self._tip_changed)

    @property
    def running_jobs(self) -> int:
        return self.trainer.running_jobs

    @property
    def queued_rounds(self) -> int:
        return len(self._waiting)

    def _tip_changed(self, update: ChainUpdate) -> None:
        chain = self._chain.chain
        for h, _ in update.connected:
            block = chain.get_block(h)
            if block is not None:
                self._schedule_block(block)

    def schedule_open_tasks(self) -> None:
        """At start: train open tasks we have not reported on yet."""
        if not self.enabled:
            return
        for key, rec in list(self._chain.chain.state.items()):
            if key.startswith(b"task:") and rec["open"]:
                self._schedule_task(key[5:], rec)

    def _schedule_block(self, block: Block) -> None:
        state = self._chain.chain.state
        for tx in block.txs[1:]:
            if isinstance(tx, TaskTx):
                rec = state.get(task_key(tx.id))
                if rec is not None:
                    self._schedule_task(tx.id, rec)

    def _schedule_task(self, task_id: bytes, rec: dict[str, Any]) -> None:
        try:
            spec = TaskSpec.from_wire(rec["spec"])
        except DecodeError:
            return
        if spec.federated is not None:
            return  # trained in rounds by the FederatedService
        ok = self.trainer.accepts(spec)
        if ok is not True and ok != "busy":
            self.failures[task_id].append({"round": None, "reason": ok, "detail": "policy"})
            return
        me = self._identity.public_key
        seed = bytes(rec["seed"])
        pay = (rec["bounty"] + rec["result_reward"] * rec["max_results"]) / spec.rounds
        for rnd in range(spec.rounds):
            if (task_id, seed, rnd) in self._claimed:
                continue
            if self._chain.chain.state.get(slot_key(task_id, me, rnd)):
                continue
            self._seq += 1
            r = _Round((-pay, self._seq), task_id, spec, seed, rnd, bytes(rec["publisher"]))
            self._enqueue(r)
        self._dispatch()

    def _enqueue(self, r: _Round) -> None:
        s = self._settings
        if self._per_publisher[r.publisher] >= s.max_rounds_per_publisher:
            self._refuse(r, "training-queue-full", "this publisher's share of the queue is full")
            return
        if len(self._waiting) + self._active >= s.max_queued_rounds:
            worst = max(self._waiting, default=None)
            if worst is None or not r.sort_key < worst.sort_key:
                self._refuse(r, "training-queue-full", f"{s.max_queued_rounds} rounds queued")
                return
            self._waiting.remove(worst)
            heapq.heapify(self._waiting)
            self._release(worst)
            self._claimed.discard(worst.claim)
            self._refuse(worst, "training-evicted", "a better-paying round took its place")
        self._claimed.add(r.claim)
        self._per_publisher[r.publisher] += 1
        heapq.heappush(self._waiting, r)

    def _refuse(self, r: _Round, reason: str, detail: str) -> None:
        """No room now: note it once, and offer the task again later."""
        if r.claim not in self._refused:
            self._refused.add(r.claim)
            self._fail(r, reason, detail)
        self._backlog[r.task_id] = None
        self._backlog.move_to_end(r.task_id)
        while len(self._backlog) > MAX_BACKLOG_TASKS:
            self._backlog.popitem(last=False)

    def _retry_backlog(self) -> None:
        """A slot freed: offer the backlog's tasks again (still open ones)."""
        state = self._chain.chain.state
        for task_id in list(self._backlog):
            if len(self._waiting) + self._active >= self._settings.max_queued_rounds:
                return
            del self._backlog[task_id]
            rec = state.get(task_key(task_id))
            if rec is not None and rec["open"]:
                self._schedule_task(task_id, rec)

    def _release(self, r: _Round) -> None:
        self._per_publisher[r.publisher] -= 1
        if self._per_publisher[r.publisher] <= 0:
            del self._per_publisher[r.publisher]

    def _dispatch(self) -> None:
        while self._waiting and self._active < self._settings.max_concurrent_jobs:
            r = heapq.heappop(self._waiting)
            rec = self._chain.chain.state.get(task_key(r.task_id))
            if rec is None or not rec["open"] or bytes(rec["seed"]) != r.seed:
                self._release(r)  # closed or re-mined while it waited
                continue
            task = self._spawn(self._run(r), "train")
            if task is None:  # the node is stopping
                self._release(r)
                return
            self._active += 1

    async def _run(self, r: _Round) -> None:
        try:
            await self._train(r)
        finally:
            self._active -= 1
            self._release(r)
            self._dispatch()
            self._retry_backlog()

    def _fail(self, r: _Round, reason: str, detail: str) -> None:
        self.failures[r.task_id].append(
            {"round": r.rnd, "reason": reason, "detail": detail, "time": time.time()}
        )

    async def _train(self, r: _Round) -> None:
        me = self._identity
        task_id, seed, rnd = r.task_id, r.seed, r.rnd
        try:
            out = await self.trainer.train_round(r.spec, task_id, seed, me.public_key, rnd)
        except TrainingError as exc:
            self.jobs_failed += 1
            self._fail(r, exc.reason, exc.detail)
            log.warning("training task %s round %d failed: %s", task_id.hex()[:16], rnd, exc)
            return
        self.jobs_done += 1
        tx = ResultTx(
            task_id=task_id,
            seed=seed,
            round=rnd,
            trainer=me.public_key,
            metric=out.metric,
            model_cid=out.model_cid,
            train_rows=out.train_rows,
            train_ms=out.train_ms,
            fee=self._chain.params.min_result_fee,
        ).signed_by(me, self._chain.params.genesis_hash)
        rec = self._chain.chain.state.get(task_key(task_id))
        if rec is None or not rec["open"] or bytes(rec["seed"]) != seed:
            log.info(
                "task %s closed or re-mined before our round %d was done", task_id.hex()[:16], rnd
            )
            return
        try:
            await self._results.submit_result(tx, "self")
        except ValidationError as exc:
            self._fail(r, exc.reason, exc.detail)
            log.warning("our own result for %s was refused: %s", task_id.hex()[:16], exc)
            return
        await self._relay.tx(tx)
