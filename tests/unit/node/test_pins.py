"""The pin policy (p2pml.node.pins) on the real consensus, against a fake store."""

from __future__ import annotations

from typing import Any

import numpy as np

from p2pml.chain.fedspec import FederatedSpec
from p2pml.chain.params import REGTEST, dev_identity
from p2pml.chain.tasks import task_key
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.types import Block, ResultTx, RoundCloseTx, TaskTx, UpdateTx
from p2pml.crypto import Identity
from p2pml.errors import DaemonUnavailable, DatasetError
from p2pml.federated import rounds as fed_rounds
from p2pml.federated.encoding import encode
from p2pml.ipfs.cid import cid_of_bytes
from p2pml.node.pins import PinService, plan_pins
from tests.framework.chainbuilder import Builder
from tests.unit.node.fakes import FakeChain

PUB, ME, OTHER = dev_identity(0), dev_identity(5), dev_identity(6)
DATASET = cid_of_bytes(b"dataset")
SPEC = TaskSpec(
    dataset_cid=DATASET,
    target="y",
    model="ridge",
    kind="regression",
    metric="r2",
    rounds=3,
)
DEADLINE = 5
RETENTION = 3
PAYOUT = REGTEST.payout_window


def task(publisher: Identity = PUB, nonce: int = 1) -> TaskTx:
    tx = TaskTx(SPEC, 1000, 1000, DEADLINE, 0, 9, publisher.public_key, nonce)
    return tx.signed_by(publisher, REGTEST.genesis_hash)


def result(t: TaskTx, seed: bytes, rnd: int, trainer: Identity, metric: float) -> ResultTx:
    model = cid_of_bytes(b"model %d %f" % (rnd, metric))
    return ResultTx(t.id, seed, rnd, trainer.public_key, metric, model, 10, 1, 1_000).signed_by(
        trainer, REGTEST.genesis_hash
    )


class FakeStore:
    """Pins of an IPFS node holding ``local``; every call is logged."""

    def __init__(self, local: set[str]) -> None:
        self.local = local
        self.pins: set[str] = set()
        self.calls: list[tuple[str, str]] = []
        self.down = False

    async def has(self, cid: str) -> bool:
        return cid in self.local

    async def pin(self, cid: str) -> None:
        if self.down:
            raise DaemonUnavailable("down")
        self.calls.append(("pin", cid))
        self.pins.add(cid)

    async def unpin(self, cid: str) -> None:
        if self.down:
            raise DaemonUnavailable("down")
        self.calls.append(("unpin", cid))
        if cid not in self.pins:
            raise DatasetError(f"{cid} is not pinned")
        self.pins.discard(cid)


async def setup() -> tuple[FakeChain, Builder, TaskTx, bytes, list[ResultTx]]:
    """A task of PUB's in block 1; block 2 holds two results of ours (the
    better one wins) and one of another trainer."""
    chain = FakeChain()
    chain.chain.verdicts = lambda *_: ""  # every result verifies
    b = Builder()
    b.ref.verdicts = lambda *_: ""
    t = task()
    blk = b.make(b.genesis, txs=(t,))
    await chain.submit_block(blk)
    seed = blk.hash
    rs = [result(t, seed, 0, ME, 0.9), result(t, seed, 1, ME, 0.5), result(t, seed, 2, OTHER, 0.7)]
    await chain.submit_block(b.make(blk.hash, txs=tuple(rs)))
    return chain, b, t, seed, rs


async def extend(chain: FakeChain, b: Builder, n: int) -> None:
    for blk in b.chain(chain.chain.tip.hash, n):
        await chain.submit_block(blk)


