"""The cheating simulation of issue 15 on real node processes (regtest).

Two tasks, two honest training nodes, a watchtower, and per task cheaters of
the issue's kinds, driven from this process over a real libp2p host with
bonded dev keys: a model fitted on the holdout rows; a model fitted on
hand-picked rows (the holdout's, padded to the partition's size); and an
honest trainer's result copied under the cheater's own key. The first two
pass every cheap check and outscore the honest results, so the chain
includes them and they lead in turn; the watchtower audits each leader,
challenges it, and the dispute voids it. The copy fails the cheap checks
(the artifact's random_state is derived from another key) and never enters
a block. At the end no bounty went to a cheater, every included cheat's
bond is slashed, and no honest trainer lost anything.

(The issue's fourth kind, a miner withholding blocks to grind its result's
audit committee, is tests/functional/test_withholding_miner.py: its grind
succeeds and buys nothing, since a watchtower's challenge and the dispute
do not depend on the draw.)
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_diabetes

from p2pml.chain.encoding import encode_tx
from p2pml.chain.params import REGTEST, dev_identity
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.types import ResultTx
from p2pml.crypto import Identity
from p2pml.ml.artifact import dump_model
from p2pml.ml.dataset import parse_csv
from p2pml.ml.estimators import build_estimator
from p2pml.ml.metrics import compute_metric
from p2pml.ml.partition import derive_random_state, holdout_indices, partition_indices
from tests.framework.hostile_peer import HostilePeer
from tests.framework.testnode import NodeSet, TestNode, connect_nodes, sync_blocks
from tests.framework.waiting import wait_until, wait_until_sync

BOUNTY = 5_000
FEE = REGTEST.min_result_fee
# Per task: (holdout-fitted, hand-picked, copier) keys, all bonded in genesis.
CHEATERS = [
    (dev_identity(4), dev_identity(5), dev_identity(6)),
    (dev_identity(6), dev_identity(7), dev_identity(4)),
]


def balance(node: TestNode, key: str) -> int:
    return int(node.api.get(f"/balances/{key}")["balance"])


def cheat(
    view: dict[str, Any], task_id: str, csv: Path, who: Identity, rows_of: str
) -> tuple[ResultTx, bytes]:
    """A result of ``who`` claiming its partition's size but fitted on
    ``rows_of`` = "holdout" (the holdout itself) or "picked" (the holdout
    padded with the partition's first rows to the partition's size)."""
    spec = TaskSpec.from_wire(view["spec"])
    seed, tid = bytes.fromhex(view["seed"]), bytes.fromhex(task_id)
    data = parse_csv(csv, spec.kind, spec.target, spec.features, 10**9)
    hold = holdout_indices(seed, tid, data.n_rows, spec.holdout_fraction)
    part = partition_indices(
        seed,
        tid,
        who.public_key,
        0,
        data.n_rows,
        spec.holdout_fraction,
        spec.partition_fraction,
    )
    rows = hold
    if rows_of == "picked":
        rows = np.sort(np.concatenate([hold, part[: max(0, len(part) - len(hold))]]))
    model = build_estimator(
        spec.model, spec.param_dict, derive_random_state(seed, tid, who.public_key, 0)
    )
    model.fit(data.X[rows], data.y[rows])
    unsigned = ResultTx(
        task_id=tid,
        seed=seed,
        round=0,
        trainer=who.public_key,
        metric=compute_metric(spec.metric, model, data.X[hold], data.y[hold]),
        model_cid="",
        train_rows=len(part),
        train_ms=1,
        fee=FEE,
    )
    return unsigned, dump_model(model)


def publish(node: TestNode, txs: list[ResultTx], refused: bool = False) -> None:
    """Gossip ``txs`` from a fresh host; wait until all are pooled or, if
    ``refused``, until the node has banned the host for them (a false result)."""

    async def run() -> None:
        hp = HostilePeer("regtest")
        await hp.start()
        try:
            await hp.connect(node.status()["listen"][0])
            await hp.wait_subscribed(node.status()["peer_id"], "results")
            for tx in txs:
                await hp.publish_raw("results", encode_tx(tx))

            async def judged() -> bool:
                if refused:
                    st = await asyncio.to_thread(node.status)
                    return hp.peer_id in st["banned"]
                have = {t["id"] for t in await asyncio.to_thread(node.api.get, "/mempool")}
                return {tx.id.hex() for tx in txs} <= have

            await wait_until(judged, timeout=120, what="the results judged")
        finally:
            await hp.stop()

    asyncio.run(run())


def disputes(node: TestNode, task_ids: list[str]) -> list[dict[str, Any]]:
    return [d for t in task_ids for d in node.api.get(f"/tasks/{t}")["disputes"]]


def attest_pay(node: TestNode, key: str, task_ids: list[str]) -> int:
    """What ``key`` earned attesting these tasks' results as a committee
    member (docs/consensus.md "Audit committees"; nodes attest with fee 0)."""
    paid = 0
    for t in task_ids:
        for r in node.api.get(f"/tasks/{t}")["results"]:
            audit = node.api.get(f"/results/{r['id']}")["audit"]
            if any(at["attester"] == key for at in audit["attestations"]):
                paid += audit["hold"] // len(audit["committee"])
    return paid


def audits_done(node: TestNode) -> int:
    c = node.status()["challenges"]
    return int(c.get("dispute-false", 0)) + int(c.get("dispute-valid", 0))


def test_over_several_tasks_no_cheater_is_paid_and_every_included_cheat_is_slashed(
    nodes: NodeSet, tmp_path: Path
) -> None:
    a = nodes.add(node={"dev_key": 0})  # publishes and mines
    h1 = nodes.add(node={"dev_key": 1}, training={"enabled": True, "workers": 1})
    h2 = nodes.add(node={"dev_key": 2}, training={"enabled": True, "workers": 1})
    w = nodes.add(node={"dev_key": 3}, verification={"challenge_bad": True})
    everyone = [a, h1, h2, w]
    nodes.start_mesh()
    for n in everyone[1:]:
        connect_nodes(a, n)
    honest_keys = [h1.status()["public_key"], h2.status()["public_key"]]
    cheat_keys = {k.public_key.hex() for trio in CHEATERS for k in trio}

    csv = tmp_path / "diabetes.csv"
    load_diabetes(as_frame=True).frame.to_csv(csv, index=False)
    cid = a.api.upload("/datasets", csv)["cid"]
    task_ids = [
        a.api.post(
            "/tasks",
            {
                "dataset_cid": cid,
                "target": "target",
                "model": "ridge",
                "kind": "regression",
                "metric": "r2",
                "params": {"alpha": 0.001 * (i + 1)},
                "rounds": 1,
                "bounty": BOUNTY,
                "deadline": 40,
                "max_results": 8,
            },
        )["id"]
        for i in range(len(CHEATERS))
    ]
    a.mine(1)
    sync_blocks(everyone)
    # Both honest results of every task pooled before the cheats arrive.
    wait_until_sync(
        lambda: sum(tx["type"] == "result" for tx in a.api.get("/mempool")) == 2 * len(task_ids),
        240,
        what="the honest results at node a",
    )
    honest_results = {r["id"] for r in a.api.get("/results")}
    before = {k: balance(a, k) for k in [*honest_keys, *cheat_keys]}

    lies: list[ResultTx] = []
    copies: list[ResultTx] = []
    for task_id, (fitter, picker, copier) in zip(task_ids, CHEATERS, strict=True):
        view = a.api.get(f"/tasks/{task_id}")
        for who, kind in ((fitter, "holdout"), (picker, "picked")):
            unsigned, artifact = cheat(view, task_id, csv, who, kind)
            path = tmp_path / f"{task_id[:8]}-{kind}.skops"
            path.write_bytes(artifact)
            model_cid = a.api.upload("/datasets", path)["cid"]
            lies.append(
                dataclasses.replace(unsigned, model_cid=model_cid).signed_by(
                    who, REGTEST.genesis_hash
                )
            )
        honest = next(r for r in a.api.get(f"/results?task={task_id}"))
        copies.append(
            ResultTx(
                task_id=bytes.fromhex(task_id),
                seed=bytes.fromhex(view["seed"]),
                round=0,
                trainer=copier.public_key,
                metric=honest["metric"],
                model_cid=honest["model_cid"],
                train_rows=honest["train_rows"],
                train_ms=1,
                fee=FEE,
            ).signed_by(copier, REGTEST.genesis_hash)
        )
    publish(a, lies)  # pass the cheap checks: pooled and relayed
    publish(a, copies, refused=True)  # fail them: the sender is banned
    a.mine(1)
    sync_blocks(everyone)
    for task_id in task_ids:
        view = a.api.get(f"/tasks/{task_id}")
        assert len(view["results"]) == 4  # two honest, two cheats; no copy
        assert view["best"]["trainer"] in cheat_keys  # a cheat leads at first

    # Until every cheat is void: the watchtower challenges each leader that
    # fails its audit; blocks are mined once a challenge is pooled or a
    # dispute is pending, and only after every node has audited each dispute.
    lie_ids = {tx.id.hex() for tx in lies}

    def void() -> set[str]:
        return {d["result"] for d in disputes(a, task_ids) if d["outcome"] == "result-void"}

    while void() != lie_ids:
        wait_until_sync(
            lambda: (
                bool([tx for tx in a.api.get("/mempool") if tx["type"] == "challenge"])
                or any(d["outcome"] == "pending" for d in disputes(a, task_ids))
            ),
            240,
            what="a challenge or a pending dispute",
        )
        included = len(disputes(a, task_ids))
        for n in everyone:
            wait_until_sync(
                lambda n=n, k=included: audits_done(n) >= k,
                300,
                what=f"node {n.index} audited the {included} disputes",
            )
        a.mine(1)
        sync_blocks(everyone)
        assert a.height < 40, "every cheat should be void long before the deadline"

    # No wrong challenge, and every dispute is a cheat's.
    assert {d["result"] for d in disputes(a, task_ids)} == lie_ids
    for n in everyone:
        for tx in lies:
            assert n.api.get(f"/bonds/{tx.trainer.hex()}")["amount"] is None
        for key in honest_keys:
            assert n.api.get(f"/bonds/{key}")["amount"] == REGTEST.min_bond
    for task_id in task_ids:
        view = a.api.get(f"/tasks/{task_id}")
        assert view["best"]["trainer"] in honest_keys
        while not view["paid"]:
            a.mine(1)
            view = a.api.get(f"/tasks/{task_id}")
        assert {p["to"] for p in view["payout"]} & cheat_keys == set()
    sync_blocks(everyone)
    assert {r["id"] for r in a.api.get("/results")} >= honest_results
    assert not {r["id"] for r in a.api.get("/results")} & {tx.id.hex() for tx in copies}
    for k in cheat_keys:  # fees paid, nothing earned
        spent = FEE * sum(tx.trainer.hex() == k for tx in lies)
        assert balance(a, k) == before[k] - spent
    # The honest trainers got every bounty and lost nothing but their fees.
    # Besides, as committee members they may have earned attestation shares,
    # and a member whose failing attestation opened a cheat's dispute gets
    # the challenger's part of the slashed bond (once per slashed bond).
    share = int(REGTEST.min_bond * REGTEST.challenge_slash_share)
    paid = {k: 0 for k in honest_keys}
    for task_id in task_ids:
        for p in a.api.get(f"/tasks/{task_id}")["payout"]:
            if p["to"] in paid:
                paid[p["to"]] += p["amount"]
    assert sum(paid.values()) == len(task_ids) * BOUNTY
    openers = {d["challenger"] for d in disputes(a, task_ids)}
    for k in honest_keys:
        extra = balance(a, k) - before[k] - attest_pay(a, k, task_ids) - paid[k]
        extra += len(task_ids) * FEE  # each honest key sent one result per task
        assert extra % share == 0 and extra >= 0, (k, extra)
        assert extra == 0 or k in openers, (k, extra)
