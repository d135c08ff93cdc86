"""Trainer bonds, result fees and delayed payouts as consensus rules
(verdicts from a fake oracle, blocks built by hand)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from p2pml.chain.audits import fee_hold
from p2pml.chain.bonds import BondHandler, bond_key, lock_key
from p2pml.chain.index import Status
from p2pml.chain.params import REGTEST, NetworkParams, dev_identity
from p2pml.chain.tasks import ResultHandler, task_key
from p2pml.chain.types import AttestTx, Block, BondTx, ResultTx, TaskTx, TransferTx, UnbondTx
from p2pml.crypto import Identity
from p2pml.errors import ValidationError
from tests.framework.chainbuilder import MINER, Builder, Node
from tests.unit.chain.test_chain_tasks import ALLOC, FEE, PUB, T1, T2, Oracle, W, bal, result, task

FRESH = Identity.from_seed(b"\x31" * 32)  # not in genesis: no coins, no bond
MIN = REGTEST.min_bond
BFEE = REGTEST.min_bond_fee


def bond(who: Identity, amount: int = MIN, fee: int = BFEE, nonce: int = 1) -> BondTx:
    return BondTx(who.public_key, amount, fee, nonce).signed_by(who, REGTEST.genesis_hash)


def unbond(who: Identity, fee: int = BFEE, nonce: int = 1) -> UnbondTx:
    return UnbondTx(who.public_key, fee, nonce).signed_by(who, REGTEST.genesis_hash)


def fund(who: Identity, amount: int, nonce: int = 99) -> TransferTx:
    return TransferTx(PUB.public_key, who.public_key, amount, 1_000, nonce).signed_by(
        PUB, REGTEST.genesis_hash
    )


class Chain:
    """A node under test plus the builder that makes its blocks; ``seeds``
    follows the task ids to the block that included them."""

    def __init__(self, params: NetworkParams = REGTEST) -> None:
        self.b, self.n, self.o = Builder(params), Node(params), Oracle()
        self.n.chain.verdicts = self.o
        self.b.ref.verdicts = self.o
        self.top = self.b.genesis
        self.seeds: dict[bytes, bytes] = {}

    def mine(self, *txs: Any) -> Block:
        blk = self.b.make(self.top, txs=tuple(txs))
        self.n.feed(blk).raise_error()
        assert self.n.tip == blk.hash
        self.top = blk.hash
        for tx in txs:
            if isinstance(tx, TaskTx):
                self.seeds[tx.id] = blk.hash
        return blk

    def refused(self, *txs: Any) -> str:
        """The reason the block holding ``txs`` on the tip is invalid."""
        blk = self.b.make(self.top, txs=tuple(txs))
        up = self.n.feed(blk)
        assert self.n.tip == self.top
        if up.error is not None:
            return up.error.reason
        assert len(up.rejected) == 1, up
        assert self.n.chain.entry(blk.hash).status is Status.INVALID  # type: ignore[union-attr]
        return up.rejected[0][1]

    def result(self, t: TaskTx, who: Identity, metric: float = 0.5, rnd: int = 0) -> ResultTx:
        r = dataclasses.replace(
            result(t, who, metric, rnd=rnd), seed=self.seeds[t.id], signature=b""
        ).signed_by(who, REGTEST.genesis_hash)
        self.o.verdicts[r.id] = ""
        return r

    def state(self, key: bytes) -> Any:
        return self.n.chain.state.get(key)


def test_a_bond_locks_coins_and_pays_its_fee_to_the_miner() -> None:
    c = Chain()
    c.mine(fund(FRESH, 3 * MIN))
    blk = c.mine(bond(FRESH, 2 * MIN))
    assert bal(c.n, FRESH) == 3 * MIN - 2 * MIN - BFEE
    assert c.state(bond_key(FRESH.public_key)) == {
        "amount": 2 * MIN,
        "height": blk.height,
        "unbond_at": None,
    }
    assert blk.txs[0].amount == REGTEST.coinbase_reward + BFEE  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda tx: dataclasses.replace(tx, amount=tx.amount + 1), "bad-bond-sig"),
        (lambda tx: bond(PUB, amount=MIN - 1), "bad-bond-amount"),
        (lambda tx: bond(PUB, fee=BFEE - 1), "bad-bond-fee"),
    ],
)
def test_bad_bonds_are_stateless_rejects(mangle: Any, reason: str) -> None:
    with pytest.raises(ValidationError) as err:
        BondHandler().check(mangle(bond(PUB)), REGTEST)
    assert err.value.reason == reason


def test_bonds_the_state_refuses() -> None:
    c = Chain()
    assert c.refused(bond(FRESH)) == "insufficient-funds"
    assert c.refused(bond(T1)) == "bond-exists"  # dev keys are bonded in genesis
    c.mine(fund(FRESH, 3 * MIN))
    first = bond(FRESH)
    c.mine(first)
    c.mine(unbond(FRESH))
    for _ in range(REGTEST.unbond_delay):
        c.mine()
    assert c.state(bond_key(FRESH.public_key)) is None
    # Released: the same bond transaction may not lock the key's coins again.
    assert c.refused(first) == "duplicate-bond"
    c.mine(bond(FRESH, nonce=2))


def test_a_key_without_a_bond_cannot_report_results() -> None:
    """Attack (key grinding, free results): before bonds any key could report,
    so keys could be made after the seed was known and results cost nothing."""
    c = Chain()
    c.mine(fund(FRESH, 3 * MIN))
    t = task()
    c.mine(t)
    assert c.refused(c.result(t, FRESH)) == "no-bond"


def test_a_bond_made_after_the_seed_is_too_young() -> None:
    """Attack (key grinding): a key bonded in the task's own block, or fewer
    than ``bond_maturity`` blocks before it, could be chosen knowing the seed."""
    params = dataclasses.replace(REGTEST, bond_maturity=3)
    c = Chain(params)
    c.mine(fund(FRESH, 3 * MIN))
    b = bond(FRESH)
    t = task()
    c.mine(b)  # height 2
    c.mine()
    c.mine(t)  # seed at height 4 < 2 + 3
    assert c.refused(c.result(t, FRESH)) == "bond-too-young"
    t2 = task(nonce=2)
    c.mine(t2)  # seed at height 5 = 2 + 3: old enough
    c.mine(c.result(t2, FRESH))
    # In the task's own block: too young on regtest's maturity of 1 too.
    c1 = Chain()
    c1.mine(fund(FRESH, 3 * MIN))
    t3 = task(nonce=3)
    c1.mine(bond(FRESH), t3)
    assert c1.refused(c1.result(t3, FRESH)) == "bond-too-young"


def test_results_pay_their_fee_to_the_miner() -> None:
    """Less the part held back for the result's audit committee (chain/audits.py)."""
    c = Chain()
    t = task()
    c.mine(t)
    r = c.result(t, T1)
    blk = c.mine(r)
    paid = FEE - fee_hold(REGTEST, FEE)
    assert 0 < paid < FEE
    assert blk.txs[0].amount == REGTEST.coinbase_reward + paid  # type: ignore[union-attr]
    assert bal(c.n, MINER) == 2 * REGTEST.coinbase_reward + 1000 + paid
    assert bal(c.n, T1) == ALLOC[T1.public_key] - FEE


