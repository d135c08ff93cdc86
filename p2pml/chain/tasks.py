"""The consensus rules of training tasks and results, and the ledger rules
that pay for them (the transaction types are in :mod:`p2pml.chain.types`).

* ``TaskTx`` (tag 1): a signed training task. Including it costs ``fee`` (to
  the miner) and escrows ``bounty + result_reward * max_results`` from the
  publisher. The hash of the block that includes it seeds every partition.
* ``ResultTx`` (tag 2): a trainer's signed claim for one (task, round). A
  block is valid only if every result in it passes verification; the chain
  asks a *verdict oracle* (the node, which re-runs the model in worker
  processes) and treats "not known yet" as missing data, never as invalid.

A result counts only from a bonded key (:mod:`p2pml.chain.bonds`) and pays
its ``fee`` to the miner. A task closes at its deadline height, or as soon
as ``max_results`` results are in. Then the bounty is assigned to the
trainer(s) of the best result (ties split evenly, the indivisible remainder
back to the publisher); a task with no result, and any unused per-result
reward, refunds the publisher. The assignment is credited ``payout_window``
blocks after close (:mod:`p2pml.chain.payouts`). Everything here writes
through the undo-logged ``StateView``, so reorgs undo it exactly.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from p2pml.chain.bonds import lock_bond, require_bond
from p2pml.chain.federated_rounds import close_federated_task, is_federated, open_federated
from p2pml.chain.ledger import BlockContext, StateView
from p2pml.chain.metrics import better
from p2pml.chain.params import NetworkParams
from p2pml.chain.payouts import schedule_payout
from p2pml.chain.taskkeys import deadline_key as deadline_key
from p2pml.chain.taskkeys import result_key as result_key
from p2pml.chain.taskkeys import slot_key as slot_key
from p2pml.chain.taskkeys import task_key as task_key
from p2pml.chain.types import DOMAIN_RESULT, DOMAIN_TASK, ResultTx, TaskTx, signed_payload
from p2pml.cidv0 import is_cidv0
from p2pml.crypto import verify
from p2pml.errors import MissingDataError, ValidationError

MAX_DEADLINE = 100_000
MAX_RESULTS = 10_000
MAX_TRAIN_MS = 7 * 24 * 3600 * 1000


def is_audited(params: NetworkParams, block_hash: bytes, result_id: bytes) -> bool:
    """Whether a result in this block must be re-trained: the same on every node."""
    if params.audit_fraction >= 1.0:
        return True
    draw = int.from_bytes(hashlib.sha256(block_hash + result_id).digest()[:8], "big")
    return draw < int(params.audit_fraction * 2**64)


# -- rules -------------------------------------------------------------------------


class TaskHandler:
    def check(self, tx: TaskTx, params: NetworkParams) -> None:
        payload = signed_payload(params.genesis_hash, tx.unsigned_wire())
        if not verify(tx.publisher, DOMAIN_TASK, payload, tx.signature):
            raise ValidationError("bad-task-sig", "signature does not match the publisher")
        tx.spec.validate()
        if tx.fee < params.min_task_fee:
            raise ValidationError("bad-task-fee", f"fee {tx.fee} < {params.min_task_fee}")
        floor = params.min_round_bounty * tx.spec.rounds
        if tx.bounty < floor:
            raise ValidationError(
                "bad-task-bounty", f"bounty {tx.bounty} < {params.min_round_bounty} x rounds"
            )
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
                "payout_at": None,
                "paid": False,
            },
        )
        dl = list(view.get(deadline_key(close_at), []))
        view.put(deadline_key(close_at), [*dl, tid])
        if tx.spec.federated is not None:
            open_federated(view, tid, ctx.height)


class ResultHandler:
    def check(self, tx: ResultTx, params: NetworkParams) -> None:
        payload = signed_payload(params.genesis_hash, tx.unsigned_wire())
        if not verify(tx.trainer, DOMAIN_RESULT, payload, tx.signature):
            raise ValidationError("bad-result-sig", "signature does not match the trainer")
        if not math.isfinite(tx.metric):
            raise ValidationError("bad-result-metric", "metric is not finite")
        if not is_cidv0(tx.model_cid):
            raise ValidationError("bad-result-model", "model CID is not a CIDv0")
        if tx.train_ms > MAX_TRAIN_MS:
            raise ValidationError("bad-result-time", "training time out of range")
        if tx.fee < params.min_result_fee:
            raise ValidationError("bad-result-fee", f"fee {tx.fee} < {params.min_result_fee}")

    def apply(self, tx: ResultTx, view: StateView, ctx: BlockContext) -> None:
        rid = tx.id
        task = view.get(task_key(tx.task_id))
        if task is None:
            raise ValidationError("result-task-unknown", "no such task in this chain")
        if task["height"] >= ctx.height:
            raise ValidationError("result-task-unknown", "task is not in an earlier block")
        if is_federated(task):
            raise ValidationError("result-task-federated", "a federated task takes updates")
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
        require_bond(view, ctx.params, tx.trainer, task["height"])
        # The fee before the (costly) verdict: a key that cannot pay is
        # refused without re-running its model.
        view.debit(tx.trainer, tx.fee)  # insufficient-funds
        verdict = ctx.verdict(tx, task, is_audited(ctx.params, ctx.block_hash, rid))
        if verdict is None:
            raise MissingDataError(tx.model_cid, f"result {rid.hex()[:16]} not verified yet")
        if verdict:
            raise ValidationError(verdict, f"result {rid.hex()[:16]} failed verification")

        ctx.fees += tx.fee
        lock_bond(view, tx.trainer, tx.task_id)
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
            close_task(view, tx.task_id, ctx)


def close_task(view: StateView, task_id: bytes, ctx: BlockContext) -> None:
    """Fix the payout now; it is credited ``payout_window`` blocks later."""
    task = dict(view.get(task_key(task_id)))
    if is_federated(task):
        close_federated_task(view, task_id, ctx)
        return
    if not task["open"]:
        return
    payout: list[list[Any]] = []
    paid_results = min(len(task["results"]), task["max_results"])
    refund = task["result_reward"] * (task["max_results"] - paid_results)
    winners = task["winners"]
    if winners:
        share, rest = divmod(task["bounty"], len(winners))
        for trainer, _rid in winners:
            payout.append([trainer, share])
        refund += rest
    else:
        refund += task["bounty"]
    if refund:
        payout.append([task["publisher"], refund])
    pay_at = ctx.height + ctx.params.payout_window
    task.update(open=False, closed_at=ctx.height, payout=payout, payout_at=pay_at, paid=False)
    view.put(task_key(task_id), task)
    schedule_payout(view, task_id, pay_at)


def close_due_tasks(view: StateView, ctx: BlockContext) -> None:
    """Block hook: tasks whose deadline is this height close after its txs."""
    for tid in view.get(deadline_key(ctx.height), []):
        close_task(view, tid, ctx)
