"""Audit committees: which results are re-trained, by whom, and their attestations.

docs/consensus.md "Audit committees" is the specification; in short:

* A result included at height ``h`` gets its **beacon** from the block at
  ``b = h + audit_delay``: that block's hash. The block hook of height
  ``b`` (:func:`draw_due_audits`) draws, from the beacon, whether the result
  is **selected** (always if it is then a winner of its task's bounty, else
  ``SHA-256("p2pml-audit" || beacon || result id)`` read as a big-endian
  u64 from its first 8 bytes is below ``floor(audit_fraction * 2^64)``), and
  for a selected result its **committee**: the first ``committee_size``
  keys eligible at ``b`` (bond >= ``min_bond``, not unbonding, registered
  at least ``bond_maturity`` blocks before ``b``, not the trainer) in the
  order of a Fisher-Yates shuffle of the sorted bonded-key index, drawn
  lazily from ``SHA-256("p2pml-committee" || beacon || result id || j)``
  (protocol 6; :func:`committee_positions`): O(committee_size) steps when
  most bonded keys are eligible, not a rank of every bonded key.
* Whoever includes the result does not know the beacon: to choose the
  outcome it must also mine the ``audit_delay`` blocks after it and throw
  away the ones whose hash draws badly, a block of work per try.
* ``AttestTx`` (tag 7): a committee member's verdict, valid in the blocks
  ``b + 1 .. b + attest_window``, once per member. The including block
  credits the member ``hold // len(committee)``, where ``hold`` is the part
  ``attest_fee_share`` of the result's fee the result's block held back from
  its miner. Shares of members that never attest, the division's remainder,
  and the hold of a result that is not selected are burned (credited to
  nobody): nobody gains by censoring an attestation or by a draw's outcome.
* A failing attestation is recorded only; voiding a result is the dispute
  path's job (p2pml/chain/disputes.py, in the disputes branch).

State (undo-logged): the result record (``rid:<id>``) gains ``beacon_at``,
``attestations`` (``[attester, passed, height]`` in inclusion order) and
``audit`` (``{"hold", "beacon", "selected", "committee", "until"}``, the last
four None/empty until the beacon); ``aq:<height u64>`` lists the results
whose beacon is that height, kept until their attest window ends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

from p2pml.chain.bonds import BONDED_KEY, bond_key
from p2pml.chain.ledger import BlockContext, StateView
from p2pml.chain.params import NetworkParams
from p2pml.chain.taskkeys import result_key, task_key
from p2pml.chain.types import DOMAIN_ATTEST, AttestTx, ResultTx, signed_payload
from p2pml.crypto import verify
from p2pml.errors import ValidationError

AUDIT_TAG = b"p2pml-audit"
COMMITTEE_TAG = b"p2pml-committee"
SHARE_SCALE = 10_000  # attest_fee_share is applied in units of 1/10,000


def audit_queue_key(height: int) -> bytes:
    return b"aq:" + height.to_bytes(8, "big")


def fee_hold(params: NetworkParams, fee: int) -> int:
    """The part of a result's fee held back for its committee."""
    return fee * round(params.attest_fee_share * SHARE_SCALE) // SHARE_SCALE


def miner_fee(params: NetworkParams, tx: Any) -> int:
    """What a pool transaction pays the miner that includes it: its fee,
    less the hold for a result's committee."""
    fee = int(tx.fee)
    return fee - fee_hold(params, fee) if isinstance(tx, ResultTx) else fee


def audit_draw(beacon: bytes, result_id: bytes) -> int:
    return int.from_bytes(hashlib.sha256(AUDIT_TAG + beacon + result_id).digest()[:8], "big")


def is_selected(params: NetworkParams, beacon: bytes, result_id: bytes, winner: bool) -> bool:
    """Whether the beacon sends this result to a committee."""
    if winner or params.audit_fraction >= 1.0:
        return True
    return audit_draw(beacon, result_id) < int(params.audit_fraction * 2**64)


def committee_positions(beacon: bytes, result_id: bytes, n: int) -> Iterator[int]:
    """Positions ``0 .. n-1`` of the bonded-key index in the order the draw
    visits them: a Fisher-Yates shuffle run lazily, one step per position
    taken. Step ``j`` swaps ``j`` with ``j + d mod (n - j)``, ``d`` the first
    8 bytes, big-endian, of ``SHA-256("p2pml-committee" || beacon ||
    result id || u32 BE j)``, and yields what lands at ``j``. O(1) per step:
    only the swapped places are remembered."""
    moved: dict[int, int] = {}
    for j in range(n):
        digest = hashlib.sha256(COMMITTEE_TAG + beacon + result_id + j.to_bytes(4, "big")).digest()
        r = j + int.from_bytes(digest[:8], "big") % (n - j)
        pick = moved.get(r, r)
        moved[r] = moved.pop(j, j)
        yield pick


def eligible_auditor(bond: dict[str, Any] | None, params: NetworkParams, height: int) -> bool:
    return (
        bond is not None
        and bond["amount"] >= params.min_bond
        and bond["unbond_at"] is None
        and bond["height"] + params.bond_maturity <= height
    )


