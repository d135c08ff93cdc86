"""Tasks, results and the ledger as consensus rules (verdicts from a fake oracle)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from p2pml.chain.index import Status
from p2pml.chain.ledger import balance_key
from p2pml.chain.params import REGTEST, dev_identity
from p2pml.chain.tasks import task_key
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.types import Block, BondTx, ChallengeTx, ResultTx, TaskTx, TransferTx, UnbondTx
from p2pml.crypto import Identity
from p2pml.ipfs.cid import cid_of_bytes
from tests.framework.chainbuilder import MINER, Builder, Node

PUB = dev_identity(0)
T1, T2, T3 = dev_identity(1), dev_identity(2), dev_identity(3)
POOR = Identity.from_seed(b"\x77" * 32)
SPEC = TaskSpec(
    dataset_cid=cid_of_bytes(b"dataset"),
    target="y",
    model="ridge",
    kind="regression",
    metric="r2",
    rounds=2,
)
ALLOC = {k: a for k, a, _bond in REGTEST.allocations}
FEE = REGTEST.min_result_fee
W = REGTEST.payout_window
# Transfer amounts: dust, a fee's worth, enough to bond, a whole allocation.
AMOUNTS = [1, 2_500, 2 * REGTEST.min_bond, ALLOC[PUB.public_key]]


def task(
    pub: Identity = PUB, bounty: int = 1000, fee: int = 1000, deadline: int = 5, **kw: Any
) -> TaskTx:
    fields: dict[str, Any] = dict(
        spec=SPEC,
        bounty=bounty,
        fee=fee,
        deadline=deadline,
        result_reward=0,
        max_results=10,
        publisher=pub.public_key,
        nonce=1,
    )
    fields.update(kw)
    return TaskTx(**fields).signed_by(pub, REGTEST.genesis_hash)


def result(
    t: TaskTx, trainer: Identity, metric: float, rnd: int = 0, seed: bytes | None = None
) -> ResultTx:
    return ResultTx(
        task_id=t.id,
        seed=seed if seed is not None else SEEDS.get(t.id, bytes(32)),
        round=rnd,
        trainer=trainer.public_key,
        metric=metric,
        model_cid=cid_of_bytes(b"model" + trainer.public_key),
        train_rows=100,
        train_ms=5,
        fee=FEE,
    ).signed_by(trainer, REGTEST.genesis_hash)


# Task id -> hash of the block that (last) included it: the seed a trainer
# would have used. Filled by SeedBuilder as blocks are made.
SEEDS: dict[bytes, bytes] = {}


class SeedBuilder(Builder):
    def make(self, parent: bytes, **kw: Any) -> Block:  # type: ignore[override]
        blk = super().make(parent, **kw)
        for tx in kw.get("txs", ()):
            if isinstance(tx, TaskTx):
                SEEDS[tx.id] = blk.hash
        return blk


class Oracle:
    """Verdicts as the node would give them; unknown results are missing data."""

    def __init__(self) -> None:
        self.verdicts: dict[bytes, str] = {}
        # Full-audit verdicts where they differ (a model that passes the
        # cheap checks but was not trained as the protocol says).
        self.audits: dict[bytes, str] = {}
        self.asked: list[tuple[bytes, bool]] = []

    def __call__(self, tx: ResultTx, task_rec: dict[str, Any], audit: bool) -> str | None:
        self.asked.append((tx.id, audit))
        if audit and tx.id in self.audits:
            return self.audits[tx.id]
        return self.verdicts.get(tx.id)


def setup() -> tuple[Builder, Node, Oracle]:
    b, n, o = SeedBuilder(), Node(), Oracle()
    n.chain.verdicts = o
    b.ref.verdicts = o
    return b, n, o


def bal(n: Node, ident: Identity | bytes) -> int:
    key = ident if isinstance(ident, bytes) else ident.public_key
    return int(n.chain.state.get(balance_key(key), 0))


def mine(b: Builder, n: Node, parent: bytes, *txs: Any) -> Block:
    blk = b.make(parent, txs=tuple(txs))
    up = n.feed(blk)
    up.raise_error()
    return blk


def test_task_costs_fee_and_escrow_and_pays_the_miner() -> None:
    b, n, _ = setup()
    t = task(bounty=5000, fee=2000, result_reward=10, max_results=3)
    blk = mine(b, n, b.genesis, t)
    assert n.tip == blk.hash
    assert bal(n, PUB) == ALLOC[PUB.public_key] - 2000 - 5000 - 30
    assert bal(n, MINER) == REGTEST.coinbase_reward + 2000
    rec = n.chain.state[task_key(t.id)]
    assert rec["open"] and rec["seed"] == blk.hash and rec["close_at"] == 1 + 5


def test_unfunded_task_makes_the_block_invalid() -> None:
    b, n, _ = setup()
    t = task(pub=POOR)
    blk = b.make(b.genesis, txs=(t,))
    up = n.feed(blk)
    assert up.rejected == [(blk.hash, "insufficient-funds")]
    assert n.tip == b.genesis


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda t: dataclasses.replace(t, bounty=t.bounty + 1), "bad-task-sig"),
        (lambda t: task(fee=1), "bad-task-fee"),
        (lambda t: task(deadline=0), "bad-task-deadline"),
        (lambda t: task(spec=dataclasses.replace(SPEC, metric="accuracy")), "bad-task-metric"),
        (lambda t: task(spec=dataclasses.replace(SPEC, params=(("n_jobs", 2),))), "bad-task-param"),
    ],
)
def test_bad_tasks_make_the_block_invalid(mangle: Any, reason: str) -> None:
    b, n, _ = setup()
    blk = b.make(b.genesis, txs=(mangle(task()),), register=False)
    up = n.feed(blk)
    assert up.error is not None and up.error.reason == reason


def test_duplicate_task_is_refused() -> None:
    b, n, _ = setup()
    t = task()
    blk = mine(b, n, b.genesis, t)
    again = b.make(blk.hash, txs=(t,))
    assert n.feed(again).rejected == [(again.hash, "duplicate-task")]


def test_results_close_the_task_and_pay_the_best_with_ties_split() -> None:
    b, n, o = setup()
    t = task(bounty=1001, deadline=3)
    b1 = mine(b, n, b.genesis, t)
    r1, r2, r3 = result(t, T1, 0.5), result(t, T2, 0.7), result(t, T3, 0.7)
    for r in (r1, r2, r3):
        o.verdicts[r.id] = ""
    b2 = mine(b, n, b1.hash, r1, r2)
    b3 = mine(b, n, b2.hash, r3)
    assert n.chain.state[task_key(t.id)]["open"]
    top = mine(b, n, b3.hash)  # height 4 = close_at
    rec = n.chain.state[task_key(t.id)]
    assert not rec["open"] and rec["best"] == 0.7
    assert {bytes(w[0]) for w in rec["winners"]} == {T2.public_key, T3.public_key}
    assert rec["payout_at"] == 4 + W and not rec["paid"]
    assert bal(n, T2) == ALLOC[T2.public_key] - FEE  # paid only after the window
    for _ in range(W):
        top = mine(b, n, top.hash)
    assert n.chain.state[task_key(t.id)]["paid"]
    assert bal(n, T2) == ALLOC[T2.public_key] - FEE + 500
    assert bal(n, T3) == ALLOC[T3.public_key] - FEE + 500
    assert bal(n, T1) == ALLOC[T1.public_key] - FEE
    # 1 left over from the split goes back to the publisher.
    assert bal(n, PUB) == ALLOC[PUB.public_key] - 1000 - 1001 + 1
    # Optimistic inclusion: only the cheap checks; re-training is for
    # committees and disputes.
    assert o.asked and not any(audit for _, audit in o.asked)


def test_task_without_results_refunds_the_publisher_at_its_deadline() -> None:
    b, n, _ = setup()
    t = task(bounty=700, deadline=2, result_reward=5, max_results=4)
    blk = mine(b, n, b.genesis, t)
    blk = mine(b, n, blk.hash)
    assert bal(n, PUB) == ALLOC[PUB.public_key] - 1000 - 720
    blk = mine(b, n, blk.hash)  # closes at 3, refunds at 3 + W
    for _ in range(W):
        assert bal(n, PUB) == ALLOC[PUB.public_key] - 1000 - 720
        blk = mine(b, n, blk.hash)
    assert bal(n, PUB) == ALLOC[PUB.public_key] - 1000


def test_max_results_closes_early_and_pays_result_rewards() -> None:
    b, n, o = setup()
    t = task(bounty=100, result_reward=7, max_results=2, deadline=50)
    b1 = mine(b, n, b.genesis, t)
    r1, r2 = result(t, T1, 0.1), result(t, T2, 0.2)
    o.verdicts.update({r1.id: "", r2.id: ""})
    top = mine(b, n, b1.hash, r1, r2)
    rec = n.chain.state[task_key(t.id)]
    assert not rec["open"] and rec["closed_at"] == 2
    # Result rewards and the bounty both after the window.
    assert bal(n, T1) == ALLOC[T1.public_key] - FEE
    assert bal(n, T2) == ALLOC[T2.public_key] - FEE
    for _ in range(W):
        top = mine(b, n, top.hash)
    assert bal(n, T1) == ALLOC[T1.public_key] - FEE + 7
    assert bal(n, T2) == ALLOC[T2.public_key] - FEE + 7 + 100


@pytest.mark.parametrize(
    "case",
    ["unknown", "same-block", "closed", "round", "duplicate", "verdict", "wrong-seed"],
)
def test_bad_results(case: str) -> None:
    b, n, o = setup()
    t = task(deadline=1)
    r = result(t, T1, 0.5)
    o.verdicts[r.id] = ""
    if case == "unknown":
        blk, expect = b.make(b.genesis, txs=(r,)), "result-task-unknown"
    elif case == "same-block":
        blk, expect = b.make(b.genesis, txs=(t, r)), "result-task-unknown"
    else:
        b1 = mine(b, n, b.genesis, t)
        r = result(t, T1, 0.5)  # now with the task's seed
        o.verdicts[r.id] = ""
        if case == "closed":
            b2 = mine(b, n, b1.hash)
            blk, expect = b.make(b2.hash, txs=(r,)), "result-task-closed"
        elif case == "round":
            r = result(t, T1, 0.5, rnd=2)
            o.verdicts[r.id] = ""
            blk, expect = b.make(b1.hash, txs=(r,)), "bad-result-round"
        elif case == "duplicate":
            r_again = result(t, T1, 0.6)
            o.verdicts[r_again.id] = ""
            blk, expect = b.make(b1.hash, txs=(r, r_again)), "duplicate-result"
        elif case == "wrong-seed":
            r = result(t, T1, 0.5, seed=b"\x42" * 32)
            o.verdicts[r.id] = ""
            blk, expect = b.make(b1.hash, txs=(r,)), "result-wrong-seed"
        else:
            o.verdicts[r.id] = "bad-result-metric"
            blk, expect = b.make(b1.hash, txs=(r,)), "bad-result-metric"
    up = n.feed(blk)
    assert up.rejected == [(blk.hash, expect)], up
    assert n.chain.entry(blk.hash).status is Status.INVALID  # type: ignore[union-attr]


def test_bad_result_signature_is_a_stateless_reject() -> None:
    b, n, _ = setup()
    t = task()
    b1 = mine(b, n, b.genesis, t)
    r = dataclasses.replace(result(t, T1, 0.5), metric=0.99)
    up = n.feed(b.make(b1.hash, txs=(r,), register=False))
    assert up.error is not None and up.error.reason == "bad-result-sig"


def test_block_waits_for_data_then_connects() -> None:
    #   G - b1(task) - b2(result, verdict unknown)   -> waits, tip stays b1
    b, n, o = setup()
    t = task()
    b1 = mine(b, n, b.genesis, t)
    r = result(t, T1, 0.5)
    b2 = b.make(b1.hash, txs=(r,))
    up = n.feed(b2)
    assert up.error is None and up.waiting == [(b2.hash, r.model_cid)]
    assert n.tip == b1.hash
    assert n.chain.entry(b2.hash).status is Status.DATA  # type: ignore[union-attr]
    o.verdicts[r.id] = ""
    up = n.chain.retry_waiting()
    n.source.apply(up)
    assert n.tip == b2.hash


def test_reorg_removing_results_refunds_and_repays() -> None:
    #   G - b1(task) - a2(r1, r2) - a3 - a4      task closes at 4: r2 wins
    #              \
    #               c2(r1) - c3 - c4 - c5*       r1 alone wins
    b, n, o = setup()
    t = task(bounty=900, deadline=3)
    b1 = mine(b, n, b.genesis, t)
    r1, r2 = result(t, T1, 0.5), result(t, T2, 0.9)
    o.verdicts.update({r1.id: "", r2.id: ""})
    a = [mine(b, n, b1.hash, r1, r2)]
    for _ in range(2 + W):
        a.append(mine(b, n, a[-1].hash))
    assert bal(n, T2) == ALLOC[T2.public_key] - FEE + 900
    c = [b.make(b1.hash, txs=(r1,), miner=b"\x55" * 32)]
    for _ in range(3 + W):
        c.append(b.make(c[-1].hash, miner=b"\x55" * 32))
    for blk in c:
        n.feed(blk).raise_error()
    assert n.tip == c[-1].hash
    assert bal(n, T2) == ALLOC[T2.public_key]
    assert bal(n, T1) == ALLOC[T1.public_key] - FEE + 900
    replay = Node()
    replay.chain.verdicts = o
    replay.feed_all([b1, *c])
    assert replay.chain.state == n.chain.state


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_balances_after_any_reorgs_equal_a_replay(data: st.DataObject) -> None:
    b, n, o = setup()
    trainers = [T1, T2, T3]
    seen: dict[bytes, dict[bytes, Any]] = {}
    blocks: list[Block] = []
    tasks: list[TaskTx] = []
    made: list[ResultTx] = []
    for i in range(data.draw(st.integers(3, 20))):
        # Build on blocks that connected (or may): an invalid parent only
        # makes more invalid blocks, and the chain would never grow old
        # enough to pay out or release a bond.
        ok = [x.hash for x in blocks if (e := n.chain.entry(x.hash)) and not e.status.failed]
        parents = [b.genesis, *ok]
        parent = parents[data.draw(st.integers(max(0, len(parents) - 4), len(parents) - 1))]
        if data.draw(st.integers(0, 2)):  # mostly the tip: long enough to resolve disputes
            parent = n.chain.tip.hash
        txs: list[Any] = []
        if data.draw(st.booleans()):
            t = task(
                bounty=data.draw(st.integers(0, 5000)),
                deadline=data.draw(st.integers(1, 8)),
                nonce=i,
                result_reward=data.draw(st.integers(0, 3)),
                max_results=3,
            )
            txs.append(t)
            tasks.append(t)
        # Results for tasks that may or may not be on this branch: invalid ones
        # just make the block invalid, which is part of what is tested.
        if tasks and data.draw(st.booleans()):
            # Mostly a task open on the tip, so chains grow old enough to
            # close, pay out and unlock; sometimes any task at all.
            live = [x for x in tasks if (rec := n.chain.state.get(task_key(x.id))) and rec["open"]]
            mostly_live = live and data.draw(st.integers(0, 3))
            t = data.draw(st.sampled_from(live if mostly_live else tasks))
            who = data.draw(st.sampled_from([*trainers, POOR]))
            r = result(t, who, data.draw(st.floats(0, 1)))
            o.verdicts[r.id] = ""
            if data.draw(st.booleans()):  # passes the cheap checks, fails the audit
                o.audits[r.id] = "bad-result-audit"
            txs.append(r)
            made.append(r)
        # Challenges of any result made so far (on this branch or not): the
        # disputes, slashes and recomputed payouts all have to come undone.
        if made and data.draw(st.booleans()):
            who = data.draw(st.sampled_from([PUB, PUB, POOR, *trainers]))
            on_tip = [r for r in made if n.chain.state.get(b"rid:" + r.id)]
            pick = on_tip if on_tip and data.draw(st.booleans()) else made
            rid = data.draw(st.sampled_from(pick)).id
            txs.append(
                ChallengeTx(who.public_key, rid, 1_000, i).signed_by(who, REGTEST.genesis_hash)
            )
        # Transfers among the same keys: they fund (or drain) publishers and
        # trainers, so undoing them interacts with escrows and payouts.
        if data.draw(st.booleans()):
            sender = data.draw(st.sampled_from([PUB, *trainers]))
            keys = (PUB, POOR, *trainers)
            recipient = data.draw(st.sampled_from([k for k in keys if k is not sender]))
            txs.append(
                TransferTx(
                    sender.public_key,
                    recipient.public_key,
                    data.draw(st.sampled_from(AMOUNTS)),
                    1_000,
                    i,
                ).signed_by(sender, REGTEST.genesis_hash)
            )
        # Bonds and unbonds: a fresh key bonds (if funded on this branch),
        # trainers unbond (refused while a result of theirs is unpaid); the
        # releases, fees and delayed payouts all have to come undone.
        if data.draw(st.booleans()):
            who = data.draw(st.sampled_from([POOR, *trainers]))
            if who is POOR and data.draw(st.booleans()):
                txs.append(
                    BondTx(POOR.public_key, REGTEST.min_bond, 1_000, i).signed_by(
                        POOR, REGTEST.genesis_hash
                    )
                )
            elif not data.draw(st.integers(0, 3)):  # rarer: an unbonded key reports nothing
                txs.append(UnbondTx(who.public_key, 1_000, i).signed_by(who, REGTEST.genesis_hash))
        miner = data.draw(st.sampled_from([b"\x01" * 32, b"\x02" * 32]))
        blk = b.make(parent, txs=tuple(txs), miner=miner)
        blocks.append(blk)
        up = n.feed(blk)
        for _h, why in up.rejected:
            event(f"rejected: {why}")
        # Apply then undo restores the exact earlier state: whenever a tip
        # comes back (after reorgs away from it), its state is as it was.
        tip = n.chain.tip.hash
        if tip in seen:
            assert n.chain.state == seen[tip]
        seen[tip] = dict(n.chain.state)
        for key, v in n.chain.state.items():
            if key.startswith(b"task:") and v["paid"]:
                event("a payout on the tip")
            if key.startswith(b"bond:") and v["unbond_at"] is not None:
                event("an unbond on the tip")
            if key == b"bond:" + POOR.public_key:
                event("a bond on the tip")
            if key.startswith(b"rid:") and v["status"] == "disputed":
                event("a dispute open on the tip")
            if key.startswith(b"rid:") and v["status"] == "void":
                event("a voided result on the tip")
            if (
                key.startswith(b"rid:")
                and v["dispute"]
                and v["dispute"]["outcome"] == "result-valid"
            ):
                event("a wrong challenge on the tip")
    replay = Node()
    replay.chain.verdicts = o
    chain = []
    e = n.chain.tip
    while e.parent is not None:
        chain.append(b.blocks[e.hash])
        e = e.parent
    for blk in reversed(chain):
        replay.feed(blk).raise_error()
    assert replay.tip == n.tip
    assert replay.chain.state == n.chain.state


def test_a_task_must_pay_the_minimum_bounty_for_every_round_it_asks() -> None:
    """Attack: a task with the minimum fee, no bounty and 64 rounds made every
    training node queue 64 jobs for nothing. Each round now costs a bounty."""
    from p2pml.chain.tasks import TaskHandler
    from p2pml.errors import ValidationError

    params = dataclasses.replace(REGTEST, min_round_bounty=500)
    many = dataclasses.replace(SPEC, rounds=64)
    handler = TaskHandler()
    with pytest.raises(ValidationError) as exc:
        handler.check(task(spec=many, bounty=0), params)
    assert exc.value.reason == "bad-task-bounty"
    with pytest.raises(ValidationError) as exc:
        handler.check(task(spec=many, bounty=500 * 64 - 1), params)
    assert exc.value.reason == "bad-task-bounty"
    handler.check(task(spec=many, bounty=500 * 64), params)
    handler.check(task(spec=many, bounty=0), REGTEST)  # regtest sets no minimum
