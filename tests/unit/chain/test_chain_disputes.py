"""Disputes as consensus rules: challenges, their resolution by a full audit,
slashing, and payouts recomputed from the remaining results (verdicts from a
fake oracle, blocks built by hand)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from p2pml.chain.bonds import bond_key, lock_key
from p2pml.chain.disputes import UPHELD, VOIDED, ChallengeHandler, dispute_key
from p2pml.chain.index import Status
from p2pml.chain.params import REGTEST, dev_identity
from p2pml.chain.tasks import result_key, task_key
from p2pml.chain.types import ChallengeTx, TaskTx
from p2pml.crypto import Identity
from p2pml.errors import ValidationError
from tests.framework.chainbuilder import Node
from tests.unit.chain.test_chain_bonds import BFEE, FRESH, MIN, Chain, bond, fund, unbond
from tests.unit.chain.test_chain_tasks import ALLOC, FEE, PUB, T1, T2, T3, bal, task

CFEE = REGTEST.min_challenge_fee
STAKE = REGTEST.challenge_stake
DELAY = REGTEST.dispute_delay
SHARE = REGTEST.challenge_slash_share


def challenge(who: Identity, rid: bytes, fee: int = CFEE, nonce: int = 1) -> ChallengeTx:
    return ChallengeTx(who.public_key, rid, fee, nonce).signed_by(who, REGTEST.genesis_hash)


def long_task(**kw: Any) -> TaskTx:
    fields: dict[str, Any] = dict(bounty=1000, deadline=12, result_reward=5, max_results=10)
    fields.update(kw)
    return task(**fields)


def two_results(c: Chain, t: TaskTx) -> tuple[Any, Any]:
    """T1's result wins on its metric; T2's is honest and second."""
    c.mine(t)
    cheat, honest = c.result(t, T1, 0.99), c.result(t, T2, 0.7)
    c.mine(cheat, honest)
    return cheat, honest


def test_a_false_winner_is_voided_its_bond_slashed_and_the_bounty_goes_to_the_next() -> None:
    """Attack (model fitted on the holdout): it passes the cheap checks with the
    best metric, so optimistic inclusion takes it; a challenge proves it false."""
    c = Chain()
    t = long_task()
    cheat, honest = two_results(c, t)
    assert [bytes(w[0]) for w in c.state(task_key(t.id))["winners"]] == [T1.public_key]
    c.o.audits[cheat.id] = "bad-result-audit"
    blk = c.mine(challenge(T3, cheat.id))
    assert blk.txs[0].amount == REGTEST.coinbase_reward + CFEE  # type: ignore[union-attr]
    rec = c.state(result_key(cheat.id))
    assert rec["status"] == "disputed" and rec["dispute"]["resolve_at"] == blk.height + DELAY
    assert c.state(dispute_key(blk.height + DELAY)) == [cheat.id]
    assert cheat.id in c.state(lock_key(T3.public_key))
    before = bal(c.n, T3)
    for _ in range(DELAY - 1):
        c.mine()
        assert c.state(result_key(cheat.id))["status"] == "disputed"
    c.mine()  # the resolution height
    rec = c.state(result_key(cheat.id))
    assert rec["status"] == "void"
    assert rec["dispute"]["outcome"] == VOIDED and rec["dispute"]["reason"] == "bad-result-audit"
    assert c.state(bond_key(T1.public_key)) is None  # the whole bond, slashed
    assert bal(c.n, T3) == before + int(MIN * SHARE)  # its share; the rest is burned
    assert c.state(bond_key(T3.public_key)) == {"amount": MIN, "height": 0, "unbond_at": None}
    assert c.state(lock_key(T3.public_key)) is None
    assert c.state(dispute_key(blk.height + DELAY)) is None
    rec_t = c.state(task_key(t.id))
    assert rec_t["best"] == 0.7
    assert [bytes(w[0]) for w in rec_t["winners"]] == [T2.public_key]
    # Only the full audit of the disputed result was asked, once resolving.
    assert (cheat.id, True) in c.o.asked and (honest.id, True) not in c.o.asked
    while not c.state(task_key(t.id))["paid"]:
        c.mine()
    assert bal(c.n, T2) == ALLOC[T2.public_key] - FEE + 1000 + 5
    assert bal(c.n, T1) == ALLOC[T1.public_key] - FEE  # no bounty, no result reward
    assert bal(c.n, PUB) == ALLOC[PUB.public_key] - 1000 - 1000 - 50 + 45


def test_a_wrong_challenge_burns_the_challengers_stake() -> None:
    c = Chain()
    c.mine(fund(FRESH, 3 * MIN))
    c.mine(bond(FRESH, 2 * MIN))
    t = long_task()
    _cheat, honest = two_results(c, t)
    c.mine(challenge(FRESH, honest.id))
    assert c.state(bond_key(FRESH.public_key))["challenges"] == 1
    assert c.refused(unbond(FRESH)) == "bond-locked"  # locked until resolution
    for _ in range(DELAY):
        c.mine()
    rec = c.state(result_key(honest.id))
    assert rec["status"] == "ok" and rec["dispute"]["outcome"] == UPHELD
    assert c.state(bond_key(FRESH.public_key)) == {
        "amount": 2 * MIN - STAKE,
        "height": 2,  # bonded in the second block
        "unbond_at": None,
    }
    assert c.state(lock_key(FRESH.public_key)) is None
    assert bal(c.n, FRESH) == 3 * MIN - 2 * MIN - BFEE - CFEE  # nothing else moves
    c.mine(unbond(FRESH))  # unlocked again


def test_a_challenger_with_the_minimum_bond_loses_all_of_it_when_wrong() -> None:
    c = Chain()
    t = long_task()
    _cheat, honest = two_results(c, t)
    c.mine(challenge(T3, honest.id))
    for _ in range(DELAY):
        c.mine()
    assert c.state(bond_key(T3.public_key)) is None
    # Without a bond it can neither challenge nor report.
    other = c.result(t, T3, 0.1)
    assert c.refused(other) == "no-bond"


def test_each_open_challenge_needs_its_own_stake() -> None:
    """Attack: one bond backing many wrong challenges would cost one stake for
    all of them; each open challenge reserves a stake of the bond."""
    c = Chain()
    t = long_task()
    cheat, honest = two_results(c, t)
    c.mine(challenge(T3, cheat.id))
    assert c.refused(challenge(T3, honest.id)) == "challenge-no-bond"


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda tx: dataclasses.replace(tx, fee=tx.fee + 1), "bad-challenge-sig"),
        (lambda tx: challenge(T3, tx.result_id, fee=CFEE - 1), "bad-challenge-fee"),
    ],
)
def test_bad_challenges_are_stateless_rejects(mangle: Any, reason: str) -> None:
    tx = mangle(challenge(T3, b"\x01" * 32))
    with pytest.raises(ValidationError) as err:
        ChallengeHandler().check(tx, REGTEST)
    assert err.value.reason == reason
    c = Chain()
    up = c.n.feed(c.b.make(c.top, txs=(tx,), register=False))
    assert up.error is not None and up.error.reason == reason


def test_challenges_the_state_refuses() -> None:
    c = Chain()
    t = long_task()
    cheat, _honest = two_results(c, t)
    assert c.refused(challenge(T3, b"\x05" * 32)) == "challenge-unknown-result"
    assert c.refused(challenge(FRESH, cheat.id)) == "challenge-no-bond"
    # Two challenges of one result in one block, and one after the first.
    assert c.refused(challenge(T3, cheat.id), challenge(PUB, cheat.id)) == "duplicate-challenge"
    c.mine(challenge(T3, cheat.id))
    assert c.refused(challenge(PUB, cheat.id)) == "duplicate-challenge"
    for _ in range(DELAY):
        c.mine()
    # Resolved (either way): a result is disputed once, ever.
    assert c.refused(challenge(PUB, cheat.id)) == "duplicate-challenge"


def test_a_challenger_must_pay_its_fee() -> None:
    c = Chain()
    c.mine(fund(FRESH, 2 * MIN + BFEE))
    c.mine(bond(FRESH, 2 * MIN))
    t = long_task()
    cheat, _honest = two_results(c, t)
    assert bal(c.n, FRESH) == 0
    assert c.refused(challenge(FRESH, cheat.id)) == "insufficient-funds"


def test_an_unbonding_key_cannot_challenge() -> None:
    c = Chain()
    t = long_task()
    cheat, _honest = two_results(c, t)
    c.mine(unbond(T3))
    assert c.refused(challenge(T3, cheat.id)) == "challenge-no-bond"


def test_a_challenge_too_late_for_the_payout_is_refused() -> None:
    c = Chain()
    t = long_task(deadline=2)
    cheat, _honest = two_results(c, t)  # task at 1, results at 2
    c.mine()  # closes at 3: pays at 3 + W
    pay_at = c.state(task_key(t.id))["payout_at"]
    while c.n.chain.height + 1 + DELAY <= pay_at:
        c.mine()
    assert c.refused(challenge(T3, cheat.id)) == "challenge-too-late"
    while not c.state(task_key(t.id))["paid"]:
        c.mine()
    assert c.refused(challenge(T3, cheat.id)) == "challenge-too-late"


def test_a_challenge_resolving_at_the_payout_height_resolves_first() -> None:
    c = Chain()
    t = long_task(deadline=2)
    cheat, _honest = two_results(c, t)  # task at 1, results at 2
    c.o.audits[cheat.id] = "bad-result-audit"
    c.mine()  # at 3, which closes the task
    pay_at = c.state(task_key(t.id))["payout_at"]
    while c.n.chain.height < pay_at - DELAY - 1:
        c.mine()
    blk = c.mine(challenge(T3, cheat.id))
    assert blk.height + DELAY == pay_at  # resolves at the payout height itself
    while c.n.chain.height < pay_at:
        c.mine()
    assert c.state(task_key(t.id))["paid"]
    assert bal(c.n, T2) == ALLOC[T2.public_key] - FEE + 1000 + 5
    assert bal(c.n, T1) == ALLOC[T1.public_key] - FEE


def test_a_flood_of_challenges_is_bounded_per_block() -> None:
    c = Chain()
    t = long_task(max_results=20)
    c.mine(t)
    n = REGTEST.max_challenges_per_block + 1
    keys = [dev_identity(i) for i in range(4, 8)] + [PUB]  # bonded in genesis
    results = [c.result(t, who, 0.5) for who in (T1, T2, T3)]
    results += [c.result(t, who, 0.5, rnd=1) for who in (T1, T2)]
    c.mine(*results)
    flood = [challenge(k, r.id) for k, r in zip(keys, results, strict=True)]
    assert len(flood) == n
    assert c.refused(*flood) == "too-many-challenges"
    c.mine(*flood[:-1])
    c.mine(flood[-1])  # the next block takes the rest


def test_a_block_resolving_a_dispute_waits_for_the_audit_then_connects() -> None:
    c = Chain()
    t = long_task()
    cheat, _honest = two_results(c, t)
    c.mine(challenge(T3, cheat.id))
    for _ in range(DELAY - 1):
        c.mine()
    # No verdict for the full audit yet: the oracle says "unknown".
    c.o.audits[cheat.id] = None  # type: ignore[assignment]
    blk = c.b.make(c.top)
    up = c.n.feed(blk)
    assert up.error is None and up.waiting == [(blk.hash, cheat.model_cid)]
    assert c.n.tip == c.top
    assert c.n.chain.entry(blk.hash).status is Status.DATA  # type: ignore[union-attr]
    c.o.audits[cheat.id] = "bad-result-audit"
    c.n.source.apply(c.n.chain.retry_waiting())
    assert c.n.tip == blk.hash
    assert c.state(result_key(cheat.id))["status"] == "void"


def test_a_reorg_across_a_challenge_a_slash_and_a_payout_equals_a_replay() -> None:
    #   ... r(results) - x1(challenge) - x2 - x3(void, slash) - ... - paid - x'
    #               \
    #                y1 - y2 - ... (no challenge, one block longer)
    c = Chain()
    t = long_task(deadline=3)
    cheat, _honest = two_results(c, t)
    fork = c.top
    c.o.audits[cheat.id] = "bad-result-audit"
    xs = [c.mine(challenge(T3, cheat.id))]
    while not c.state(task_key(t.id))["paid"]:
        xs.append(c.mine())
    at_x = dict(c.n.chain.state)
    assert c.state(bond_key(T1.public_key)) is None
    ys: list[Any] = []
    for _ in range(len(xs) + 1):
        ys.append(c.b.make(ys[-1].hash if ys else fork, miner=b"\x55" * 32))
        c.n.feed(ys[-1]).raise_error()
    assert c.n.tip == ys[-1].hash
    assert c.state(result_key(cheat.id))["status"] == "ok"
    assert c.state(bond_key(T1.public_key)) is not None
    _assert_equals_replay(c, ys[-1].hash)
    # Back to x, two blocks longer: the slash and the payout are redone.
    x_more = [c.b.make(xs[-1].hash)]
    x_more.append(c.b.make(x_more[-1].hash))
    for blk in x_more:
        c.n.feed(blk).raise_error()
    assert c.n.tip == x_more[-1].hash
    assert c.state(result_key(cheat.id)) == at_x[result_key(cheat.id)]
    assert c.state(bond_key(T1.public_key)) is None
    _assert_equals_replay(c, x_more[-1].hash)


def _assert_equals_replay(c: Chain, tip: bytes) -> None:
    """The state after reorgs equals that of a fresh node fed the tip's chain."""
    replay = Node()
    replay.chain.verdicts = c.o
    chain = []
    e = c.n.chain.entry(tip)
    while e is not None and e.parent is not None:
        chain.append(c.b.blocks[e.hash])
        e = e.parent
    for blk in reversed(chain):
        replay.feed(blk).raise_error()
    assert replay.tip == tip
    assert replay.chain.state == c.n.chain.state


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_reorgs_across_disputes_restore_the_exact_state(data: st.DataObject) -> None:
    """Forks that challenge different results, with audits failing or passing,
    resolving, slashing and paying on some branches only: whenever a tip comes
    back its state is exactly as it was, and the end state is a replay's."""
    c = Chain()
    t = long_task(deadline=data.draw(st.integers(2, 6)), max_results=10)
    c.mine(t)
    results = [c.result(t, who, data.draw(st.floats(0, 1))) for who in (T1, T2, T3)]
    results += [c.result(t, who, data.draw(st.floats(0, 1)), rnd=1) for who in (T1, T2)]
    for r in results:
        if data.draw(st.booleans()):
            c.o.audits[r.id] = "bad-result-audit"
    c.mine(*results)
    challengers = [PUB, T1, T3, *(dev_identity(i) for i in range(4, 8))]
    blocks = [c.n.chain.tip.hash]
    seen: dict[bytes, dict[bytes, Any]] = {}
    for i in range(data.draw(st.integers(3, 14))):
        ok = [h for h in blocks if not c.n.chain.entry(h).status.failed]  # type: ignore[union-attr]
        parent = (
            c.n.chain.tip.hash
            if data.draw(st.integers(0, 2))
            else data.draw(st.sampled_from(ok[-4:]))
        )
        txs = [
            challenge(data.draw(st.sampled_from(challengers)), r.id, nonce=i)
            for r in data.draw(st.lists(st.sampled_from(results), max_size=2, unique=True))
        ]
        miner = data.draw(st.sampled_from([b"\x01" * 32, b"\x02" * 32]))
        blk = c.b.make(parent, txs=tuple(txs), miner=miner)
        blocks.append(blk.hash)
        c.n.feed(blk)
        tip = c.n.chain.tip.hash
        if tip in seen:
            assert c.n.chain.state == seen[tip]
        seen[tip] = dict(c.n.chain.state)
        for key, v in c.n.chain.state.items():
            if key.startswith(b"rid:") and v["status"] == "void":
                event("a voided result on the tip")
            if key.startswith(b"rid:") and v["dispute"] and v["dispute"]["outcome"] == UPHELD:
                event("a wrong challenge on the tip")
            if key.startswith(b"task:") and v["paid"]:
                event("a payout on the tip")
    _assert_equals_replay(c, c.n.chain.tip.hash)


def test_a_cheat_that_challenges_its_own_result_keeps_none_of_its_bond() -> None:
    """Attack: one dispute per result, so a cheat that opens it first would
    take the challenger's part of its own slashed bond; it is burned."""
    c = Chain()
    t = long_task()
    cheat, _honest = two_results(c, t)
    c.o.audits[cheat.id] = "bad-result-audit"
    c.mine(challenge(T1, cheat.id))  # T1 is the cheat's own trainer
    before = bal(c.n, T1)
    for _ in range(DELAY):
        c.mine()
    rec = c.state(result_key(cheat.id))
    assert rec["status"] == "void"
    assert c.state(bond_key(T1.public_key)) is None
    assert bal(c.n, T1) == before  # no share of its own bond