async def test_dataset_and_every_artifact_pinned_until_paid_then_released_after_retention() -> None:
    """Another trainer's artifact too: a dispute opened before the payout
    height makes every node re-run that result's full audit (issue 15)."""
    chain, b, t, _seed, (best, worse, theirs) = await setup()
    store = FakeStore({DATASET, best.model_cid, worse.model_cid, theirs.model_cid})
    pins = PinService(chain, store, ME.public_key, RETENTION)
    everything = {DATASET, best.model_cid, worse.model_cid, theirs.model_cid}
    await pins.reconcile()
    assert store.pins == everything  # open

    await extend(chain, b, DEADLINE - 1)  # the block at the deadline height closes it
    await pins.reconcile()
    rec = chain.chain.state[task_key(t.id)]
    assert not rec["open"] and not rec["paid"]
    assert store.pins == everything  # closed, not paid: still disputable

    await extend(chain, b, PAYOUT)  # the payout height
    await pins.reconcile()
    assert chain.chain.state[task_key(t.id)]["paid"]
    assert store.pins == everything  # the retention margin for a shallow reorg
    await extend(chain, b, RETENTION - 1)
    await pins.reconcile()
    assert store.pins == everything
    await extend(chain, b, 1)
    await pins.reconcile()
    assert store.pins == set()
    calls = len(store.calls)
    await extend(chain, b, 2)
    await pins.reconcile()
    assert len(store.calls) == calls  # released once, not at every block


async def test_another_trainers_artifact_is_pinned_only_once_it_is_here() -> None:
    chain, _b, _t, _seed, (_best, _worse, theirs) = await setup()
    store = FakeStore({DATASET})
    pins = PinService(chain, store, ME.public_key, RETENTION)
    await pins.reconcile()
    assert theirs.model_cid not in store.pins  # never fetched: pinning would fetch it
    store.local.add(theirs.model_cid)  # the verifier fetched it for the cheap checks
    await pins.reconcile()
    assert theirs.model_cid in store.pins


async def test_a_restarted_service_derives_the_same_pins_from_the_chain() -> None:
    chain, b, *_ = await setup()
    store = FakeStore({DATASET})
    await PinService(chain, store, ME.public_key, RETENTION).reconcile()
    assert store.pins == {DATASET}
    await extend(chain, b, DEADLINE + PAYOUT + RETENTION)
    # A new process (nothing in memory) over the same chain and IPFS pins.
    await PinService(chain, store, ME.public_key, RETENTION).reconcile()
    assert store.pins == set()


async def test_content_not_here_is_pinned_once_it_arrives() -> None:
    chain, *_ = await setup()
    store = FakeStore(set())
    pins = PinService(chain, store, ME.public_key, RETENTION)
    await pins.reconcile()
    assert store.calls == []  # pinning would make IPFS fetch it (for ever, if nobody has it)
    store.local.add(DATASET)
    await pins.reconcile()
    assert store.pins == {DATASET}


async def test_our_own_task_keeps_its_dataset() -> None:
    chain = FakeChain()
    b = Builder()
    blk = b.make(b.genesis, txs=(task(publisher=ME),))
    await chain.submit_block(blk)
    await extend(chain, b, DEADLINE + PAYOUT + RETENTION + 2)
    store = FakeStore({DATASET})
    store.pins.add(DATASET)  # `p2pml dataset add` pinned it
    await PinService(chain, store, ME.public_key, RETENTION).reconcile()
    assert store.pins == {DATASET}
    assert plan_pins(chain.chain.state, chain.chain.height, ME.public_key, RETENTION).keep == {
        DATASET
    }


async def test_a_reorg_that_drops_the_task_unpins_and_one_back_repins() -> None:
    chain, b, *_ = await setup()
    store = FakeStore({DATASET})
    pins = PinService(chain, store, ME.public_key, RETENTION)
    await pins.reconcile()
    assert DATASET in store.pins
    # A heavier branch from genesis without the task.
    side = b.chain(b.genesis, 4, dt=2)
    for blk in side:
        await chain.submit_block(blk)
    assert chain.chain.tip.hash == side[-1].hash
    await pins.reconcile()
    assert DATASET not in store.pins
    # The task's branch wins again, still open: pinned again.
    back = b.chain(chain_tip_of_task_branch(b, side), 4)
    for blk in back:
        await chain.submit_block(blk)
    assert chain.chain.tip.hash == back[-1].hash
    await pins.reconcile()
    assert DATASET in store.pins


def chain_tip_of_task_branch(b: Builder, side: list[Block]) -> bytes:
    """The highest block the builder knows that is not on ``side``."""
    side_hashes = {s.hash for s in side}
    best = max(
        (h for h in b.blocks if h not in side_hashes),
        key=lambda h: b.entry(h).height,
    )
    return best


