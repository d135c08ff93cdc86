"""Federated rounds on the chain (issue 16, public shards): updates, round
closes and the bounty of a federated task (docs/federated.md, "On the chain").

State: a federated task keeps, besides its task record, ``fed:<task id>``::

    {"round": r,              # the open round (R once all rounds closed)
     "opened_at": height,     # first height at which round r takes updates
     "updates": [[participant, update_cid, n_samples], ...],  # round r, in order
     "models": [hash(G_1), ..., hash(G_r)],                    # committed hashes
     "closed": [[close height, updates of that round], ...],
     "gains": [[gain, ...], ...],  # per closed round (protocol 7), see below
     "epsilon": float}        # DP: privacy loss of the closed rounds (0.0 without)

* ``UpdateTx`` (tag 9) joins the open round while it has room (``participants``)
  and its window (``round_blocks`` blocks from ``opened_at``) lasts, if its
  ``base`` is hash(G_r) (``update-wrong-base``; for round 0 the oracle checks
  it against hash(G_0), which consensus does not compute). The node's
  verdict oracle fetches the artifact and decodes it against the task's layout
  (``bad-update-shape``/``bad-update-value``, or ``bad-update-samples`` if the
  sample count is not the participant's shard size); "unknown" is missing data.
* ``RoundCloseTx`` (tag 10) closes round r once it is full or its window has
  passed, committing hash(G_{r+1}); the oracle recomputes the aggregate and
  answers ``bad-round-hash`` on a mismatch. A round without updates closes with
  G_{r+1} = G_r. Closing the last round closes the task.
* Private tasks (protocol 6): updates cannot be re-executed, so the oracle
  accepts them by rule (layout, finite, canonical) and ``n_samples`` is only
  bounded by ``MAX_PRIVATE_SAMPLES``; under local DP each round close records
  ``epsilon``, the privacy loss of the rounds closed so far (the accountant).
* Rewards by improvement (protocol 7, spec ``reward`` "improvement"): each
  round close carries one gain per update (the oracle scores G_r and each
  update's model on the validation set), recorded in ``gains``; an empty list
  is the verdict "the validation set does not parse" (or a task rewarding
  samples, or a round without updates).
* Payout: ``bounty // R`` per round, split among that round's updates by gain
  (when some gain is above 0), else by sample count (floor),
  or in equal shares for private tasks (their counts are unverifiable); the
  rest, and the unused result escrow, back to the publisher.

Pure and undo-logged through ``StateView`` like the other rules.
"""

from __future__ import annotations

from typing import Any

from p2pml.chain.bonds import lock_bond, require_bond
from p2pml.chain.fedspec import REWARD_IMPROVEMENT
from p2pml.chain.ledger import BlockContext, StateView
from p2pml.chain.params import NetworkParams
from p2pml.chain.payouts import schedule_payout
from p2pml.chain.taskkeys import fed_key as fed_key  # re-exported: its home was here
from p2pml.chain.taskkeys import task_key
from p2pml.chain.types import DOMAIN_UPDATE, RoundCloseTx, UpdateTx, signed_payload
from p2pml.cidv0 import is_cidv0
from p2pml.crypto import verify
from p2pml.errors import MissingDataError, ValidationError
from p2pml.federated.accountant import epsilon_spent

FEDERATED = "federated"
MAX_SAMPLES = 2**53 - 1
#: A private update's self-reported row count is only informative (it weighs
#: nothing: private rounds use robust rules or 1/m, payouts are equal shares);
#: the cap keeps it a plausible row count.
MAX_PRIVATE_SAMPLES = 10**9


def is_federated(task: dict[str, Any]) -> bool:
    return FEDERATED in task["spec"]


def is_private(task: dict[str, Any]) -> bool:
    return bool(task["spec"][FEDERATED]["private"])


def by_improvement(task: dict[str, Any]) -> bool:
    return bool(task["spec"][FEDERATED]["reward"] == REWARD_IMPROVEMENT)


def open_federated(view: StateView, task_id: bytes, height: int) -> None:
    """Round 0 takes updates from the block after the task's."""
    view.put(
        fed_key(task_id),
        {
            "round": 0,
            "opened_at": height + 1,
            "updates": [],
            "models": [],
            "closed": [],
            "gains": [],
            "epsilon": 0.0,
        },
    )


