"""TrainingService: trains the rounds of open tasks this node accepts by
policy, and submits and relays its own results."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

from p2pml.chain.state import ChainUpdate
from p2pml.chain.tasks import slot_key, task_key
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.types import Block, ResultTx, TaskTx
from p2pml.crypto import Identity
from p2pml.errors import DecodeError, TrainingError, ValidationError
from p2pml.node.ports import ChainAccess, ResultAdmission, Spawn, TrainingBackend, TxRelay

log = logging.getLogger(__name__)


class TrainingService:
    def __init__(
        self,
        identity: Identity,
        chain: ChainAccess,
        trainer: TrainingBackend,
        results: ResultAdmission,
        relay: TxRelay,
        spawn: Spawn,
        enabled: bool,
    ) -> None:
        self._identity = identity
        self._chain = chain
        self.trainer = trainer
        self._results = results
        self._relay = relay
        self._spawn = spawn
        self.enabled = enabled
        #: task id -> failures this node had with it (round, reason, detail, time)
        self.failures: dict[bytes, list[dict[str, Any]]] = defaultdict(list)
        # (task, seed, round) trained or training: a reorg that re-mines a task
        # gives it a new seed, and new partitions to train.
        self._claimed: set[tuple[bytes, bytes, int]] = set()
        self.jobs_done = 0
        self.jobs_failed = 0
        if enabled:
            chain.on_tip_changed(self._tip_changed)

    @property
    def running_jobs(self) -> int:
        return self.trainer.running_jobs

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
        ok = self.trainer.accepts(spec)
        if ok is not True and ok != "busy":
            self.failures[task_id].append({"round": None, "reason": ok, "detail": "policy"})
            return
        me = self._identity.public_key
        seed = bytes(rec["seed"])
        for rnd in range(spec.rounds):
            if (task_id, seed, rnd) in self._claimed:
                continue
            if self._chain.chain.state.get(slot_key(task_id, me, rnd)):
                continue
            self._claimed.add((task_id, seed, rnd))
            self._spawn(self._train(task_id, spec, seed, rnd), "train")

    def _fail(self, task_id: bytes, rnd: int, reason: str, detail: str) -> None:
        self.failures[task_id].append(
            {"round": rnd, "reason": reason, "detail": detail, "time": time.time()}
        )

    async def _train(self, task_id: bytes, spec: TaskSpec, seed: bytes, rnd: int) -> None:
        me = self._identity
        try:
            out = await self.trainer.train_round(spec, task_id, seed, me.public_key, rnd)
        except TrainingError as exc:
            self.jobs_failed += 1
            self._fail(task_id, rnd, exc.reason, exc.detail)
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
        ).signed_by(me)
        rec = self._chain.chain.state.get(task_key(task_id))
        if rec is None or not rec["open"] or bytes(rec["seed"]) != seed:
            log.info(
                "task %s closed or re-mined before our round %d was done", task_id.hex()[:16], rnd
            )
            return
        try:
            await self._results.submit_result(tx, "self")
        except ValidationError as exc:
            self._fail(task_id, rnd, exc.reason, exc.detail)
            log.warning("our own result for %s was refused: %s", task_id.hex()[:16], exc)
            return
        await self._relay.tx(tx)
