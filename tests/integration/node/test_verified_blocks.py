"""Blocks with false results, checked by the node's real verifier: the models
are re-run in the process pool against a content-addressed store.

    G - b1(task) - b2(result)       one b2 per kind of lie; each is rejected
                                    with its reason and the tip stays at b1
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sklearn.datasets import load_diabetes

from p2pml.chain.bonds import bond_key
from p2pml.chain.index import ChainUpdate
from p2pml.chain.params import REGTEST, dev_identity
from p2pml.chain.taskkeys import result_key
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.types import Block, ChallengeTx, ResultTx, TaskTx
from p2pml.config import TrainingSettings
from p2pml.crypto import Identity
from p2pml.ml.artifact import dump_model
from p2pml.ml.dataset import parse_csv
from p2pml.ml.estimators import build_estimator
from p2pml.ml.metrics import compute_metric
from p2pml.ml.partition import derive_random_state, holdout_indices, partition_indices
from p2pml.ml.pool import TrainingPool
from p2pml.ml.trainer import Trainer
from p2pml.node.verifier import Verifier
from tests.framework.chainbuilder import Builder, Node
from tests.integration.ml.conftest import DirStore

pytestmark = pytest.mark.asyncio(loop_scope="module")

PUB = dev_identity(0)
ALICE = dev_identity(1)
# Bonded (a dev key): what must catch its lies is the verification, not the bond.
MALLORY = dev_identity(5)


@dataclasses.dataclass
class World:
    builder: Builder
    store: DirStore
    trainer: Trainer
    verifier: Verifier
    csv: Path
    spec: TaskSpec
    task: TaskTx
    b1: Block

    def node(self) -> Node:
        n = Node()
        n.chain.verdicts = self.verifier.verdict
        n.feed(self.b1).raise_error()
        return n

    async def feed(self, n: Node, block: Block) -> ChainUpdate:
        """Feed a block the way the node does: verify what it waits for, retry."""
        up = n.feed(block)
        rounds = 0
        while up.waiting and rounds < 5:
            missing = await self.verifier.resolve(self.verifier.take_wanted())
            if missing:
                return up
            up = n.chain.retry_waiting()
            n.source.apply(up)
            rounds += 1
        return up

    def result(self, who: Identity, **kw: Any) -> ResultTx:
        fields: dict[str, Any] = dict(
            task_id=self.task.id,
            seed=self.b1.hash,
            round=0,
            trainer=who.public_key,
            metric=0.0,
            model_cid="",
            train_rows=0,
            train_ms=1,
            fee=1_000,
        )
        fields.update(kw)
        return ResultTx(**fields).signed_by(who, REGTEST.genesis_hash)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("verified")
    csv = tmp / "diabetes.csv"
    load_diabetes(as_frame=True).frame.to_csv(csv, index=False)
    store = DirStore(tmp / "store")
    cid = await store.add(csv)
    pool = TrainingPool(2)
    await pool.start()
    trainer = Trainer(store, pool, TrainingSettings(enabled=True, max_job_seconds=120))
    verifier = Verifier(store, trainer)
    spec = TaskSpec(
        dataset_cid=cid,
        target="target",
        model="ridge",
        kind="regression",
        metric="r2",
        params=(("alpha", 0.5),),
        rounds=1,
    )
    task = TaskTx(
        spec=spec,
        bounty=100,
        fee=1000,
        deadline=10,
        result_reward=0,
        max_results=10,
        publisher=PUB.public_key,
        nonce=7,
    ).signed_by(PUB, REGTEST.genesis_hash)
    b = Builder()
    b1 = b.make(b.genesis, txs=(task,))
    yield World(b, store, trainer, verifier, csv, spec, task, b1)
    await pool.close()


async def honest(w: World, who: Identity, spec: TaskSpec | None = None) -> ResultTx:
    out = await w.trainer.train_round(spec or w.spec, w.task.id, w.b1.hash, who.public_key, 0)
    return w.result(who, metric=out.metric, model_cid=out.model_cid, train_rows=out.train_rows)


async def test_honest_result_connects(world: World) -> None:
    n = world.node()
    blk = world.builder.make(world.b1.hash, txs=(await honest(world, ALICE),))
    up = await world.feed(n, blk)
    assert up.rejected == [] and n.tip == blk.hash


async def test_inflated_metric(world: World) -> None:
    r = await honest(world, ALICE)
    lie = world.result(
        ALICE, metric=r.metric + 0.05, model_cid=r.model_cid, train_rows=r.train_rows
    )
    await expect_rejected(world, lie, "bad-result-metric")


async def test_wrong_params(world: World) -> None:
    other = dataclasses.replace(world.spec, params=(("alpha", 5.0),))
    r = await honest(world, ALICE, other)
    await expect_rejected(world, r, "bad-result-model")


async def test_artifact_that_is_not_a_model(world: World) -> None:
    cid = await world.store.add_bytes(b"PK\x03\x04 definitely not a model")
    lie = world.result(ALICE, metric=0.5, model_cid=cid, train_rows=221)
    await expect_rejected(world, lie, "bad-result-model")


async def test_model_trained_on_a_hand_picked_partition(world: World) -> None:
    """Right class, params and random_state, honest holdout metric, but fitted
    on rows of Mallory's choosing: it passes the cheap checks, so the block
    including it connects (optimistic); only the seeded re-training audit sees
    it (a committee member's, p2pml/node/audits.py, or every node's once a
    challenge disputes it, which voids it)."""
    seed, tid = world.b1.hash, world.task.id
    data = parse_csv(world.csv, "regression", "target", (), 10**9)
    hold = holdout_indices(seed, tid, data.n_rows, world.spec.holdout_fraction)
    mine = partition_indices(
        seed,
        tid,
        MALLORY.public_key,
        0,
        data.n_rows,
        world.spec.holdout_fraction,
        world.spec.partition_fraction,
    )
    # Hand-picked: the same number of rows, but those with the largest targets.
    rest = sorted(set(range(data.n_rows)) - set(hold.tolist()), key=lambda i: -data.y[i])
    picked = sorted(rest[: len(mine)])
    rs = derive_random_state(seed, tid, MALLORY.public_key, 0)
    model = build_estimator("ridge", world.spec.param_dict, rs)
    model.fit(data.X[picked], data.y[picked])
    metric = compute_metric("r2", model, data.X[hold], data.y[hold])
    cid = await world.store.add_bytes(dump_model(model))
    lie = world.result(MALLORY, metric=metric, model_cid=cid, train_rows=len(mine))
    n = world.node()
    top = world.builder.make(world.b1.hash, txs=(lie,))
    up = await world.feed(n, top)
    assert up.rejected == [] and n.tip == top.hash  # included on the cheap checks
    watcher = dev_identity(3)
    challenge = ChallengeTx(watcher.public_key, lie.id, 1_000, 1).signed_by(
        watcher, REGTEST.genesis_hash
    )
    top = world.builder.make(top.hash, txs=(challenge,))
    for _ in range(REGTEST.dispute_delay + 1):
        up = await world.feed(n, top)
        assert up.rejected == [] and n.tip == top.hash
        top = world.builder.make(top.hash)
    rec = n.chain.state[result_key(lie.id)]
    assert rec["status"] == "void" and rec["dispute"]["reason"] == "bad-result-audit"
    assert n.chain.state.get(bond_key(MALLORY.public_key)) is None


async def test_block_waits_for_a_missing_artifact_then_connects(world: World) -> None:
    r = await honest(world, ALICE)
    # Take the artifact away (as if no peer had it yet), keep its bytes.
    path = world.store.root / r.model_cid
    artifact = path.read_bytes()
    path.unlink()
    n = world.node()
    blk = world.builder.make(world.b1.hash, txs=(r,))
    up = await world.feed(n, blk)
    assert up.rejected == [] and up.waiting and n.tip == world.b1.hash
    await world.store.add_bytes(artifact)
    await retry(world, n)
    assert n.tip == blk.hash


async def retry(w: World, n: Node) -> ChainUpdate:
    up = n.chain.retry_waiting()
    n.source.apply(up)
    while up.waiting:
        assert await w.verifier.resolve(w.verifier.take_wanted()) == 0
        up = n.chain.retry_waiting()
        n.source.apply(up)
    return up


async def expect_rejected(w: World, lie: ResultTx, reason: str) -> None:
    n = w.node()
    blk = w.builder.make(w.b1.hash, txs=(lie,))
    up = await w.feed(n, blk)
    assert up.rejected == [(blk.hash, reason)], up
    assert n.tip == w.b1.hash
