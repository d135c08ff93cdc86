"""Training tasks and results as consensus transactions, and the ledger rules
that pay for them.

* ``TaskTx`` (tag 1): a signed training task. Including it costs ``fee`` (to
  the miner) and escrows ``bounty + result_reward * max_results`` from the
  publisher. The hash of the block that includes it seeds every partition.
* ``ResultTx`` (tag 2): a trainer's signed claim for one (task, round). A
  block is valid only if every result in it passes verification; the chain
  asks a *verdict oracle* (the node, which re-runs the model in worker
  processes) and treats "not known yet" as missing data, never as invalid.

A task closes at its deadline height, or as soon as ``max_results`` results
are in. Then the bounty goes to the trainer(s) of the best result (ties split
evenly, the indivisible remainder back to the publisher); a task with no
result, and any unused per-result reward, refunds the publisher. Everything
here writes through the undo-logged ``StateView``, so reorgs undo it exactly.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from p2pml.chain.encoding import (
    PUBKEY_SIZE,
    TAG_RESULT,
    TAG_TASK,
    U32,
    expect_bytes,
    expect_int,
    expect_list,
    packb,
    register_tx_type,
    tx_id,
)
from p2pml.chain.params import NetworkParams
from p2pml.chain.txrules import BlockContext, StateView, register_block_hook, register_handler
from p2pml.cidv0 import is_cidv0
from p2pml.crypto import SIGNATURE_SIZE, Identity, verify
from p2pml.errors import DecodeError, MissingDataError, ValidationError
from p2pml.ml.metrics import better
from p2pml.ml.spec import TaskSpec

MAX_DEADLINE = 100_000
MAX_RESULTS = 10_000
MAX_CID = 128
MAX_TRAIN_MS = 7 * 24 * 3600 * 1000

DOMAIN_TASK = b"task"
DOMAIN_RESULT = b"result"


@dataclass(frozen=True)
class TaskTx:
    spec: TaskSpec
    bounty: int
    fee: int
    deadline: int  # blocks after the including block
    result_reward: int
    max_results: int
    publisher: bytes
    nonce: int
    signature: bytes = b""

    def unsigned_wire(self) -> list[Any]:
        return [
            TAG_TASK,
            self.spec.to_wire(),
            self.bounty,
            self.fee,
            self.deadline,
            self.result_reward,
            self.max_results,
            self.publisher,
            self.nonce,
        ]

    def signed_by(self, ident: Identity) -> TaskTx:
        sig = ident.sign(DOMAIN_TASK, packb(self.unsigned_wire()))
        return TaskTx(**{**self.__dict__, "signature": sig})

    @cached_property
    def id(self) -> bytes:
        return tx_id(self)

    @property
    def escrow(self) -> int:
        return self.bounty + self.result_reward * self.max_results


@dataclass(frozen=True)
class ResultTx:
    task_id: bytes
    # Hash of the block that included the task, i.e. the seed the trainer
    # used: a task mined in two competing blocks has two seeds, and a result
    # for one is stale (not false) on the other branch.
    seed: bytes
    round: int
    trainer: bytes
    metric: float
    model_cid: str
    train_rows: int
    train_ms: int
    signature: bytes = b""

    def unsigned_wire(self) -> list[Any]:
        return [
            TAG_RESULT,
            self.task_id,
            self.seed,
            self.round,
            self.trainer,
            self.metric,
            self.model_cid,
            self.train_rows,
            self.train_ms,
        ]

    def signed_by(self, ident: Identity) -> ResultTx:
        sig = ident.sign(DOMAIN_RESULT, packb(self.unsigned_wire()))
        return ResultTx(**{**self.__dict__, "signature": sig})

    @cached_property
    def id(self) -> bytes:
        return tx_id(self)


# -- codec -----------------------------------------------------------------------


def _task_to_wire(tx: TaskTx) -> list[Any]:
    return [*tx.unsigned_wire(), tx.signature]


def _task_from_wire(f: list[Any]) -> TaskTx:
    expect_list(f, "task", 10)
    return TaskTx(
        spec=TaskSpec.from_wire(f[1]),
        bounty=expect_int(f[2], "task.bounty"),
        fee=expect_int(f[3], "task.fee"),
        deadline=expect_int(f[4], "task.deadline", hi=U32),
        result_reward=expect_int(f[5], "task.result_reward"),
        max_results=expect_int(f[6], "task.max_results", hi=U32),
        publisher=expect_bytes(f[7], "task.publisher", PUBKEY_SIZE),
        nonce=expect_int(f[8], "task.nonce"),
        signature=expect_bytes(f[9], "task.signature", SIGNATURE_SIZE),
    )


def _result_to_wire(tx: ResultTx) -> list[Any]:
    return [*tx.unsigned_wire(), tx.signature]


def _result_from_wire(f: list[Any]) -> ResultTx:
    expect_list(f, "result", 10)
    if type(f[5]) is not float:
        raise DecodeError("result.metric: expected a float")
    if type(f[6]) is not str or len(f[6]) > MAX_CID:
        raise DecodeError("result.model_cid: expected a short string")
    return ResultTx(
        task_id=expect_bytes(f[1], "result.task_id", 32),
        seed=expect_bytes(f[2], "result.seed", 32),
        round=expect_int(f[3], "result.round", hi=U32),
        trainer=expect_bytes(f[4], "result.trainer", PUBKEY_SIZE),
        metric=f[5],
        model_cid=f[6],
        train_rows=expect_int(f[7], "result.train_rows", hi=U32),
        train_ms=expect_int(f[8], "result.train_ms", hi=2**40),
        signature=expect_bytes(f[9], "result.signature", SIGNATURE_SIZE),
    )


register_tx_type(TaskTx, TAG_TASK, _task_to_wire, _task_from_wire)
register_tx_type(ResultTx, TAG_RESULT, _result_to_wire, _result_from_wire)


# -- state keys -------------------------------------------------------------------


def task_key(task_id: bytes) -> bytes:
    return b"task:" + task_id


def result_key(result_id: bytes) -> bytes:
    return b"rid:" + result_id


def slot_key(task_id: bytes, trainer: bytes, rnd: int) -> bytes:
    return b"slot:" + task_id + trainer + rnd.to_bytes(4, "big")


def deadline_key(height: int) -> bytes:
    return b"dl:" + height.to_bytes(8, "big")


def is_audited(params: NetworkParams, block_hash: bytes, result_id: bytes) -> bool:
    """Whether a result in this block must be re-trained: the same on every node."""
    if params.audit_fraction >= 1.0:
        return True
    draw = int.from_bytes(hashlib.sha256(block_hash + result_id).digest()[:8], "big")
    return draw < int(params.audit_fraction * 2**64)


# -- rules -------------------------------------------------------------------------


class TaskHandler:
    def check(self, tx: TaskTx, params: NetworkParams) -> None:
        if not verify(tx.publisher, DOMAIN_TASK, packb(tx.unsigned_wire()), tx.signature):
            raise ValidationError("bad-task-sig", "signature does not match the publisher")
        tx.spec.validate()
        if tx.fee < params.min_task_fee:
            raise ValidationError("bad-task-fee", f"fee {tx.fee} < {params.min_task_fee}")
        if not 1 <= tx.deadline <= MAX_DEADLINE:
            raise ValidationError("bad-task-deadline", f"deadline must be 1..{MAX_DEADLINE}")
        if not 1 <= tx.max_results <= MAX_RESULTS:
            raise ValidationError("bad-task-max-results", f"max_results must be 1..{MAX_RESULTS}")

    def apply(self, tx: TaskTx, view: StateView, ctx: BlockContext) -> None:
        tid = tx.id
        if view.get(task_key(tid)) is not None:
            raise ValidationError("duplicate-task", "task already in the chain")
        view.debit(tx.publisher, tx.fee + tx.escrow)  # insufficient-funds
        ctx.fees += tx.fee
        close_at = ctx.height + tx.deadline
        view.put(
            task_key(tid),
            {
                "spec": tx.spec.to_wire(),
                "publisher": tx.publisher,
                "height": ctx.height,
                "seed": ctx.block_hash,
                "close_at": close_at,
                "bounty": tx.bounty,
                "fee": tx.fee,
                "result_reward": tx.result_reward,
                "max_results": tx.max_results,
                "results": [],
                "best": None,
                "winners": [],
                "open": True,
                "closed_at": None,
                "payout": [],
            },
        )
        dl = list(view.get(deadline_key(close_at), []))
        view.put(deadline_key(close_at), [*dl, tid])


class ResultHandler:
    def check(self, tx: ResultTx, params: NetworkParams) -> None:
        if not verify(tx.trainer, DOMAIN_RESULT, packb(tx.unsigned_wire()), tx.signature):
            raise ValidationError("bad-result-sig", "signature does not match the trainer")
        if not math.isfinite(tx.metric):
            raise ValidationError("bad-result-metric", "metric is not finite")
        if not is_cidv0(tx.model_cid):
            raise ValidationError("bad-result-model", "model CID is not a CIDv0")
        if tx.train_ms > MAX_TRAIN_MS:
            raise ValidationError("bad-result-time", "training time out of range")

    def apply(self, tx: ResultTx, view: StateView, ctx: BlockContext) -> None:
        rid = tx.id
        task = view.get(task_key(tx.task_id))
        if task is None:
            raise ValidationError("result-task-unknown", "no such task in this chain")
        if task["height"] >= ctx.height:
            raise ValidationError("result-task-unknown", "task is not in an earlier block")
        if not task["open"] or ctx.height > task["close_at"]:
            raise ValidationError("result-task-closed", "task is closed")
        if tx.round >= task["spec"]["rounds"]:
            raise ValidationError(
                "bad-result-round", f"round {tx.round} >= {task['spec']['rounds']}"
            )
        if tx.seed != task["seed"]:
            raise ValidationError("result-wrong-seed", "trained for the task in another block")
        if view.get(slot_key(tx.task_id, tx.trainer, tx.round)) is not None:
            raise ValidationError("duplicate-result", "this trainer already reported this round")
        verdict = ctx.verdict(tx, task, is_audited(ctx.params, ctx.block_hash, rid))
        if verdict is None:
            raise MissingDataError(tx.model_cid, f"result {rid.hex()[:16]} not verified yet")
        if verdict:
            raise ValidationError(verdict, f"result {rid.hex()[:16]} failed verification")

        view.put(slot_key(tx.task_id, tx.trainer, tx.round), rid)
        view.put(
            result_key(rid),
            {
                "task": tx.task_id,
                "height": ctx.height,
                "block": ctx.block_hash,
                "trainer": tx.trainer,
                "round": tx.round,
                "metric": tx.metric,
                "model_cid": tx.model_cid,
                "train_rows": tx.train_rows,
                "train_ms": tx.train_ms,
            },
        )
        task = dict(task)
        results = [*task["results"], rid]
        task["results"] = results
        if len(results) <= task["max_results"] and task["result_reward"]:
            view.credit(tx.trainer, task["result_reward"])
        metric_name = task["spec"]["metric"]
        if task["best"] is None or better(metric_name, tx.metric, task["best"]):
            task["best"], task["winners"] = tx.metric, [[tx.trainer, rid]]
        elif tx.metric == task["best"] and all(w[0] != tx.trainer for w in task["winners"]):
            task["winners"] = [*task["winners"], [tx.trainer, rid]]
        view.put(task_key(tx.task_id), task)
        if len(results) >= task["max_results"]:
            close_task(view, tx.task_id, ctx.height)


def close_task(view: StateView, task_id: bytes, height: int) -> None:
    task = dict(view.get(task_key(task_id)))
    if not task["open"]:
        return
    payout: list[list[Any]] = []
    paid_results = min(len(task["results"]), task["max_results"])
    refund = task["result_reward"] * (task["max_results"] - paid_results)
    winners = task["winners"]
    if winners:
        share, rest = divmod(task["bounty"], len(winners))
        for trainer, _rid in winners:
            view.credit(trainer, share)
            payout.append([trainer, share])
        refund += rest
    else:
        refund += task["bounty"]
    if refund:
        view.credit(task["publisher"], refund)
        payout.append([task["publisher"], refund])
    task.update(open=False, closed_at=height, payout=payout)
    view.put(task_key(task_id), task)


def close_due_tasks(view: StateView, ctx: BlockContext) -> None:
    """Block hook: tasks whose deadline is this height close after its txs."""
    for tid in view.get(deadline_key(ctx.height), []):
        close_task(view, tid, ctx.height)


register_handler(TaskTx, TaskHandler())
register_handler(ResultTx, ResultHandler())
register_block_hook(close_due_tasks)