async def test_a_daemon_that_is_down_is_retried_on_the_next_pass() -> None:
    chain, b, *_ = await setup()
    store = FakeStore({DATASET})
    pins = PinService(chain, store, ME.public_key, RETENTION)
    store.down = True
    await pins.reconcile()
    assert store.pins == set() and pins.pinned == set()
    store.down = False
    await pins.reconcile()
    assert DATASET in store.pins
    await extend(chain, b, DEADLINE + PAYOUT + RETENTION)
    store.down = True
    await pins.reconcile()
    assert DATASET not in pins.released
    store.down = False
    await pins.reconcile()
    assert DATASET not in store.pins and DATASET in pins.released


async def test_tip_changes_wake_the_service() -> None:
    import asyncio

    from tests.framework.waiting import wait_until

    chain, b, *_ = await setup()
    store = FakeStore({DATASET})
    pins = PinService(chain, store, ME.public_key, RETENTION, recheck_seconds=3600)
    runner = asyncio.create_task(pins.run())
    try:
        await wait_until(lambda: DATASET in store.pins, timeout=5)
        await extend(chain, b, DEADLINE + PAYOUT + RETENTION)
        await wait_until(lambda: DATASET not in store.pins, timeout=5)
    finally:
        runner.cancel()


async def test_a_pass_reads_only_live_tasks_and_plans_as_the_whole_state_would() -> None:
    """Tasks close and expire block after block (some ours, one reorged):
    at every tip the service's view plans exactly what the whole state plans,
    and expired tasks leave the view, so a pass does not grow with the chain."""
    chain = FakeChain()
    chain.chain.verdicts = lambda *_: ""
    b = Builder()
    b.ref.verdicts = lambda *_: ""
    store = FakeStore({DATASET})
    pins = PinService(chain, store, ME.public_key, RETENTION)
    tip = b.genesis
    for i in range(12):
        t = task(publisher=ME if i == 5 else PUB, nonce=100 + i)
        blk = b.make(tip, txs=(t,))
        await chain.submit_block(blk)
        ours = result(t, blk.hash, 0, ME, 0.5 + i / 100)
        store.local.add(ours.model_cid)
        nxt = b.make(blk.hash, txs=(ours,))
        await chain.submit_block(nxt)
        tip = nxt.hash
        plan = await pins.reconcile()
        state = chain.chain.state
        full = plan_pins(state, chain.chain.height, ME.public_key, RETENTION)
        assert plan.keep == full.keep
        assert store.pins == full.keep
    await extend(chain, b, DEADLINE + PAYOUT + RETENTION + 1)
    plan = await pins.reconcile()
    full = plan_pins(chain.chain.state, chain.chain.height, ME.public_key, RETENTION)
    assert plan.keep == full.keep == {DATASET}  # only our own task's dataset stays
    assert store.pins == {DATASET}
    live_tasks = [k for k in pins.live.records if k.startswith(b"task:")]
    all_tasks = [k for k in chain.chain.state if k.startswith(b"task:")]
    assert len(all_tasks) == 12 and len(live_tasks) == 1  # ours, kept for ever

    # A reorg (a longer branch from the last result, with a new task near its
    # tip) rebuilds the view from the whole state: the new task is planned.
    late = task(nonce=999)
    side = b.chain(tip, DEADLINE + PAYOUT + RETENTION - 1)
    side.append(b.make(side[-1].hash, txs=(late,)))
    side += b.chain(side[-1].hash, 2)
    for blk in side:
        await chain.submit_block(blk)
    assert chain.chain.tip.hash == side[-1].hash
    plan = await pins.reconcile()
    full = plan_pins(chain.chain.state, chain.chain.height, ME.public_key, RETENTION)
    assert plan.keep == full.keep and task_key(late.id) in pins.live.records


# -- federated tasks: the updates of every round ------------------------------------

FED_SPEC = TaskSpec(
    dataset_cid=DATASET,
    target="y",
    model="sgd_classifier",
    kind="classification",
    metric="accuracy",
    features=("a", "b", "c"),
    rounds=2,
    federated=FederatedSpec(
        "fedavg", participants=2, local_epochs=1, round_blocks=3, classes=(0, 1, 2)
    ),
)


