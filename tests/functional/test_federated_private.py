"""Private federated rounds on real node processes (regtest, loopback),
protocol 6 (docs/federated.md §11).

Three bonded dev-key nodes each hold their own label-skewed digits file
(written here, mapped by ``[federated.private] digits``; never uploaded) and
take part in a private ``median`` sgd_classifier task scored on a public
validation CID. A fourth bonded dev key, driven from this process over a real
libp2p host, trains honestly on its own rows and publishes its update scaled
by -10 every round: the update is accepted by rule (private updates cannot be
re-executed), so the robust rule must absorb it. Every node commits the same
model hashes; each honest update is re-derived here from the node's file and
G_r (same CID: the node trained on its own file, from the committed model);
the final global model is within 2 points of the median of the honest
updates alone, while plain averaging of the same updates collapses.

Then a local-DP task on the same nodes: the epsilon the chain records after
each round close is the accountant's, ``task show`` prints it against the
budget, and a plan over its budget is refused with ``federated-epsilon``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier

from p2pml.chain.encoding import encode_tx
from p2pml.chain.params import REGTEST, dev_identity
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.types import UpdateTx
from p2pml.federated import rounds
from p2pml.federated.accountant import epsilon_spent
from p2pml.federated.encoding import canonical, decode, encode
from p2pml.federated.params import build
from p2pml.ipfs.cid import cid_of_bytes
from p2pml.ml.fedjobs import FedTrainRequest, fed_train_job
from tests.framework.cli import cli
from tests.framework.hostile_peer import HostilePeer
from tests.framework.testnode import NodeSet, TestNode, connect_nodes, sync_blocks
from tests.framework.waiting import wait_until, wait_until_sync

ROUNDS = 3
HONEST = 3
PARTICIPANTS = HONEST + 1  # the attacker takes a place in every round
BOUNTY = ROUNDS * 12_000
ATTACKER = dev_identity(3)
SCALE = -10.0
# Label skew: node i holds most rows of its own label group.
GROUPS = ({0, 1, 2, 3}, {4, 5, 6}, {7, 8, 9})
OWN_SHARE = 0.7


def write_files(tmp_path: Path) -> tuple[list[Path], Path, Path]:
    """The three honest files (non-IID), the attacker's rows, the validation CSV."""
    frame = load_digits(as_frame=True).frame
    frame.iloc[:, :-1] = frame.iloc[:, :-1] / 16.0
    rng = np.random.default_rng(16)
    order = rng.permutation(len(frame))
    validation, pool = frame.iloc[order[:450]], frame.iloc[order[450:]]
    owner = np.empty(len(pool), dtype=np.int64)
    for j, label in enumerate(pool["target"].to_numpy()):
        home = next(i for i, g in enumerate(GROUPS) if label in g)
        others = [i for i in range(HONEST) if i != home]
        owner[j] = home if rng.random() < OWN_SHARE else others[int(rng.integers(2))]
    files = []
    for i in range(HONEST):
        path = tmp_path / f"private{i}.csv"
        pool[owner == i].to_csv(path, index=False)
        files.append(path)
    attacker = tmp_path / "attacker.csv"
    pool.iloc[rng.permutation(len(pool))[:300]].to_csv(attacker, index=False)
    vpath = tmp_path / "validation.csv"
    validation.to_csv(vpath, index=False)
    return files, attacker, vpath


def fed_view(node: TestNode, task_id: str) -> dict[str, Any]:
    view: dict[str, Any] = node.api.get(f"/tasks/{task_id}")["federated"]
    return view


def pooled(node: TestNode, task_id: str, rnd: int) -> int:
    return sum(
        1
        for tx in node.api.get("/mempool")
        if tx["type"] == "update" and tx["task"] == task_id and tx["round"] == rnd
    )


def gossip_update(node: TestNode, tx: UpdateTx) -> None:
    """Publish ``tx`` on the updates topic from a fresh libp2p host; wait until pooled."""

    async def run() -> None:
        hp = HostilePeer("regtest")
        await hp.start()
        try:
            await hp.connect(node.status()["listen"][0])
            await hp.wait_subscribed(node.status()["peer_id"], "updates")
            await hp.publish_raw("updates", encode_tx(tx))

            async def in_pool() -> bool:
                have = await asyncio.to_thread(node.api.get, "/mempool")
                return tx.id.hex() in {t["id"] for t in have}

            await wait_until(in_pool, timeout=120, what="the attacker's update pooled")
        finally:
            await hp.stop()

    asyncio.run(run())