def draw_committee(
    view: StateView,
    params: NetworkParams,
    beacon: bytes,
    height: int,
    result_id: bytes,
    trainer: bytes,
) -> list[bytes]:
    """The committee of a result whose beacon is the block at ``height``:
    the first ``committee_size`` eligible keys in the shuffled order of the
    bonded-key index. Reads one bond per key visited: ``committee_size``
    when every bonded key is eligible, ``committee_size x bonded / eligible``
    expected otherwise (an ineligible key is a bond locked for nothing)."""
    keys = view.get(BONDED_KEY, [])
    out: list[bytes] = []
    for pos in committee_positions(beacon, result_id, len(keys)):
        k = bytes(keys[pos])
        if k != trainer and eligible_auditor(view.get(bond_key(k)), params, height):
            out.append(k)
            if len(out) == params.committee_size:
                break
    return out


def schedule_audit(view: StateView, ctx: BlockContext, result_id: bytes, fee: int) -> int:
    """At a result's inclusion: queue it for its beacon; returns the part of
    its fee held back for the committee (the caller keeps it from the miner)."""
    beacon_at = ctx.height + ctx.params.audit_delay
    queue = audit_queue_key(beacon_at)
    view.put(queue, [*view.get(queue, []), result_id])
    return fee_hold(ctx.params, fee)


def audit_fields(params: NetworkParams, height: int, hold: int) -> dict[str, Any]:
    """The fields a result record starts with."""
    return {
        "beacon_at": height + params.audit_delay,
        "attestations": [],
        "audit": {"hold": hold, "beacon": None, "selected": None, "committee": [], "until": None},
    }


def draw_due_audits(view: StateView, ctx: BlockContext) -> None:
    """Block hook: this block is the beacon of the results queued at its
    height; and the queue whose attest window ended is dropped."""
    p = ctx.params
    for rid in view.get(audit_queue_key(ctx.height), []):
        rec = dict(view.get(result_key(rid)))
        task = view.get(task_key(rec["task"]))
        winner = any(bytes(w[1]) == rid for w in task["winners"])
        selected = is_selected(p, ctx.block_hash, rid, winner)
        committee = (
            draw_committee(view, p, ctx.block_hash, ctx.height, rid, rec["trainer"])
            if selected
            else []
        )
        rec["audit"] = {
            **rec["audit"],
            "beacon": ctx.block_hash,
            "selected": selected,
            "committee": committee,
            "until": ctx.height + p.attest_window,
        }
        view.put(result_key(rid), rec)
    old = ctx.height - p.attest_window
    if old >= 0 and view.get(audit_queue_key(old)) is not None:
        view.delete(audit_queue_key(old))


# (view, ctx, result id, by key): what a failing attestation opens (a dispute,
# p2pml.chain.disputes.open_dispute; given by txrules, which knows both).
OnFail = Callable[[StateView, BlockContext, bytes, bytes], None]


class AttestHandler:
    def __init__(self, on_fail: OnFail) -> None:
        self._on_fail = on_fail

    def check(self, tx: AttestTx, params: NetworkParams) -> None:
        payload = signed_payload(params.genesis_hash, tx.unsigned_wire())
        if not verify(tx.attester, DOMAIN_ATTEST, payload, tx.signature):
            raise ValidationError("bad-attest-sig", "signature does not match the attester")

    def apply(self, tx: AttestTx, view: StateView, ctx: BlockContext) -> None:
        rec = view.get(result_key(tx.result_id))
        if rec is None:
            raise ValidationError("attest-unknown-result", "no such result in this chain")
        audit = rec["audit"]
        if ctx.height <= rec["beacon_at"]:
            raise ValidationError(
                "attest-too-early", f"the committee is drawn at height {rec['beacon_at']}"
            )
        if not audit["selected"]:
            raise ValidationError("attest-not-selected", "the beacon did not select the result")
        if ctx.height > audit["until"]:
            raise ValidationError("attest-too-late", f"attestations ended at {audit['until']}")
        committee = [bytes(k) for k in audit["committee"]]
        if tx.attester not in committee:
            raise ValidationError("not-in-committee", "the attester is not in the committee")
        if any(bytes(a[0]) == tx.attester for a in rec["attestations"]):
            raise ValidationError("duplicate-attest", "this member attested the result already")
        # Paid before its fee, so a member may pay the fee from its share.
        view.credit(tx.attester, audit["hold"] // len(committee))
        view.debit(tx.attester, tx.fee)  # insufficient-funds
        ctx.fees += tx.fee
        attestations = [*rec["attestations"], [tx.attester, tx.passed, ctx.height]]
        view.put(result_key(tx.result_id), {**rec, "attestations": attestations})
        # A failing attestation is a challenge by the member (its bond at
        # stake, the same rules), counted against the block's challenge cap
        # (each dispute is a full re-run on every node). It is recorded and
        # paid whatever happens: one dispute per result, so a later failing
        # member only records its verdict, and a member whose bond cannot
        # take the stake, or a block at its cap, opens none; refusing the
        # attestation would pay members to say "pass" without auditing.
        if (
            not tx.passed
            and rec["dispute"] is None
            and ctx.challenges < ctx.params.max_challenges_per_block
        ):
            trial = view.child()
            try:
                self._on_fail(trial, ctx, tx.result_id, tx.attester)
            except ValidationError:
                return
            view.merge(trial)
            ctx.challenges += 1
