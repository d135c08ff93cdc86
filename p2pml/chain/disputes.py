"""Disputes: fraud proofs against optimistically included results.

* ``ChallengeTx`` (tag 8): a bonded ``challenger`` names a result in the
  chain and pays ``fee`` to the miner. Each open challenge reserves
  ``challenge_stake`` of the challenger's bond, which stays locked (no
  unbond) until the dispute resolves. At most ``max_challenges_per_block``
  challenges per block; one dispute per result, ever.
* Resolution, ``dispute_delay`` blocks after the challenge's block (a block
  hook, run before tasks close and pay): every node re-runs the result's
  full audit (verdict oracle, ``audit=True``). Unknown is missing data (the
  block waits), never a verdict.

  - The audit fails: the result is ``void``; its trainer's whole bond is
    slashed, ``floor(amount * challenge_slash_share)`` to the challenger and
    the rest burned; the task's best and winners are recomputed from its
    remaining non-void results, and so is its payout if it is closed.
  - The audit passes: the challenger's stake is burned from its bond.

State (undo-logged through ``StateView``): the result record's ``status``
(``"ok"``, ``"disputed"``, ``"void"``) and ``dispute`` (``{"by", "at",
"resolve_at", "outcome", "reason"}``); ``dsp:<height u64>`` -> result ids
resolving at that height; the challenger's bond record counts its open
challenges (``"challenges"``), and its lock list holds the disputed result
ids (:mod:`p2pml.chain.bonds`).
"""

from __future__ import annotations

from typing import Any

from p2pml.chain.bonds import bond_key, drop_bond, lock_bond, unlock_bond
from p2pml.chain.ledger import BlockContext, StateView
from p2pml.chain.params import NetworkParams
from p2pml.chain.taskkeys import result_key, task_key
from p2pml.chain.tasks import payout_of, rerank
from p2pml.chain.types import DOMAIN_CHALLENGE, ChallengeTx, ResultTx, signed_payload
from p2pml.crypto import verify
from p2pml.errors import MissingDataError, ValidationError

# Dispute outcomes recorded in the result's "dispute".
PENDING = "pending"
VOIDED = "result-void"  # the audit failed: the challenger was right
UPHELD = "result-valid"  # the audit passed: the challenge was wrong


def dispute_key(height: int) -> bytes:
    return b"dsp:" + height.to_bytes(8, "big")


def result_tx(rec: dict[str, Any], seed: bytes) -> ResultTx:
    """The signed result a result record was made from (the task's seed)."""
    return ResultTx(
        task_id=bytes(rec["task"]),
        seed=bytes(seed),
        round=rec["round"],
        trainer=bytes(rec["trainer"]),
        metric=rec["metric"],
        model_cid=rec["model_cid"],
        train_rows=rec["train_rows"],
        train_ms=rec["train_ms"],
        fee=rec["fee"],
        signature=bytes(rec["signature"]),
    )


class ChallengeHandler:
    def check(self, tx: ChallengeTx, params: NetworkParams) -> None:
        payload = signed_payload(params.genesis_hash, tx.unsigned_wire())
        if not verify(tx.challenger, DOMAIN_CHALLENGE, payload, tx.signature):
            raise ValidationError("bad-challenge-sig", "signature does not match the challenger")
        if tx.fee < params.min_challenge_fee:
            raise ValidationError("bad-challenge-fee", f"fee {tx.fee} < {params.min_challenge_fee}")

    def apply(self, tx: ChallengeTx, view: StateView, ctx: BlockContext) -> None:
        if ctx.challenges >= ctx.params.max_challenges_per_block:
            raise ValidationError(
                "too-many-challenges", f"over {ctx.params.max_challenges_per_block} in a block"
            )
        open_dispute(view, ctx, tx.result_id, tx.challenger)
        view.debit(tx.challenger, tx.fee)  # insufficient-funds
        ctx.fees += tx.fee
        ctx.challenges += 1