def epsilon_after(spec: dict[str, Any], rounds: int) -> float:
    """The privacy loss recorded after ``rounds`` closed rounds: the accountant's
    epsilon at the task's delta (0.0 without DP or before any round)."""
    f = spec[FEDERATED]
    if f["noise_multiplier"] <= 0.0 or rounds < 1:
        return 0.0
    return epsilon_spent(f["noise_multiplier"], f["sampling_rate"], rounds, f["delta"])


def round_due(fed: dict[str, Any], spec: dict[str, Any], height: int) -> bool:
    """Whether the open round may close at ``height``: full, or its window over."""
    f = spec[FEDERATED]
    full: bool = len(fed["updates"]) >= f["participants"]
    return full or height >= fed["opened_at"] + f["round_blocks"]


def oracle_view(task: dict[str, Any], fed: dict[str, Any]) -> dict[str, Any]:
    """What the verdict oracle gets: the task record with its round state."""
    return {**task, "fed": fed}


def _federated_task(view: StateView, task_id: bytes, height: int, what: str) -> dict[str, Any]:
    task: dict[str, Any] | None = view.get(task_key(task_id))
    if task is None or task["height"] >= height:
        raise ValidationError(f"{what}-task-unknown", "no such task in an earlier block")
    if not is_federated(task):
        raise ValidationError(f"{what}-task-not-federated", "the task is not federated")
    if not task["open"] or height > task["close_at"]:
        raise ValidationError(f"{what}-task-closed", "task is closed")
    return task


class UpdateHandler:
    def check(self, tx: UpdateTx, params: NetworkParams) -> None:
        payload = signed_payload(params.genesis_hash, tx.unsigned_wire())
        if not verify(tx.participant, DOMAIN_UPDATE, payload, tx.signature):
            raise ValidationError("bad-update-sig", "signature does not match the participant")
        if not is_cidv0(tx.update_cid):
            raise ValidationError("bad-update-cid", "update CID is not a CIDv0")
        if not 1 <= tx.n_samples <= MAX_SAMPLES:
            raise ValidationError("bad-update-value", f"sample count {tx.n_samples}")
        if tx.fee < params.min_result_fee:
            raise ValidationError("bad-update-fee", f"fee {tx.fee} < {params.min_result_fee}")

    def apply(self, tx: UpdateTx, view: StateView, ctx: BlockContext) -> None:
        task = _federated_task(view, tx.task_id, ctx.height, "update")
        if tx.seed != task["seed"]:
            raise ValidationError("update-wrong-seed", "trained for the task in another block")
        if is_private(task) and tx.n_samples > MAX_PRIVATE_SAMPLES:
            raise ValidationError("bad-update-value", f"private sample count {tx.n_samples}")
        fed = dict(view.get(fed_key(tx.task_id)))
        if tx.round != fed["round"]:
            raise ValidationError("bad-update-round", f"round {tx.round}, open is {fed['round']}")
        # Trained from the committed G_r (round 0: G_0, a function of the task
        # that the oracle checks, §11.3): a reorg that changed G_r voids it.
        if fed["models"] and tx.base != bytes(fed["models"][-1]):
            raise ValidationError("update-wrong-base", "trained from another G_r")
        f = task["spec"][FEDERATED]
        if ctx.height >= fed["opened_at"] + f["round_blocks"]:
            raise ValidationError("update-round-late", f"round {tx.round}'s window is over")
        if len(fed["updates"]) >= f["participants"]:
            raise ValidationError("update-round-full", f"round {tx.round} has its updates")
        if any(u[0] == tx.participant for u in fed["updates"]):
            raise ValidationError("duplicate-update", "this participant already sent this round")
        require_bond(view, ctx.params, tx.participant, task["height"])
        view.debit(tx.participant, tx.fee)  # insufficient-funds, before the costly verdict
        verdict = ctx.verdict(tx, oracle_view(task, fed), False)
        if verdict is None:
            raise MissingDataError(tx.update_cid, f"update {tx.id.hex()[:16]} not checked yet")
        if verdict:
            raise ValidationError(verdict, f"update {tx.id.hex()[:16]} failed its check")
        ctx.fees += tx.fee
        fed["updates"] = [*fed["updates"], [tx.participant, tx.update_cid, tx.n_samples]]
        view.put(fed_key(tx.task_id), fed)
        # As a result does (consensus.md "Bonds"): no unbonding out of a
        # slash of this update until the task is paid (protocol 7).
        lock_bond(view, tx.participant, tx.task_id)


