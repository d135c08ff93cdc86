"""The consensus rules of training tasks and results, and the ledger rules
that pay for them (the transaction types are in :mod:`p2pml.chain.types`).

* ``TaskTx`` (tag 1): a signed training task. Including it costs ``fee`` (to
  the miner) and escrows ``bounty + result_reward * max_results`` from the
  publisher. The hash of the block that includes it seeds every partition.
* ``ResultTx`` (tag 2): a trainer's signed claim for one (task, round).
  Inclusion is optimistic: a block is valid only if every result in it
  passes the cheap checks (the verdict oracle with ``audit=False``: artifact
  structure and budgets, the metric recomputed on the holdout; no
  re-training); the chain treats "not known yet" as missing data, never as
  invalid. Re-training is for audit committees drawn by a later beacon
  (:mod:`p2pml.chain.audits`) and for disputed results, on every node
  (:mod:`p2pml.chain.disputes`).

A result counts only from a bonded key (:mod:`p2pml.chain.bonds`) and pays
its ``fee`` to the miner, less the part held back for its audit committee.
A task closes at its deadline height, or as soon as ``max_results`` results
are in. Then the bounty is assigned to the trainer(s) of the best non-void
result (ties split evenly, the indivisible remainder back to the
publisher), and each non-void result earns ``result_reward``; a task with
no result, and any unearned reward, refunds the publisher. All of it is
credited ``payout_window`` blocks after close (:mod:`p2pml.chain.payouts`);
a dispute resolved meanwhile recomputes it. Everything here writes through
the undo-logged ``StateView``, so reorgs undo it exactly.
"""

from __future__ import annotations

import math
from typing import Any

from p2pml.chain.audits import audit_fields, schedule_audit
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
        fed = tx.spec.federated
        if fed is not None and tx.spec.rounds * (fed.round_blocks + 1) > tx.deadline:
            # Each round may take its whole window plus the block closing it.
            raise ValidationError(
                "federated-deadline",
                f"{tx.spec.rounds} rounds of {fed.round_blocks} blocks (+1 to close each)"
                f" need a deadline of {tx.spec.rounds * (fed.round_blocks + 1)}, not {tx.deadline}",
            )
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
        # Only the cheap checks here (optimistic: no re-training); which
        # results are re-trained, and by whom, the beacon decides later
        # (chain/audits.py), or a dispute (chain/disputes.py).
        verdict = ctx.verdict(tx, task, False)
        if verdict is None:
            raise MissingDataError(tx.model_cid, f"result {rid.hex()[:16]} not verified yet")
        if verdict:
            raise ValidationError(verdict, f"result {rid.hex()[:16]} failed verification")

        hold = schedule_audit(view, ctx, rid, tx.fee)
        ctx.fees += tx.fee - hold
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
                # With the task's seed, enough to rebuild the signed ResultTx
                # when a dispute re-runs it (disputes.result_tx).
                "fee": tx.fee,
                "signature": tx.signature,
                "status": "ok",  # "disputed" while challenged, "void" once proven false
                "dispute": None,
                **audit_fields(ctx.params, ctx.height, hold),
            },
        )
        task = dict(task)
        results = [*task["results"], rid]
        task["results"] = results
        task["best"], task["winners"] = _rank(
            task["spec"]["metric"], task["best"], task["winners"], tx.metric, tx.trainer, rid
        )
        view.put(task_key(tx.task_id), task)
        if len(results) >= task["max_results"]:
            close_task(view, tx.task_id, ctx)


def _rank(
    metric_name: str,
    best: float | None,
    winners: list[list[Any]],
    metric: float,
    trainer: bytes,
    rid: bytes,
) -> tuple[float, list[list[Any]]]:
    """Best metric and winners after one more result (in inclusion order):
    a better metric takes over; an equal one joins unless its trainer is in."""
    if best is None or better(metric_name, metric, best):
        return metric, [[trainer, rid]]
    if metric == best and all(w[0] != trainer for w in winners):
        return best, [*winners, [trainer, rid]]
    return best, winners


def rerank(view: StateView, task: dict[str, Any]) -> dict[str, Any]:
    """``task`` with best and winners recomputed from its non-void results."""
    best: float | None = None
    winners: list[list[Any]] = []
    for rid in task["results"]:
        rec = view.get(result_key(rid))
        if rec["status"] != "void":
            best, winners = _rank(
                task["spec"]["metric"], best, winners, rec["metric"], rec["trainer"], rid
            )
    return {**task, "best": best, "winners": winners}


def payout_of(view: StateView, task: dict[str, Any]) -> list[list[Any]]:
    """Who gets what of a closed task: ``result_reward`` per non-void result
    (the first ``max_results``), the bounty split among the winners, and the
    rest back to the publisher; one entry per key, in first-mention order."""
    owed: dict[bytes, int] = {}
    counted = 0
    for rid in task["results"][: task["max_results"]]:
        rec = view.get(result_key(rid))
        if rec["status"] != "void" and task["result_reward"]:
            owed[rec["trainer"]] = owed.get(rec["trainer"], 0) + task["result_reward"]
        counted += rec["status"] != "void"
    refund = task["result_reward"] * (task["max_results"] - counted)
    winners = task["winners"]
    if winners:
        share, rest = divmod(task["bounty"], len(winners))
        for trainer, _rid in winners:
            owed[trainer] = owed.get(trainer, 0) + share
        refund += rest
    else:
        refund += task["bounty"]
    if refund:
        owed[task["publisher"]] = owed.get(task["publisher"], 0) + refund
    return [[k, v] for k, v in owed.items() if v]


def close_task(view: StateView, task_id: bytes, ctx: BlockContext) -> None:
    """Fix the payout now; it is credited ``payout_window`` blocks later."""
    task = dict(view.get(task_key(task_id)))
    if is_federated(task):
        close_federated_task(view, task_id, ctx)
        return
    if not task["open"]:
        return
    pay_at = ctx.height + ctx.params.payout_window
    task.update(
        open=False,
        closed_at=ctx.height,
        payout=payout_of(view, task),
        payout_at=pay_at,
        paid=False,
    )
    view.put(task_key(task_id), task)
    schedule_payout(view, task_id, pay_at)


def close_due_tasks(view: StateView, ctx: BlockContext) -> None:
    """Block hook: tasks whose deadline is this height close after its txs."""
    for tid in view.get(deadline_key(ctx.height), []):
        close_task(view, tid, ctx)