def open_dispute(view: StateView, ctx: BlockContext, result_id: bytes, by_key: bytes) -> None:
    """Dispute ``result_id`` on behalf of ``by_key`` (a challenge's rules and
    effects but its fee and per-block count); raise ValidationError if not
    allowed. Resolution is at ``ctx.height + dispute_delay``."""
    params = ctx.params
    rec = view.get(result_key(result_id))
    if rec is None:
        raise ValidationError("challenge-unknown-result", "no such result in this chain")
    if rec["dispute"] is not None:
        raise ValidationError("duplicate-challenge", "this result is or was disputed already")
    task = view.get(task_key(rec["task"]))
    resolve_at = ctx.height + params.dispute_delay
    if task["paid"] or (task["payout_at"] is not None and resolve_at > task["payout_at"]):
        raise ValidationError(
            "challenge-too-late", "the task pays out before the dispute could resolve"
        )
    bond = view.get(bond_key(by_key))
    if bond is None or bond["unbond_at"] is not None:
        raise ValidationError("challenge-no-bond", "the challenger holds no bond")
    open_now = bond.get("challenges", 0)
    if bond["amount"] < (open_now + 1) * params.challenge_stake:
        raise ValidationError(
            "challenge-no-bond",
            f"bond {bond['amount']} does not cover {open_now + 1} stakes of "
            f"{params.challenge_stake}",
        )
    view.put(bond_key(by_key), {**bond, "challenges": open_now + 1})
    lock_bond(view, by_key, result_id)
    dispute = {
        "by": by_key,
        "bond_at": bond["height"],  # the stake is in this bond, not a later one
        "at": ctx.height,
        "resolve_at": resolve_at,
        "outcome": PENDING,
        "reason": "",
    }
    view.put(result_key(result_id), {**rec, "status": "disputed", "dispute": dispute})
    view.put(dispute_key(resolve_at), [*view.get(dispute_key(resolve_at), []), result_id])


def resolve_due_disputes(view: StateView, ctx: BlockContext) -> None:
    """Block hook: re-run every result whose dispute resolves at this height."""
    due = view.get(dispute_key(ctx.height))
    if due is None:
        return
    for rid in due:
        rec = view.get(result_key(rid))
        task = view.get(task_key(rec["task"]))
        tx = result_tx(rec, task["seed"])
        verdict = ctx.dispute_verdict(tx, task, True)
        if verdict is None:
            raise MissingDataError(rec["model_cid"], f"dispute of {rid.hex()[:16]} not audited")
        if verdict:
            _void(view, ctx, rid, rec, verdict)
        else:
            _uphold(view, ctx, rid, rec)
    view.delete(dispute_key(ctx.height))


def _release_stake(view: StateView, dispute: dict[str, Any], rid: bytes, burn: int) -> None:
    """End one open challenge: unlock the challenger's bond, burn ``burn`` of
    it. A bond slashed meanwhile (its key's own result voided), or replaced
    by a later one, has nothing of this stake left to take."""
    challenger = dispute["by"]
    unlock_bond(view, challenger, rid)
    bond = view.get(bond_key(challenger))
    if bond is None or bond["height"] != dispute["bond_at"]:
        return
    left = bond["amount"] - burn
    bond = {**bond, "amount": left, "challenges": bond["challenges"] - 1}
    if not bond["challenges"]:
        del bond["challenges"]
    if left > 0:
        view.put(bond_key(challenger), bond)
    else:
        drop_bond(view, challenger)


def _uphold(view: StateView, ctx: BlockContext, rid: bytes, rec: dict[str, Any]) -> None:
    dispute = {**rec["dispute"], "outcome": UPHELD}
    view.put(result_key(rid), {**rec, "status": "ok", "dispute": dispute})
    _release_stake(view, rec["dispute"], rid, ctx.params.challenge_stake)


def _void(view: StateView, ctx: BlockContext, rid: bytes, rec: dict[str, Any], reason: str) -> None:
    challenger = rec["dispute"]["by"]
    dispute = {**rec["dispute"], "outcome": VOIDED, "reason": reason}
    view.put(result_key(rid), {**rec, "status": "void", "dispute": dispute})
    _release_stake(view, rec["dispute"], rid, 0)
    bond = view.get(bond_key(rec["trainer"]))
    if bond is not None:  # slashed by an earlier dispute: nothing left to take
        drop_bond(view, rec["trainer"])
        # A trainer that disputes its own result burns it all: else a cheat
        # would challenge itself first and keep the challenger's part.
        if challenger != rec["trainer"]:
            view.credit(challenger, int(bond["amount"] * ctx.params.challenge_slash_share))
    task = rerank(view, dict(view.get(task_key(rec["task"]))))
    if not task["open"]:
        task["payout"] = payout_of(view, task)
    view.put(task_key(rec["task"]), task)