class RoundCloseHandler:
    def check(self, tx: RoundCloseTx, params: NetworkParams) -> None:
        pass  # sizes are checked by the decoder; the hash by apply's oracle

    def apply(self, tx: RoundCloseTx, view: StateView, ctx: BlockContext) -> None:
        task = _federated_task(view, tx.task_id, ctx.height, "round")
        fed = dict(view.get(fed_key(tx.task_id)))
        if tx.round != fed["round"]:
            raise ValidationError("bad-round-close", f"round {tx.round}, open is {fed['round']}")
        if not round_due(fed, task["spec"], ctx.height):
            raise ValidationError("round-not-due", f"round {tx.round} is neither full nor over")
        if tx.gains and not (by_improvement(task) and len(tx.gains) == len(fed["updates"])):
            # () is always well-formed: no improvement reward, no update, or a
            # validation set that does not parse (the oracle says which).
            raise ValidationError("bad-round-gains", f"{len(tx.gains)} gains for this round")
        verdict = ctx.verdict(tx, oracle_view(task, fed), False)
        if verdict is None:
            raise MissingDataError(
                tx.task_id.hex(), f"G_{tx.round + 1} of task {tx.task_id.hex()[:16]} not known yet"
            )
        if verdict:
            raise ValidationError(verdict, f"round {tx.round} of {tx.task_id.hex()[:16]}")
        fed.update(
            round=tx.round + 1,
            opened_at=ctx.height + 1,
            updates=[],
            models=[*fed["models"], tx.model_hash],
            closed=[*fed["closed"], [ctx.height, fed["updates"]]],
            gains=[*fed["gains"], list(tx.gains)],
            epsilon=epsilon_after(task["spec"], tx.round + 1),
        )
        view.put(fed_key(tx.task_id), fed)
        if fed["round"] >= task["spec"]["rounds"]:
            close_federated_task(view, tx.task_id, ctx)


def round_weights(task: dict[str, Any], updates: list[Any], gains: list[int]) -> list[int]:
    """Each update's weight in its round's share: its gain (recorded for a task
    rewarding improvement), else its sample count, or 1 in a private task
    (self-reported counts). An improvement round falls back to those when its
    validation set did not parse (gains []) or no update improved G_r (every
    gain 0): a publisher must not get a round trained for free by choosing a
    validation set nobody can improve on."""
    if any(gains):
        return list(gains)
    if is_private(task):
        return [1] * len(updates)
    return [n for _p, _cid, n in updates]


def round_shares(task: dict[str, Any], fed: dict[str, Any]) -> list[list[int]]:
    """Per closed round, what each of its updates earns (inclusion order):
    ``floor(floor(bounty / R) * weight / sum of weights)``."""
    per_round = task["bounty"] // task["spec"]["rounds"]
    out: list[list[int]] = []
    for (_height, updates), gains in zip(fed["closed"], fed["gains"], strict=True):
        weights = round_weights(task, updates, gains)
        total = sum(weights)
        out.append([per_round * w // total if total else 0 for w in weights])
    return out


def federated_payout(task: dict[str, Any], fed: dict[str, Any]) -> list[list[Any]]:
    """``[[key, amount], ...]``: participants by key (bytewise), then the publisher."""
    earned: dict[bytes, int] = {}
    for (_height, updates), shares in zip(fed["closed"], round_shares(task, fed), strict=True):
        for (participant, _cid, _n), share in zip(updates, shares, strict=True):
            if share:
                earned[participant] = earned.get(participant, 0) + share
    payout: list[list[Any]] = [[p, earned[p]] for p in sorted(earned)]
    refund = task["bounty"] - sum(earned.values()) + task["result_reward"] * task["max_results"]
    if refund:
        payout.append([task["publisher"], refund])
    return payout


def close_federated_task(view: StateView, task_id: bytes, ctx: BlockContext) -> None:
    """Fix a federated task's payout (credited ``payout_window`` blocks later)."""
    task = dict(view.get(task_key(task_id)))
    if not task["open"]:
        return
    payout = federated_payout(task, view.get(fed_key(task_id)))
    pay_at = ctx.height + ctx.params.payout_window
    task.update(open=False, closed_at=ctx.height, payout=payout, payout_at=pay_at, paid=False)
    view.put(task_key(task_id), task)
    schedule_payout(view, task_id, pay_at)
