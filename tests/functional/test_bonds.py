"""Trainer bonds, result fees and delayed payouts on real node processes
(regtest): a training node with a new key bonds itself once it has coins and
its results count; one that does not bond has its results refused
("no-bond"); the bounty is credited a window after close; ``p2pml unbond``
is refused while a result of the key is unpaid, then releases the bond after
the network's delay; ``p2pml bond`` below the minimum is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from p2pml.chain.params import REGTEST
from tests.framework.cli import cli
from tests.framework.tasks import publish_ridge_task, upload_diabetes
from tests.framework.testnode import (
    NodeSet,
    TestNode,
    connect_nodes,
    sync_blocks,
    sync_mempools,
)
from tests.framework.waiting import wait_until_sync

MIN = REGTEST.min_bond
BOND_FEE = REGTEST.min_bond_fee
RESULT_FEE = REGTEST.min_result_fee
BOUNTY = 7_777


def balance(node: TestNode, key: str) -> int:
    return int(node.api.get(f"/balances/{key}")["balance"])


def pooled(node: TestNode, kind: str, who: str) -> bool:
    return any(
        tx["type"] == kind and who in (tx.get("trainer"), tx.get("sender"))
        for tx in node.api.get("/mempool")
    )


def mine_synced(miner: TestNode, everyone: list[TestNode], n: int = 1) -> None:
    miner.mine(n)
    sync_blocks(everyone)


def test_bonded_trainers_fees_and_delayed_payouts(nodes: NodeSet, tmp_path: Path) -> None:
    a = nodes.add(node={"dev_key": 0})  # publishes and mines
    fresh = nodes.add(training={"enabled": True, "workers": 1})  # new key, auto_bond
    lazy = nodes.add(training={"enabled": True, "workers": 1, "auto_bond": False})
    trio = [a, fresh, lazy]
    nodes.start_mesh()
    connect_nodes(a, fresh)
    connect_nodes(a, lazy)
    fk, lk = fresh.status()["public_key"], lazy.status()["public_key"]
    assert a.api.get(f"/bonds/{fk}")["amount"] is None  # no coins: no bond

    # Coins for both; the auto-bonding node bonds at the tip that funds it.
    for key in (fk, lk):
        a.api.post("/transfers", {"recipient": key, "amount": 3 * MIN})
    mine_synced(a, trio)
    wait_until_sync(lambda: pooled(a, "bond", fk), 60, what="fresh's automatic bond at node a")
    mine_synced(a, trio)
    bond = a.api.get(f"/bonds/{fk}")
    assert bond["amount"] == MIN and bond["unbond_at"] is None
    assert balance(a, fk) == 3 * MIN - MIN - BOND_FEE
    assert a.api.get(f"/bonds/{lk}")["amount"] is None
    r = cli(lazy, "bond", str(MIN - 1), check=False)
    assert r.returncode != 0 and "bad-bond-amount" in r.stderr + r.stdout

    # A task: the bonded key's result counts, the unbonded one's is refused.
    cid = upload_diabetes(a, tmp_path)
    task_id = publish_ridge_task(a, cid, bounty=BOUNTY, deadline=6, max_results=2)
    mine_synced(a, trio)

    def refused_no_bond() -> bool:
        return any(f["reason"] == "no-bond" for f in lazy.api.get(f"/tasks/{task_id}")["failures"])

    wait_until_sync(lambda: pooled(a, "result", fk) or _result_of(a, fk), 180, what="fresh result")
    wait_until_sync(refused_no_bond, 180, what="lazy's result refused for want of a bond")
    sync_mempools([a, fresh])
    mine_synced(a, trio)
    view = a.api.get(f"/tasks/{task_id}")
    assert [r["trainer"] for r in view["results"]] == [fk]
    assert balance(a, fk) == 3 * MIN - MIN - BOND_FEE - RESULT_FEE
    assert a.api.get(f"/bonds/{fk}")["locked_by"] == [task_id]

    # Its bond is locked while the task can still pay the result.
    r = cli(fresh, "unbond", check=False)
    assert r.returncode != 0 and "bond-locked" in r.stderr + r.stdout

    while view["status"] == "open":
        mine_synced(a, trio)
        view = a.api.get(f"/tasks/{task_id}")
    assert view["payout_height"] == view["closed_at"] + REGTEST.payout_window
    assert (
        not view["paid"]
        and f"pays at height {view['payout_height']}" in cli(a, "task", "show", task_id).stdout
    )
    unpaid = balance(a, fk)
    while a.height < view["payout_height"]:
        assert balance(a, fk) == unpaid  # not before the window ends
        mine_synced(a, trio)
    view = a.api.get(f"/tasks/{task_id}")
    assert view["paid"] and balance(a, fk) == unpaid + BOUNTY

    # Paid: the bond may go, and comes back after the unbond delay.
    out = cli(fresh, "unbond").stdout
    assert "unbond" in out
    sync_mempools([a, fresh])
    mine_synced(a, trio)
    bond = a.api.get(f"/bonds/{fk}")
    assert bond["unbond_at"] == a.height + REGTEST.unbond_delay
    mine_synced(a, trio, REGTEST.unbond_delay)
    assert a.api.get(f"/bonds/{fk}")["amount"] is None
    assert balance(a, fk) == unpaid + BOUNTY - BOND_FEE + MIN


def _result_of(node: TestNode, trainer: str) -> Any:
    return [r for r in node.api.get("/results") if r["trainer"] == trainer]