def test_a_result_below_the_fee_is_a_stateless_reject() -> None:
    c = Chain()
    t = task()
    c.mine(t)
    r = dataclasses.replace(c.result(t, T1), fee=FEE - 1, signature=b"").signed_by(
        T1, REGTEST.genesis_hash
    )
    with pytest.raises(ValidationError) as err:
        ResultHandler().check(r, REGTEST)
    assert err.value.reason == "bad-result-fee"
    blk = c.b.make(c.top, txs=(r,), register=False)
    up = c.n.feed(blk)
    assert up.error is not None and up.error.reason == "bad-result-fee"


def test_a_bonded_key_that_cannot_pay_the_fee_is_refused_before_its_verdict() -> None:
    c = Chain()
    c.mine(fund(FRESH, MIN + BFEE))
    c.mine(bond(FRESH))
    assert bal(c.n, FRESH) == 0
    t = task()
    c.mine(t)
    r = c.result(t, FRESH)
    c.o.asked.clear()
    assert c.refused(r) == "insufficient-funds"
    assert c.o.asked == []  # nothing re-run for it


def test_the_bounty_is_paid_a_window_after_close() -> None:
    c = Chain()
    t = task(bounty=4000, deadline=2)
    c.mine(t)  # height 1, closes at 3
    c.mine(c.result(t, T1, 0.9))
    c.mine()
    rec = c.state(task_key(t.id))
    assert not rec["open"] and rec["closed_at"] == 3 and rec["payout_at"] == 3 + W
    for _ in range(W - 1):
        c.mine()
        assert bal(c.n, T1) == ALLOC[T1.public_key] - FEE
    c.mine()
    assert bal(c.n, T1) == ALLOC[T1.public_key] - FEE + 4000
    assert c.state(task_key(t.id))["paid"]


