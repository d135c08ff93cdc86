"""Disputes on real node processes (regtest): optimistic inclusion, a
watchtower's challenge, slashing, and the bounty moved to the honest result.

Mallory (a bonded dev key, driven from this process over a real libp2p host)
reports a model fitted on the task's own holdout rows: its holdout metric is
far above the honest trainer's and it passes every cheap check, so the chain
includes it and it leads the task. The watchtower node fully audits the
leader, finds it false and challenges it; node a meanwhile challenges the
honest result wrongly. At the resolution height every node re-runs both
audits: Mallory's result is void and its bond slashed (half to the
watchtower), a's stake is burned, and the bounty goes to the honest trainer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from sklearn.datasets import load_diabetes

from p2pml.chain.encoding import encode_tx
from p2pml.chain.params import REGTEST, dev_identity
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.types import ResultTx
from p2pml.ml.artifact import dump_model
from p2pml.ml.dataset import parse_csv
from p2pml.ml.estimators import build_estimator
from p2pml.ml.metrics import compute_metric
from p2pml.ml.partition import derive_random_state, holdout_indices, partition_indices
from tests.framework.cli import cli
from tests.framework.hostile_peer import HostilePeer
from tests.framework.testnode import NodeSet, TestNode, connect_nodes, sync_blocks
from tests.framework.waiting import wait_until, wait_until_sync

BOUNTY = 9_000
MALLORY = dev_identity(5)  # bonded in genesis: only the dispute can stop it
SHARE = int(REGTEST.min_bond * REGTEST.challenge_slash_share)


def balance(node: TestNode, key: str) -> int:
    return int(node.api.get(f"/balances/{key}")["balance"])


def pooled(node: TestNode, kind: str) -> list[dict[str, Any]]:
    return [tx for tx in node.api.get("/mempool") if tx["type"] == kind]


def holdout_cheat(view: dict[str, Any], task_id: str, csv: Path) -> tuple[ResultTx, bytes]:
    """Mallory's result: right class, params, random_state and claimed rows,
    but fitted on the holdout rows the metric is computed on."""
    spec = TaskSpec.from_wire(view["spec"])
    seed, tid = bytes.fromhex(view["seed"]), bytes.fromhex(task_id)
    data = parse_csv(csv, spec.kind, spec.target, spec.features, 10**9)
    hold = holdout_indices(seed, tid, data.n_rows, spec.holdout_fraction)
    rows = partition_indices(
        seed,
        tid,
        MALLORY.public_key,
        0,
        data.n_rows,
        spec.holdout_fraction,
        spec.partition_fraction,
    )
    rs = derive_random_state(seed, tid, MALLORY.public_key, 0)
    model = build_estimator(spec.model, spec.param_dict, rs)
    model.fit(data.X[hold], data.y[hold])
    metric = compute_metric(spec.metric, model, data.X[hold], data.y[hold])
    artifact = dump_model(model)
    unsigned = ResultTx(
        task_id=tid,
        seed=seed,
        round=0,
        trainer=MALLORY.public_key,
        metric=metric,
        model_cid="",
        train_rows=len(rows),
        train_ms=1,
        fee=REGTEST.min_result_fee,
    )
    return unsigned, artifact


def gossip_result(node: TestNode, tx: ResultTx) -> None:
    async def run() -> None:
        hp = HostilePeer("regtest")
        await hp.start()
        try:
            await hp.connect(node.status()["listen"][0])
            await hp.wait_subscribed(node.status()["peer_id"], "results")
            await hp.publish_raw("results", encode_tx(tx))

            async def pooled_there() -> bool:
                txs = await asyncio.to_thread(node.api.get, "/mempool")
                return any(t["id"] == tx.id.hex() for t in txs)

            await wait_until(pooled_there, timeout=120, what="Mallory's result pooled")
        finally:
            await hp.stop()

    asyncio.run(run())


def test_a_watchtower_voids_a_holdout_cheat_and_a_wrong_challenge_costs_its_stake(
    nodes: NodeSet, tmp_path: Path
) -> None:
    # No committee attests here (`attest = false`): a member's failing
    # attestation would open the cheat's dispute before the watchtower's
    # challenge could (tests/functional/test_cheating_simulation.py runs both).
    a = nodes.add(node={"dev_key": 0, "attest": False})  # publishes, mines, challenges wrongly
    h = nodes.add(node={"dev_key": 1, "attest": False}, training={"enabled": True, "workers": 1})
    w = nodes.add(node={"dev_key": 3, "attest": False}, verification={"challenge_bad": True})
    trio = [a, h, w]
    nodes.start_mesh()
    connect_nodes(a, h)
    connect_nodes(a, w)
    ak, hk, wk = (n.status()["public_key"] for n in trio)
    mk = MALLORY.public_key.hex()

    csv = tmp_path / "diabetes.csv"
    load_diabetes(as_frame=True).frame.to_csv(csv, index=False)
    cid = a.api.upload("/datasets", csv)["cid"]
    task_id = a.api.post(
        "/tasks",
        {
            "dataset_cid": cid,
            "target": "target",
            "model": "ridge",
            "kind": "regression",
            "metric": "r2",
            # Weakly regularised: a fit on the holdout itself scores far
            # above any honest fit there (with ridge's default the penalty
            # dominates diabetes' small-scaled features and more rows win).
            "params": {"alpha": 0.001},
            "rounds": 1,
            "bounty": BOUNTY,
            "deadline": 30,
            "max_results": 5,
        },
    )["id"]
    a.mine(1)
    sync_blocks(trio)
    view = a.api.get(f"/tasks/{task_id}")

    # The cheat: its artifact is in IPFS like any trainer's, its claim signed.
    unsigned, artifact = holdout_cheat(view, task_id, csv)
    with tempfile.NamedTemporaryFile(dir=tmp_path, suffix=".skops", delete=False) as f:
        f.write(artifact)
    model_cid = a.api.upload("/datasets", Path(f.name))["cid"]
    cheat = dataclasses.replace(unsigned, model_cid=model_cid).signed_by(
        MALLORY, REGTEST.genesis_hash
    )
    wait_until_sync(lambda: pooled(a, "result"), 180, what="the honest result at node a")
    gossip_result(a, cheat)  # passes the cheap checks: pooled and relayed

    # Optimistic inclusion: both results in one block, Mallory's leads.
    before = {k: balance(a, k) for k in (ak, hk, wk, mk)}
    a.mine(1)
    sync_blocks(trio)
    view = a.api.get(f"/tasks/{task_id}")
    assert len(view["results"]) == 2
    assert view["best"]["trainer"] == mk and view["best"]["metric"] == cheat.metric
    honest = next(r for r in view["results"] if r["trainer"] == hk)
    assert cheat.metric > honest["metric"]
    assert all(r["verdict"] == "ok" and r["dispute"] is None for r in view["results"])

    # The watchtower audits the leader and challenges it; a challenges the
    # honest result (p2pml challenge), which the audit will uphold.
    wait_until_sync(
        lambda: any(tx["result"] == cheat.id.hex() for tx in pooled(a, "challenge")),
        240,
        what="the watchtower's challenge at node a",
    )
    out = cli(a, "challenge", honest["id"]).stdout
    assert "challenged" in out
    assert a.api.get(f"/results/{honest['id']}")["challenge_pending"]
    a.mine(1)
    sync_blocks(trio)
    at = a.height
    for rid in (cheat.id.hex(), honest["id"]):
        d = a.api.get(f"/results/{rid}")["dispute"]
        assert d["outcome"] == "pending" and d["resolve_at"] == at + REGTEST.dispute_delay
    assert a.api.get(f"/bonds/{ak}")["locked_by"] == [honest["id"]]
    r = cli(a, "unbond", check=False)
    assert r.returncode != 0 and "bond-locked" in r.stderr + r.stdout

    # Every node audits both disputed results before the resolution height.
    for n in trio:
        wait_until_sync(
            lambda n=n: (
                n.status()["challenges"].get("dispute-false", 0) >= 1
                and n.status()["challenges"].get("dispute-valid", 0) >= 1
            ),
            300,
            what=f"node {n.index}'s audits of the disputed results",
        )
    a.mine(REGTEST.dispute_delay)
    sync_blocks(trio)
    for n in trio:
        got = n.api.get(f"/results/{cheat.id.hex()}")
        assert got["verdict"] == "void"
        assert got["dispute"]["outcome"] == "result-void"
        assert got["dispute"]["reason"] == "bad-result-audit"
        assert got["dispute"]["challenger"] == wk
        upheld = n.api.get(f"/results/{honest['id']}")
        assert upheld["verdict"] == "ok" and upheld["dispute"]["outcome"] == "result-valid"
        assert n.api.get(f"/bonds/{mk}")["amount"] is None  # slashed whole
        assert n.api.get(f"/bonds/{ak}")["amount"] is None  # a's stake: its whole bond here
    assert balance(a, wk) == before[wk] - REGTEST.min_challenge_fee + SHARE
    view = a.api.get(f"/tasks/{task_id}")
    assert view["best"]["trainer"] == hk
    assert {d["result"]: d["outcome"] for d in view["disputes"]} == {
        cheat.id.hex(): "result-void",
        honest["id"]: "result-valid",
    }

    # The bounty goes to the honest trainer after the window; Mallory gets nothing.
    while not view["paid"]:
        a.mine(1)
        view = a.api.get(f"/tasks/{task_id}")
    sync_blocks(trio)
    fee = REGTEST.min_result_fee
    assert balance(h, hk) == before[hk] - fee + BOUNTY
    assert balance(h, mk) == before[mk] - fee