class FedOracle:
    """The verdicts a node gives from update artifacts it holds: updates
    decoded, round closes recomputed with the federated core (pure and real)."""

    def __init__(self) -> None:
        self.artifacts: dict[str, bytes] = {}

    def update(
        self, t: TaskTx, seed: bytes, who: Identity, *earlier: list[UpdateTx], scale: float
    ) -> UpdateTx:
        """``who``'s update for the round after the ``earlier`` rounds' updates."""
        layout = fed_rounds.layout_of(FED_SPEC.to_wire())
        data = encode(layout, np.linspace(-1.0, 1.0, layout.size) * scale)
        cid = cid_of_bytes(data)
        self.artifacts[cid] = data
        base = self.model_hash(seed, *earlier)  # G_r (federated.md §11.3)
        tx = UpdateTx(
            t.id, seed, len(earlier), who.public_key, cid, 10, REGTEST.min_result_fee, base=base
        )
        return tx.signed_by(who, REGTEST.genesis_hash)

    def model_hash(self, seed: bytes, *rounds_: list[UpdateTx]) -> bytes:
        wire = FED_SPEC.to_wire()
        g = fed_rounds.initial(wire, seed)
        for ups in rounds_:
            g = fed_rounds.next_global(
                wire, g, [(u.participant, self.artifacts[u.update_cid], 10) for u in ups]
            )
        return fed_rounds.round_hash(wire, g)

    def close(self, t: TaskTx, seed: bytes, *rounds_: list[UpdateTx]) -> RoundCloseTx:
        return RoundCloseTx(t.id, len(rounds_) - 1, self.model_hash(seed, *rounds_))

    def __call__(self, tx: Any, task: dict[str, Any], audit: bool) -> str | None:
        if isinstance(tx, UpdateTx):
            data = self.artifacts.get(tx.update_cid)
            return None if data is None else fed_rounds.check_update(task["spec"], data)
        return ""  # round closes: the hash is the one close() computed


async def test_federated_updates_pinned_until_paid_then_released_after_retention() -> None:
    """Every update of every round, another participant's too: a round close,
    a reorg across one and a restart's recomputation of the global models
    all need them until the task is paid."""
    chain, b, o = FakeChain(), Builder(), FedOracle()
    chain.chain.verdicts = o
    b.ref.verdicts = o
    t = TaskTx(FED_SPEC, 1000, 1000, 30, 0, 1, PUB.public_key, 3).signed_by(
        PUB, REGTEST.genesis_hash
    )
    b1 = b.make(b.genesis, txs=(t,))
    await chain.submit_block(b1)
    r0 = [o.update(t, b1.hash, ME, scale=1.0), o.update(t, b1.hash, OTHER, scale=2.0)]
    b2 = b.make(b1.hash, txs=(*r0, o.close(t, b1.hash, r0)))  # full: closes round 0
    await chain.submit_block(b2)
    r1 = [o.update(t, b1.hash, OTHER, r0, scale=-0.5)]
    await chain.submit_block(b.make(b2.hash, txs=tuple(r1)))
    updates = {u.update_cid for u in (*r0, *r1)}
    store = FakeStore({DATASET, *updates})
    pins = PinService(chain, store, ME.public_key, RETENTION)
    await pins.reconcile()
    assert store.pins == {DATASET, *updates}  # the closed round's and the open one's

    await extend(chain, b, 2)  # round 1's window (3 blocks from its opening) is over
    await chain.submit_block(b.make(chain.chain.tip.hash, txs=(o.close(t, b1.hash, r0, r1),)))
    rec = chain.chain.state[task_key(t.id)]
    assert not rec["open"] and not rec["paid"]  # the last round closed the task
    await extend(chain, b, PAYOUT + RETENTION - 1)
    await pins.reconcile()
    assert chain.chain.state[task_key(t.id)]["paid"]
    assert store.pins == {DATASET, *updates}
    full = plan_pins(chain.chain.state, chain.chain.height, ME.public_key, RETENTION)
    assert full.keep == {DATASET, *updates}
    await extend(chain, b, 1)
    await pins.reconcile()
    assert store.pins == set()
    assert plan_pins(chain.chain.state, chain.chain.height, ME.public_key, RETENTION).keep == set()
    assert pins.live.records == {}  # released for good: out of the view