def test_an_unbond_waits_until_every_result_of_the_key_is_paid() -> None:
    c = Chain()
    t = task(deadline=2)
    c.mine(t)
    c.mine(c.result(t, T1))
    assert c.state(lock_key(T1.public_key)) == [t.id]
    assert c.refused(unbond(T1)) == "bond-locked"  # task open
    c.mine()  # closes at 3
    for _ in range(W - 1):
        assert c.refused(unbond(T1)) == "bond-locked"  # inside the payout window
        c.mine()
    c.mine()  # paid
    assert c.state(lock_key(T1.public_key)) is None
    before = bal(c.n, T1)
    u = unbond(T1)
    blk = c.mine(u)
    assert c.state(bond_key(T1.public_key))["unbond_at"] == blk.height + REGTEST.unbond_delay
    assert c.refused(unbond(T1, nonce=2)) == "bond-unbonding"
    # While it is being released the bond counts for nothing.
    t2 = task(nonce=2)
    c.mine(t2)
    assert c.refused(c.result(t2, T1)) == "bond-unbonding"
    while c.n.chain.height < blk.height + REGTEST.unbond_delay:
        assert bal(c.n, T1) == before - BFEE
        c.mine()
    assert bal(c.n, T1) == before - BFEE + MIN
    assert c.state(bond_key(T1.public_key)) is None
    assert c.refused(u) == "duplicate-bond"  # a replayed unbond
    assert c.refused(unbond(T1, nonce=3)) == "no-bond"
    assert c.refused(c.result(t2, T1)) == "no-bond"


def test_a_reorg_undoes_bonds_unbonds_fees_and_payouts_exactly() -> None:
    #   G - a1(fund) - a2(bond, task) - a3(result) - ... payout, unbond, release
    #     \
    #      c1 ... (longer, empty)
    c = Chain()
    snapshot = dict(c.n.chain.state)
    c.mine(fund(FRESH, 3 * MIN))
    t = task(deadline=1)
    c.mine(bond(FRESH), t)
    c.mine(c.result(t, T2, 0.3))  # closes at 3 (max results not hit: deadline)
    for _ in range(W):
        c.mine()
    c.mine(unbond(T2))
    for _ in range(REGTEST.unbond_delay):
        c.mine()
    assert c.state(bond_key(T2.public_key)) is None
    height = c.n.chain.height
    other = c.b.chain(c.b.genesis, height + 1, miner=b"\x55" * 32)
    for blk in other:
        c.n.feed(blk)
    assert c.n.tip == other[-1].hash
    rewards = {
        b"bal:" + b"\x55" * 32: REGTEST.coinbase_reward * (height + 1),
    }
    assert c.n.chain.state == {**snapshot, **rewards}


# -- property: reorgs across bonds, unbonds, fees and payouts -----------------------

KEYS = [T1, T2, dev_identity(3), FRESH]
# Every key a committee can draw: the genesis-bonded dev keys and FRESH, which the
# "bond" kind bonds (a drawn FRESH once made the signer lookup fail).
SIGNERS = {i.public_key: i for i in [*(dev_identity(i) for i in range(8)), FRESH]}
# Results and attestations weigh more: an attestation needs a result, its
# beacon and a draw inside the attest window.
KINDS = ["task", "result", "result", "bond", "unbond", "fund", "attest", "attest", "none"]


