"""Delayed payouts: a task's bounty and refund are credited ``payout_window``
blocks after it closes, not at close.

At close the chain fixes who gets what (``task["payout"]``) and the height
it is paid (``task["payout_at"]``), and lists the task under
``po:<height u64>``. The block hook of that height credits the payout, marks
the task ``paid`` and unlocks the bonds of every trainer with a result in
it, and of every participant with an update in a federated task
(:mod:`p2pml.chain.bonds`). The window is where later slices put
challenges; reorgs undo all of it (undo-logged ``StateView``).
"""

from __future__ import annotations

from p2pml.chain.bonds import unlock_bond
from p2pml.chain.ledger import BlockContext, StateView
from p2pml.chain.taskkeys import fed_key, result_key, task_key


def payout_key(height: int) -> bytes:
    return b"po:" + height.to_bytes(8, "big")


def schedule_payout(view: StateView, task_id: bytes, height: int) -> None:
    view.put(payout_key(height), [*view.get(payout_key(height), []), task_id])


def pay_due_tasks(view: StateView, ctx: BlockContext) -> None:
    """Block hook: pay the tasks whose window ends at this height."""
    due = view.get(payout_key(ctx.height))
    if due is None:
        return
    for tid in due:
        task = dict(view.get(task_key(tid)))
        for pubkey, amount in task["payout"]:
            view.credit(pubkey, amount)
        for rid in task["results"]:
            unlock_bond(view, view.get(result_key(rid))["trainer"], tid)
        fed = view.get(fed_key(tid))
        if fed is not None:  # a federated task: every update it included locked
            rounds = [ups for _height, ups in fed["closed"]]
            for participant in {p for ups in [*rounds, fed["updates"]] for p, _cid, _n in ups}:
                unlock_bond(view, participant, tid)
        task["paid"] = True
        view.put(task_key(tid), task)
    view.delete(payout_key(ctx.height))
