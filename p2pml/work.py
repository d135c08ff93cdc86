"""TaskService: tasks and results on this node.

It owns the mempool, the result verifier and this node's training jobs:
accepting tasks and results (from the API, gossip or our own trainer),
training the rounds of open tasks this node accepts by policy, and the
views of tasks and results the admin API shows.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from p2pml.chain.state import ChainUpdate
from p2pml.chain.tasks import ResultTx, TaskTx, result_key, task_key
from p2pml.chain.types import Block
from p2pml.crypto import Identity
from p2pml.errors import DecodeError, MissingDataError, TrainingError, ValidationError
from p2pml.mempool import Mempool, PoolTx
from p2pml.ml.spec import TaskSpec
from p2pml.ml.trainer import Trainer
from p2pml.verifier import Request, Verifier

if TYPE_CHECKING:
    from p2pml.chainmgr import ChainManager

log = logging.getLogger("p2pml.tasks")

Publisher = Callable[[str, PoolTx], Awaitable[None]]
Spawner = Callable[[Awaitable[None], str], None]


async def _no_publish(_kind: str, _tx: PoolTx) -> None:
    return None


class TaskService:
    def __init__(
        self,
        identity: Identity,
        chain_mgr: ChainManager,
        mempool: Mempool,
        verifier: Verifier,
        trainer: Trainer,
        training_enabled: bool,
    ) -> None:
        self.identity = identity
        self.chain_mgr = chain_mgr
        self.mempool = mempool
        self.verifier = verifier
        self.trainer = trainer
        self.training_enabled = training_enabled
        self.publish: Publisher = _no_publish
        self.on_mempool_change: Callable[[], None] = lambda: None
        self.spawn: Spawner = lambda _coro, _name: None
        self.failures: dict[bytes, list[dict[str, Any]]] = defaultdict(list)
        # (task, seed, round) trained or training: a reorg that re-mines a task
        # gives it a new seed, and new partitions to train.
        self._claimed: set[tuple[bytes, bytes, int]] = set()
        self.jobs_done = 0
        self.jobs_failed = 0

    @property
    def chain(self) -> Any:
        return self.chain_mgr.chain

    # -- submissions -------------------------------------------------------------------

    async def submit_task(self, tx: TaskTx, source: str) -> None:
        """Pool a task (ValidationError with the reason if it may not enter)."""
        self.mempool.check(tx, self.chain, self.verifier.peek)
        self.mempool.add(tx)
        log.info("task %s from %s entered the mempool", tx.id.hex()[:16], source)
        self.on_mempool_change()

    async def submit_result(self, tx: ResultTx, source: str, verify: bool = True) -> None:
        """Verify (with audit) and pool a result; ValidationError if false.

        MissingDataError means the model or dataset cannot be fetched now,
        or (``verify=False``) that the result still needs re-running.
        """
        try:
            self.mempool.check(tx, self.chain, self.verifier.peek)
        except MissingDataError:
            if not verify:
                raise
            task = self.chain.state.get(task_key(tx.task_id))
            assert task is not None  # the handler checks the task before asking
            verdict = await self.verifier.check(Request(tx, task["spec"], task["seed"], True))
            if verdict is None:
                raise
            if verdict:
                raise ValidationError(verdict, "result failed verification") from None
            self.mempool.check(tx, self.chain, self.verifier.peek)
        self.mempool.add(tx)
        log.info(
            "result %s for task %s from %s entered the mempool",
            tx.id.hex()[:16],
            tx.task_id.hex()[:16],
            source,
        )
        self.on_mempool_change()

    def make_task(self, body: dict[str, Any]) -> TaskTx:
        """A task signed with the node's key from an API body (DecodeError if malformed)."""
        spec_fields = {
            k: body[k]
            for k in (
                "dataset_cid",
                "target",
                "model",
                "kind",
                "metric",
                "params",
                "features",
                "format",
                "holdout_fraction",
                "partition_fraction",
                "rounds",
            )
            if k in body
        }
        for key in ("dataset_cid", "target", "model", "kind", "metric"):
            if key not in spec_fields:
                raise DecodeError(f"{key} is required")
        if isinstance(spec_fields.get("params"), dict):
            spec_fields["params"] = sorted(spec_fields["params"].items())
        known = set(spec_fields) | {"bounty", "fee", "deadline", "result_reward", "max_results"}
        unknown = sorted(set(body) - known)
        if unknown:
            raise DecodeError(f"unknown field {unknown[0]!r}")
        wire = TaskSpec(
            dataset_cid="x", target="y", model="ridge", kind="regression", metric="r2"
        ).to_wire()
        for k, v in spec_fields.items():
            wire[k] = v
        for k in ("holdout_fraction", "partition_fraction"):
            if type(wire[k]) is int:
                wire[k] = float(wire[k])
        if isinstance(wire.get("features"), tuple):
            wire["features"] = list(wire["features"])
        spec = TaskSpec.from_wire(wire)
        spec.validate()  # ValidationError names the rule (bad-task-*)

        def num(name: str, default: int, hi: int = 2**63 - 1) -> int:
            v = body.get(name, default)
            if type(v) is not int or not 0 <= v <= hi:
                raise DecodeError(f"{name} must be an integer in [0, {hi}]")
            return v

        return TaskTx(
            spec=spec,
            bounty=num("bounty", 0),
            fee=num("fee", self.chain_mgr.params.min_task_fee),
            deadline=num("deadline", 20, hi=2**32 - 1),
            result_reward=num("result_reward", 0),
            max_results=num("max_results", 3 * spec.rounds, hi=2**32 - 1),
            publisher=self.identity.public_key,
            nonce=secrets.randbits(63),
        ).signed_by(self.identity)

    # -- tip changes and training -------------------------------------------------------

    def tip_changed(self, update: ChainUpdate) -> None:
        """Reconcile the mempool and start training on newly open tasks."""
        chain = self.chain
        connected = [b for h, _ in update.connected if (b := chain.get_block(h)) is not None]
        disconnected = [b for h in update.disconnected if (b := chain.get_block(h)) is not None]
        self.mempool.reconcile(chain, self.verifier.peek, connected, disconnected)
        if self.training_enabled:
            for block in connected:
                self._schedule(block)
        self.on_mempool_change()

    def schedule_open_tasks(self) -> None:
        """At start: train open tasks we have not reported on yet."""
        if not self.training_enabled:
            return
        for key, rec in list(self.chain.state.items()):
            if key.startswith(b"task:") and rec["open"]:
                self._schedule_task(key[5:], rec)

    def _schedule(self, block: Block) -> None:
        for tx in block.txs[1:]:
            if isinstance(tx, TaskTx):
                rec = self.chain.state.get(task_key(tx.id))
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
        me = self.identity.public_key
        seed = bytes(rec["seed"])
        for rnd in range(spec.rounds):
            if (task_id, seed, rnd) in self._claimed:
                continue
            if self.chain.state.get(b"slot:" + task_id + me + rnd.to_bytes(4, "big")):
                continue
            self._claimed.add((task_id, seed, rnd))
            self.spawn(self._train(task_id, spec, seed, rnd), "train")

    async def _train(self, task_id: bytes, spec: TaskSpec, seed: bytes, rnd: int) -> None:
        me = self.identity
        try:
            out = await self.trainer.train_round(spec, task_id, seed, me.public_key, rnd)
        except TrainingError as exc:
            self.jobs_failed += 1
            self.failures[task_id].append(
                {"round": rnd, "reason": exc.reason, "detail": exc.detail, "time": time.time()}
            )
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
        rec = self.chain.state.get(task_key(task_id))
        if rec is None or not rec["open"] or bytes(rec["seed"]) != seed:
            log.info(
                "task %s closed or re-mined before our round %d was done", task_id.hex()[:16], rnd
            )
            return
        try:
            await self.submit_result(tx, "self")
        except ValidationError as exc:
            self.failures[task_id].append(
                {"round": rnd, "reason": exc.reason, "detail": exc.detail, "time": time.time()}
            )
            log.warning("our own result for %s was refused: %s", task_id.hex()[:16], exc)
            return
        await self.publish("results", tx)

    # -- views -----------------------------------------------------------------------

    def task_view(self, task_id: bytes) -> dict[str, Any] | None:
        rec = self.chain.state.get(task_key(task_id))
        pooled = self.mempool.txs.get(task_id)
        if rec is None and not isinstance(pooled, TaskTx):
            return None
        out: dict[str, Any] = {"id": task_id.hex()}
        if rec is None:
            assert isinstance(pooled, TaskTx)
            out.update(
                status="pending",
                spec=pooled.spec.to_wire(),
                publisher=pooled.publisher.hex(),
                bounty=pooled.bounty,
                fee=pooled.fee,
                deadline=pooled.deadline,
                result_reward=pooled.result_reward,
                max_results=pooled.max_results,
                results=[],
                rounds_done=0,
            )
        else:
            results = [self.result_view(bytes(rid)) for rid in rec["results"]]
            best = None
            if rec["winners"]:
                w_trainer, w_rid = rec["winners"][0]
                best = {
                    "metric": rec["best"],
                    "result": bytes(w_rid).hex(),
                    "trainer": bytes(w_trainer).hex(),
                    "model_cid": self.chain.state[result_key(bytes(w_rid))]["model_cid"],
                    "winners": [bytes(t).hex() for t, _ in rec["winners"]],
                }
            out.update(
                status="open" if rec["open"] else "closed",
                spec=rec["spec"],
                publisher=bytes(rec["publisher"]).hex(),
                height=rec["height"],
                seed=bytes(rec["seed"]).hex(),
                close_at=rec["close_at"],
                closed_at=rec["closed_at"],
                bounty=rec["bounty"],
                fee=rec["fee"],
                result_reward=rec["result_reward"],
                max_results=rec["max_results"],
                results=results,
                rounds_done=len(results),
                best=best,
                payout=[{"to": bytes(k).hex(), "amount": a} for k, a in rec["payout"]],
                pending_results=[
                    tx.id.hex()
                    for tx in self.mempool.txs.values()
                    if isinstance(tx, ResultTx) and tx.task_id == task_id
                ],
            )
        out["failures"] = [dict(f) for f in self.failures.get(task_id, [])]
        return out

    def tasks(self) -> list[dict[str, Any]]:
        out = []
        for key in [k for k in self.chain.state if k.startswith(b"task:")]:
            v = self.task_view(key[5:])
            if v is not None:
                out.append(_summary(v))
        for tx in self.mempool.txs.values():
            if isinstance(tx, TaskTx) and task_key(tx.id) not in self.chain.state:
                v = self.task_view(tx.id)
                if v is not None:
                    out.append(_summary(v))
        return sorted(out, key=lambda t: (t.get("height") or 1 << 62, t["id"]), reverse=True)

    def result_view(self, result_id: bytes) -> dict[str, Any]:
        rec = self.chain.state.get(result_key(result_id))
        if rec is None:
            tx = self.mempool.txs.get(result_id)
            if not isinstance(tx, ResultTx):
                return {}
            return {
                "id": result_id.hex(),
                "status": "pending",
                "task": tx.task_id.hex(),
                "trainer": tx.trainer.hex(),
                "round": tx.round,
                "metric": tx.metric,
                "model_cid": tx.model_cid,
                "train_rows": tx.train_rows,
                "train_ms": tx.train_ms,
            }
        return {
            "id": result_id.hex(),
            "status": "confirmed",
            "task": bytes(rec["task"]).hex(),
            "height": rec["height"],
            "block": bytes(rec["block"]).hex(),
            "trainer": bytes(rec["trainer"]).hex(),
            "round": rec["round"],
            "metric": rec["metric"],
            "model_cid": rec["model_cid"],
            "train_rows": rec["train_rows"],
            "train_ms": rec["train_ms"],
        }

    def results(self, task_id: bytes | None) -> list[dict[str, Any]]:
        out = []
        for key in [k for k in self.chain.state if k.startswith(b"rid:")]:
            v = self.result_view(key[4:])
            if task_id is None or v["task"] == task_id.hex():
                out.append(v)
        for tx in self.mempool.txs.values():
            if isinstance(tx, ResultTx) and (task_id is None or tx.task_id == task_id):
                out.append(self.result_view(tx.id))
        return out

    def mempool_view(self) -> list[dict[str, Any]]:
        out = []
        for tx in self.mempool.txs.values():
            if isinstance(tx, TaskTx):
                out.append({"id": tx.id.hex(), "type": "task", "fee": tx.fee})
            else:
                out.append(
                    {"id": tx.id.hex(), "type": "result", "fee": 0, "task": tx.task_id.hex()}
                )
        return out


def _summary(v: dict[str, Any]) -> dict[str, Any]:
    best = v.get("best")
    return {
        "id": v["id"],
        "status": v["status"],
        "model": v["spec"]["model"],
        "metric": v["spec"]["metric"],
        "dataset_cid": v["spec"]["dataset_cid"],
        "rounds": v["spec"]["rounds"],
        "results": v["rounds_done"],
        "best": None if best is None else best["metric"],
        "height": v.get("height"),
        "bounty": v["bounty"],
    }