def _grow(
    data: st.DataObject, b: Builder, follower: Node, o: Oracle, parent: bytes, n: int, tag: int
) -> list[Block]:
    """``n`` valid blocks on ``parent`` with random bonds, unbonds, tasks,
    results and transfers (what ``follower``, on ``parent``, refuses is
    dropped and the block made again without it)."""
    out: list[Block] = []
    tasks: dict[bytes, TaskTx] = {}
    for i in range(n):
        txs: list[Any] = []
        nonce = tag * 1_000 + i
        kind = data.draw(st.sampled_from(KINDS))
        state = follower.chain.state
        if kind == "task":
            txs.append(task(deadline=data.draw(st.integers(1, 3)), nonce=nonce, max_results=2))
        elif kind == "result":
            live = [
                (t, rec)
                for t in tasks.values()
                if (rec := state.get(task_key(t.id))) and rec["open"]
            ]
            if live:
                t, rec = data.draw(st.sampled_from(live))
                who = data.draw(st.sampled_from(KEYS))
                r = dataclasses.replace(
                    result(t, who, data.draw(st.floats(0, 1))), seed=rec["seed"], signature=b""
                ).signed_by(who, REGTEST.genesis_hash)
                o.verdicts[r.id] = ""
                txs.append(r)
        elif kind == "bond":
            txs.append(bond(FRESH, nonce=nonce))
        elif kind == "unbond":
            txs.append(unbond(data.draw(st.sampled_from(KEYS)), nonce=nonce))
        elif kind == "fund":
            txs.append(fund(FRESH, 2 * MIN, nonce=nonce))
        elif kind == "attest":
            h = follower.chain.height + 1
            open_audits = [
                (rid, bytes(k))
                for key, rec in state.items()
                if key.startswith(b"rid:")
                and (rid := key[4:])
                and rec["audit"]["selected"]
                and h <= rec["audit"]["until"]
                for k in rec["audit"]["committee"]
                if all(bytes(a[0]) != bytes(k) for a in rec["attestations"])
            ]
            if open_audits:
                rid, member = data.draw(st.sampled_from(open_audits))
                who = SIGNERS[member]
                passed = data.draw(st.booleans())
                txs.append(AttestTx(member, rid, passed, 0).signed_by(who, REGTEST.genesis_hash))
        miner = bytes([tag + 1]) * 32
        blk = b.make(parent, txs=tuple(txs), miner=miner)
        if follower.feed(blk).rejected:
            blk = b.make(parent, miner=miner, extra=b"again")
            follower.feed(blk).raise_error()
        for tx in txs:
            if isinstance(tx, TaskTx):
                tasks[tx.id] = tx
        out.append(blk)
        parent = blk.hash
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_reorgs_across_bonds_fees_and_payouts_restore_the_exact_state(
    data: st.DataObject,
) -> None:
    b, o = Builder(), Oracle()
    b.ref.verdicts = o
    fa = Node()
    fa.chain.verdicts = o
    a = _grow(data, b, fa, o, b.genesis, data.draw(st.integers(4, 16)), 0)
    fork = data.draw(st.integers(0, len(a) - 1))
    fb = Node()
    fb.chain.verdicts = o
    fb.feed_all(a[:fork])
    base = a[fork - 1].hash if fork else b.genesis
    c = _grow(data, b, fb, o, base, data.draw(st.integers(1, len(a) - fork + 3)), 1)

    n = Node()
    n.chain.verdicts = o
    seen: dict[bytes, dict[bytes, Any]] = {}
    everything = a + c
    for i in data.draw(st.permutations(range(len(everything)))):
        n.feed(everything[i])
        tip = n.chain.tip.hash
        if tip in seen:  # apply then undo restores the exact earlier state
            event("back on an earlier tip")
            assert n.chain.state == seen[tip]
        seen[tip] = dict(n.chain.state)
    winner = fa if n.tip == fa.tip else fb
    if winner is fb and fork < len(a):
        event("the fork won")
    assert n.tip == winner.tip
    assert n.chain.state == winner.chain.state
    for x in (fa, fb):
        if x.chain.height > 2 * REGTEST.payout_window:
            event("a long branch")
        if any(k.startswith(b"task:") and v["paid"] for k, v in x.chain.state.items()):
            event("a payout")
        if any(k.startswith(b"bond:") and v["unbond_at"] for k, v in x.chain.state.items()):
            event("an unbond")
        if x.chain.state.get(bond_key(FRESH.public_key)):
            event("a fresh bond")
        if any(k.startswith(b"rid:") and v["attestations"] for k, v in x.chain.state.items()):
            event("an attestation")