def accuracy(wire: dict[str, Any], g: Any, X: Any, y: Any) -> float:
    model = build(rounds.layout_of(wire), g, {}, rounds.classes_of(wire))
    return float((model.predict(X) == y).mean())


def train(spec: TaskSpec, tid: bytes, seed: bytes, who: bytes, rnd: int, g: bytes, f: Path) -> Any:
    req = FedTrainRequest(spec, tid, seed, who, rnd, g, None, private_file=str(f))
    return fed_train_job(req)


def run_round(nodes: list[TestNode], task_id: str, rnd: int, expected: int) -> None:
    a = nodes[0]
    wait_until_sync(
        lambda: pooled(a, task_id, rnd) == expected,
        240,
        what=f"the {expected} updates of round {rnd} in node a's mempool",
    )
    a.mine(1)  # the updates: the round is full
    sync_blocks(nodes)
    wait_until_sync(
        lambda: bool(fed_view(a, task_id)["next_model_ready"]), 120, what=f"G_{rnd + 1} at a"
    )
    a.mine(1)  # the round close
    sync_blocks(nodes)
    assert fed_view(a, task_id)["round"] == rnd + 1, fed_view(a, task_id)


def test_private_median_rounds_absorb_a_scaled_attacker_and_dp_is_accounted(
    nodes: NodeSet, tmp_path: Path
) -> None:
    files, attacker_file, vpath = write_files(tmp_path)
    trained = {"enabled": True, "workers": 1}
    trio = [
        nodes.add(
            node={"dev_key": i}, training=trained, federated={"private": {"digits": str(files[i])}}
        )
        for i in range(HONEST)
    ]
    a = trio[0]
    nodes.start_mesh()
    connect_nodes(a, trio[1])
    connect_nodes(a, trio[2])
    connect_nodes(trio[1], trio[2])
    vcid = str(a.api.upload("/datasets", vpath)["cid"])
    r = cli(
        a, "task", "publish", "--federated", "--model", "sgd_classifier",
        "--private", "digits", "--validation", vcid, "--target", "target",
        "--rounds", str(ROUNDS), "--participants", str(PARTICIPANTS), "--local-epochs", "2",
        "--aggregation", "median", "--clip", "10", "--round-blocks", "50",
        "--bounty", str(BOUNTY), "--json",
    )  # fmt: skip
    task_id = json.loads(r.stdout)["id"]
    a.mine(1)
    sync_blocks(trio)
    task = a.api.get(f"/tasks/{task_id}")
    wire, tid, seed = task["spec"], bytes.fromhex(task_id), bytes.fromhex(task["seed"])
    spec = TaskSpec.from_wire(wire)
    layout = rounds.layout_of(wire)
    assert wire["dataset_cid"] == vcid and wire["federated"]["private"] == "digits"
    val = pd.read_csv(vpath)
    Xv = val.drop(columns="target").to_numpy(dtype=np.float64)
    yv = val["target"].to_numpy(dtype=np.int64)
    keys = [bytes.fromhex(n.status()["public_key"]) for n in trio]

    g = rounds.initial(wire, seed)
    got: list[float] = []
    honest_only: list[float] = []
    averaged: list[float] = []
    for rnd in range(ROUNDS):
        start = encode(layout, g)
        own, _ = train(spec, tid, seed, ATTACKER.public_key, rnd, start, attacker_file)
        w = decode(layout, own)
        hostile = encode(layout, canonical(g + SCALE * (w - g)))
        path = tmp_path / f"hostile{rnd}.p2fl"
        path.write_bytes(hostile)
        cid = str(a.api.upload("/datasets", path)["cid"])
        tx = UpdateTx(
            tid, seed, rnd, ATTACKER.public_key, cid, 300, REGTEST.min_result_fee,
            base=rounds.round_hash(wire, g),
        )  # fmt: skip
        gossip_update(a, tx.signed_by(ATTACKER, REGTEST.genesis_hash))
        run_round(trio, task_id, rnd, PARTICIPANTS)

        closed = fed_view(a, task_id)["rounds"][rnd]
        listed = {bytes.fromhex(u["participant"]): u for u in closed["updates"]}
        assert set(listed) == {*keys, ATTACKER.public_key}
        honest = []
        for k, f in zip(keys, files, strict=True):
            art, n = train(spec, tid, seed, k, rnd, start, f)
            # The node trained from the committed G_r on its own file, all rows.
            assert listed[k]["update_cid"] == cid_of_bytes(art), (rnd, k.hex())
            assert listed[k]["n_samples"] == n
            honest.append((k, art, n))
        everyone = [*honest, (ATTACKER.public_key, hostile, 300)]
        nxt = rounds.next_global(wire, g, everyone)
        assert rounds.round_hash(wire, nxt).hex() == closed["model_hash"]
        ref = rounds.next_global(wire, g, honest)
        plain = {**wire, "federated": {**wire["federated"], "aggregation": "fedavg", "clip": 0.0}}
        averaged.append(accuracy(wire, rounds.next_global(plain, g, everyone), Xv, yv))
        g = nxt
        got.append(accuracy(wire, g, Xv, yv))
        honest_only.append(accuracy(wire, ref, Xv, yv))
        # Each node scored G_{r+1} on every validation row itself.
        assert abs(closed["metric"] - got[-1]) < 1e-12

    views = [fed_view(n, task_id) for n in trio]
    hashes = [[rd["model_hash"] for rd in v["rounds"]] for v in views]
    assert len(hashes[0]) == ROUNDS and hashes[0] == hashes[1] == hashes[2]
    assert views[0]["mode"] == "private" and views[0]["rule"] == "median"
    rows = pd.concat([pd.read_csv(f) for f in files])
    central = SGDClassifier(random_state=0).fit(
        rows.drop(columns="target").to_numpy(dtype=np.float64), rows["target"].to_numpy()
    )
    centralised = float((central.predict(Xv) == yv).mean())
    print(
        f"\nprivate median, {HONEST} label-skewed nodes + a {SCALE:g}x attacker, {ROUNDS} rounds,"
        f" validation {len(yv)} rows: accuracy per round {[round(x, 4) for x in got]};"
        f" median of the honest updates alone {[round(x, 4) for x in honest_only]};"
        f" plain fedavg of the same updates {[round(x, 4) for x in averaged]};"
        f" centralised on the union of the files {centralised:.4f}"
    )
    assert got[-1] > 0.8, got
    assert abs(got[-1] - honest_only[-1]) <= 0.02, (got, honest_only)
    assert averaged[-1] < got[-1] - 0.2, averaged  # the attack is real
    closed_task = a.api.get(f"/tasks/{task_id}")
    assert closed_task["status"] == "closed"
    # Equal shares per accepted update (the counts are unverifiable): the
    # attacker's updates were accepted by rule, so it is paid like the others.
    shares = {p["to"]: p["amount"] for p in closed_task["payout"][:PARTICIPANTS]}
    per_update = BOUNTY // ROUNDS // PARTICIPANTS
    assert shares == {k.hex(): ROUNDS * per_update for k in [*keys, ATTACKER.public_key]}
    shown = cli(a, "task", "show", task_id).stdout
    assert "mode: private (digits), rule median, clip 10" in shown, shown

    # -- local DP: the epsilon recorded per round, and the budget --------------------
    over = cli(
        a, "task", "publish", "--federated", "--model", "sgd_classifier",
        "--private", "digits", "--validation", vcid, "--target", "target", "--rounds", "2",
        "--participants", str(HONEST), "--aggregation", "fedavg", "--clip", "1",
        "--noise-multiplier", "0.5", "--epsilon", "1", "--delta", "1e-5", "--json",
        check=False,
    )  # fmt: skip
    assert over.returncode != 0 and "federated-epsilon" in over.stderr + over.stdout, over
    r = cli(
        a, "task", "publish", "--federated", "--model", "sgd_classifier",
        "--private", "digits", "--validation", vcid, "--target", "target", "--rounds", "2",
        "--participants", str(HONEST), "--aggregation", "fedavg", "--clip", "1",
        "--epsilon", "20", "--delta", "1e-5", "--round-blocks", "50", "--json",
    )  # fmt: skip
    dp_id = json.loads(r.stdout)["id"]
    a.mine(1)
    sync_blocks(trio)
    f = a.api.get(f"/tasks/{dp_id}")["spec"]["federated"]
    z = f["noise_multiplier"]
    assert z > 0 and epsilon_spent(z, 1.0, 2, 1e-5) <= 20.0  # the smallest z within 20
    for rnd in range(2):
        run_round(trio, dp_id, rnd, HONEST)
        for n in trio:
            view = fed_view(n, dp_id)
            assert view["epsilon_spent"] == epsilon_spent(z, 1.0, rnd + 1, 1e-5), view
    shown = cli(a, "task", "show", dp_id).stdout
    assert f"epsilon spent {epsilon_spent(z, 1.0, 2, 1e-5):.6f} of budget 20" in shown, shown
