"""Beacon audit selection, auditor committees and attestations as consensus
rules (verdicts from a fake oracle, blocks built by hand)."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest

from p2pml.chain.audits import (
    audit_queue_key,
    committee_positions,
    draw_committee,
    fee_hold,
    is_selected,
)
from p2pml.chain.bonds import BONDED_KEY, bond_key
from p2pml.chain.params import REGTEST, dev_identity
from p2pml.chain.tasks import result_key, task_key
from p2pml.chain.txrules import handler_for
from p2pml.chain.types import AttestTx, Block, ResultTx, TaskTx
from p2pml.crypto import Identity
from p2pml.errors import ValidationError
from tests.framework.chainbuilder import Node
from tests.unit.chain.test_chain_bonds import FRESH, Chain, bond, fund, unbond
from tests.unit.chain.test_chain_tasks import FEE, T1, T2, bal, task

D = REGTEST.audit_delay
AW = REGTEST.attest_window
DEV = {dev_identity(i).public_key: dev_identity(i) for i in range(8)}
HOLD = fee_hold(REGTEST, FEE)


def attest(who: Identity, rid: bytes, passed: bool = True, fee: int = 0) -> AttestTx:
    return AttestTx(who.public_key, rid, passed, fee).signed_by(who, REGTEST.genesis_hash)


def audit(c: Chain, rid: bytes) -> dict[str, Any]:
    return c.state(result_key(rid))["audit"]  # type: ignore[no-any-return]


def committee(c: Chain, rid: bytes) -> list[Identity]:
    return [DEV[bytes(k)] for k in audit(c, rid)["committee"]]


def included(c: Chain, who: Identity = T1, metric: float = 0.5) -> tuple[TaskTx, ResultTx]:
    """A task and ``who``'s result on ``c``, included in the tip block."""
    t = task(nonce=len(c.seeds) + 1)
    c.mine(t)
    r = c.result(t, who, metric)
    c.mine(r)
    return t, r


def at_beacon(c: Chain, rid: bytes) -> Block:
    """Mine up to and including the result's beacon block."""
    beacon_at = c.state(result_key(rid))["beacon_at"]
    blk = None
    while c.n.chain.height < beacon_at:
        blk = c.mine()
    assert blk is not None
    return blk


def shuffled(beacon: bytes, rid: bytes, keys: list[bytes]) -> list[bytes]:
    """docs/consensus.md's committee shuffle, on a whole list (a second
    reading of the rule: the code walks it lazily)."""
    out = list(keys)
    for j in range(len(out)):
        d = hashlib.sha256(b"p2pml-committee" + beacon + rid + j.to_bytes(4, "big")).digest()
        r = j + int.from_bytes(d[:8], "big") % (len(out) - j)
        out[j], out[r] = out[r], out[j]
    return out


class FakeBonds:
    """The two state reads a committee draw makes, counted: the bonded-key
    index and bond records (``eligible(key)`` decides each one's)."""

    def __init__(self, keys: list[bytes], eligible: Any = lambda _k: True) -> None:
        self.keys = sorted(keys)
        self.eligible = eligible
        self.bond_reads = 0

    def get(self, key: bytes, default: Any = None) -> Any:
        if key == BONDED_KEY:
            return self.keys
        self.bond_reads += 1
        k = key[len(bond_key(b"")) :]
        return {
            "amount": REGTEST.min_bond,
            "height": 0,
            "unbond_at": None if self.eligible(k) else 1,
        }


def key_n(i: int) -> bytes:
    return hashlib.sha256(b"key %d" % i).digest()


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 64])
def test_the_shuffle_visits_every_position_once(n: int) -> None:
    for i in range(5):
        beacon, rid = key_n(1000 + i), key_n(2000 + i)
        walk = list(committee_positions(beacon, rid, n))
        assert sorted(walk) == list(range(n))
        keys = [key_n(j) for j in range(n)]
        assert [keys[p] for p in walk] == shuffled(beacon, rid, keys)


def test_a_draw_reads_a_few_bonds_not_every_bonded_key() -> None:
    """Version 5 read and ranked every bonded key per selected result."""
    view = FakeBonds([key_n(i) for i in range(20_000)])
    got = draw_committee(view, REGTEST, key_n(-1), 10**6, key_n(-2), key_n(5))  # type: ignore[arg-type]
    assert len(got) == REGTEST.committee_size == len(set(got))
    assert view.bond_reads <= REGTEST.committee_size + 1  # + the trainer, if visited
    # A third eligible: about three times the reads, still nowhere near 20,000.
    third = FakeBonds(view.keys, lambda k: k[0] % 3 == 0)
    got = draw_committee(third, REGTEST, key_n(-1), 10**6, key_n(-2), key_n(5))  # type: ignore[arg-type]
    assert len(got) == REGTEST.committee_size and all(k[0] % 3 == 0 for k in got)
    assert third.bond_reads < 100


def test_the_draw_is_uniform_over_eligible_keys_and_skips_the_rest() -> None:
    keys = [key_n(i) for i in range(12)]
    trainer, barred = keys[0], set(keys[1:4])  # the trainer; three unbonding keys
    eligible = [k for k in keys if k != trainer and k not in barred]
    seats = {k: 0 for k in eligible}
    draws = 3_000
    for i in range(draws):
        view = FakeBonds(keys, lambda k: k not in barred)
        got = draw_committee(view, REGTEST, key_n(10_000 + i), 10**6, key_n(-i), trainer)  # type: ignore[arg-type]
        assert len(got) == 3 and len(set(got)) == 3 and set(got) <= set(eligible)
        for k in got:
            seats[k] += 1
    # Each of the 8 eligible keys sits 3/8 of the time: 1,125 expected,
    # sd ~ 26.5; 5 sd either way.
    for k, n in seats.items():
        assert abs(n - draws * 3 / 8) < 135, (k.hex()[:8], n)
    # Fewer eligible than seats: all of them.
    few = FakeBonds(keys, lambda k: k in keys[:2])
    assert set(draw_committee(few, REGTEST, key_n(1), 10**6, key_n(2), trainer)) == {keys[1]}  # type: ignore[arg-type]


def test_a_reorg_redraws_the_committee_and_back_restores_it() -> None:
    """A reorg onto another beacon redraws the committee as a node that only
    saw that branch draws it; back on the first branch, the first committee."""
    c = Chain()
    _t, r = included(c)
    fork = c.top
    beacon_a = at_beacon(c, r.id)
    assert beacon_a.prev_hash == fork  # regtest: the beacon is the next block
    on_a = list(audit(c, r.id)["committee"])
    # A heavier branch from the result's block: another beacon, redrawn.
    side = c.b.chain(fork, 2, extra=b"side")
    for blk in side:
        c.n.feed(blk)
    assert c.n.tip == side[-1].hash and audit(c, r.id)["beacon"] == side[0].hash
    on_b = list(audit(c, r.id)["committee"])
    assert on_b != on_a
    # A node that only ever saw branch b draws the same.
    fresh = Node()
    fresh.chain.verdicts = c.o
    for e in c.n.chain.active[1:]:
        fresh.feed(c.b.blocks[e.hash]).raise_error()
    assert fresh.chain.state[result_key(r.id)]["audit"]["committee"] == on_b
    # Branch a overtakes again: the first committee comes back exactly.
    for blk in c.b.chain(beacon_a.hash, 2):
        c.n.feed(blk)
    assert audit(c, r.id)["beacon"] == beacon_a.hash
    assert list(audit(c, r.id)["committee"]) == on_a


def test_a_result_waits_for_its_beacon_then_gets_a_committee() -> None:
    c = Chain()
    _t, r = included(c)
    h = c.n.chain.height
    rec = c.state(result_key(r.id))
    assert rec["beacon_at"] == h + D and rec["attestations"] == []
    # Nothing is known at inclusion: the includer cannot see the outcome.
    assert audit(c, r.id) == {
        "hold": HOLD,
        "beacon": None,
        "selected": None,
        "committee": [],
        "until": None,
    }
    assert c.state(audit_queue_key(h + D)) == [r.id]
    beacon = at_beacon(c, r.id)
    a = audit(c, r.id)
    assert a["beacon"] == beacon.hash and a["selected"] is True  # regtest: every result
    assert a["until"] == h + D + AW
    # Every dev key is bonded in genesis; the trainer never judges itself.
    bonded = sorted(DEV)
    expect = [k for k in shuffled(beacon.hash, r.id, bonded) if k != T1.public_key]
    assert [bytes(k) for k in a["committee"]] == expect[: REGTEST.committee_size]


def test_members_attest_and_are_paid_from_the_held_fee() -> None:
    c = Chain()
    _t, r = included(c)
    at_beacon(c, r.id)
    members = committee(c, r.id)
    before = {m.public_key: bal(c.n, m) for m in members}
    c.mine(attest(members[0], r.id), attest(members[1], r.id, passed=False, fee=7))
    share = HOLD // REGTEST.committee_size
    assert bal(c.n, members[0]) == before[members[0].public_key] + share
    assert bal(c.n, members[1]) == before[members[1].public_key] + share - 7
    assert bal(c.n, members[2]) == before[members[2].public_key]  # did not attest
    got = c.state(result_key(r.id))["attestations"]
    h = c.n.chain.height
    assert got == [[members[0].public_key, True, h], [members[1].public_key, False, h]]
    # A failing attestation is recorded, nothing more: the result still wins
    # (voiding it is the dispute path's job).
    rec = c.state(task_key(r.task_id))
    assert [bytes(w[1]) for w in rec["winners"]] == [r.id]
    for _ in range(AW):
        c.mine()
    # The absent member's share and the division's rest are burned.
    assert bal(c.n, members[2]) == before[members[2].public_key]


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda tx: dataclasses.replace(tx, passed=not tx.passed), "bad-attest-sig"),
        (lambda tx: dataclasses.replace(tx, fee=tx.fee + 1), "bad-attest-sig"),
        (lambda tx: AttestTx(tx.attester, tx.result_id, True, 0, tx.signature), "bad-attest-sig"),
    ],
)
def test_forged_attestations_are_stateless_rejects(mangle: Any, reason: str) -> None:
    tx = attest(T2, bytes(32), passed=False, fee=3)
    handler_for(tx).check(tx, REGTEST)
    with pytest.raises(ValidationError) as err:
        handler_for(tx).check(mangle(tx), REGTEST)
    assert err.value.reason == reason


def test_an_attestation_signed_for_another_network_is_refused() -> None:
    other = dataclasses.replace(REGTEST, genesis_message=b"another network")
    tx = AttestTx(T2.public_key, bytes(32), True, 0).signed_by(T2, other.genesis_hash)
    with pytest.raises(ValidationError) as err:
        handler_for(tx).check(tx, REGTEST)
    assert err.value.reason == "bad-attest-sig"


def test_attestations_the_state_refuses() -> None:
    c = Chain()
    assert c.refused(attest(T2, bytes(32))) == "attest-unknown-result"
    _t, r = included(c)
    # In the blocks up to the beacon (included), the committee is unknown.
    for _ in range(D):
        assert c.refused(attest(T2, r.id)) == "attest-too-early"
        c.mine()
    members = committee(c, r.id)
    inside = {m.public_key for m in members}
    outsider = next(i for k, i in DEV.items() if k not in inside and i != T1)
    assert c.refused(attest(outsider, r.id)) == "not-in-committee"
    assert c.refused(attest(T1, r.id)) == "not-in-committee"  # the trainer itself
    c.mine(attest(members[0], r.id))
    assert c.refused(attest(members[0], r.id, passed=False)) == "duplicate-attest"
    assert c.refused(attest(members[1], r.id), attest(members[1], r.id, fee=1)) == (
        "duplicate-attest"
    )
    poor = members[2]
    assert c.refused(attest(poor, r.id, fee=bal(c.n, poor) + HOLD)) == "insufficient-funds"
    for _ in range(AW - 1):
        c.mine()
    assert c.refused(attest(members[1], r.id)) == "attest-too-late"


def test_a_result_the_beacon_does_not_select_takes_no_attestation() -> None:
    c = Chain(dataclasses.replace(REGTEST, audit_fraction=0.0))
    t = task()
    c.mine(t)
    best, worse = c.result(t, T1, 0.9), c.result(t, T2, 0.1)
    c.mine(best, worse)
    c.mine()  # the beacon
    assert audit(c, best.id)["selected"] is True  # a winner always is
    assert audit(c, worse.id)["selected"] is False
    assert audit(c, worse.id)["committee"] == []
    anyone = next(i for k, i in DEV.items() if i not in (T1, T2))
    assert c.refused(attest(anyone, worse.id)) == "attest-not-selected"


def test_the_committee_holds_only_mature_bonded_keys() -> None:
    c = Chain(dataclasses.replace(REGTEST, committee_size=8, bond_maturity=3))
    c.mine(fund(FRESH, 3 * REGTEST.min_bond))
    for _ in range(3):  # the dev keys' genesis bonds mature
        c.mine()
    t = task()
    c.mine(t, bond(FRESH), unbond(T2))
    assert FRESH.public_key in c.state(BONDED_KEY)
    r = c.result(t, T1)
    c.mine(r)
    at_beacon(c, r.id)  # FRESH's bond is 2 blocks old here
    keys = {bytes(k) for k in audit(c, r.id)["committee"]}
    # Not the trainer, not an unbonding key, not a bond younger than maturity.
    assert keys == set(DEV) - {T1.public_key, T2.public_key}
    for _ in range(REGTEST.unbond_delay):
        c.mine()
    assert T2.public_key not in c.state(BONDED_KEY)  # released: out of the index
    _t, r2 = included(c, who=dev_identity(3))
    at_beacon(c, r2.id)
    keys = {bytes(k) for k in audit(c, r2.id)["committee"]}
    assert FRESH.public_key in keys and T2.public_key not in keys


def test_selection_and_committee_are_the_same_on_every_node_and_follow_the_beacon() -> None:
    c = Chain()
    _t, r = included(c)
    fork = c.top
    at_beacon(c, r.id)
    mine = committee(c, r.id)
    # Replay the same blocks on a fresh node: the same draw.
    replay = Node()
    replay.chain.verdicts = c.o
    for e in c.n.chain.active[1:]:
        replay.feed(c.b.blocks[e.hash]).raise_error()
    assert replay.chain.state == c.n.chain.state
    # Another beacon block (same includer, another miner's block at h + D)
    # draws other committees: the outcome is the beacon's, not the includer's.
    drawn = {tuple(k.public_key for k in mine)}
    for i in range(8):
        blk = c.b.make(fork, extra=b"beacon %d" % i)
        n = Node()
        n.chain.verdicts = c.o
        for e in c.n.chain.active[1:]:
            if e.height <= c.b.entry(fork).height:
                n.feed(c.b.blocks[e.hash]).raise_error()
        n.feed(blk).raise_error()
        drawn.add(tuple(bytes(k) for k in n.chain.state[result_key(r.id)]["audit"]["committee"]))
    assert len(drawn) > 1


def test_an_includer_grinding_its_block_cannot_escape_the_audit_of_a_winner() -> None:
    """Attack (audit grinding): before, whether a result was re-trained was a
    hash of the including block, so a miner including its own bad result
    re-made that block until the result escaped (90 % of the time at main's
    10 %). Now nothing is drawn at inclusion, the draw comes from the block
    D later, and a winner is always selected: no version of the including
    block lets the cheater's winning result escape its committee."""
    p = dataclasses.replace(REGTEST, audit_fraction=0.1)
    escaped = escaped_before = 0
    for i in range(20):
        c = Chain(p)
        t = task()
        c.mine(t)
        cheat = c.result(t, T1, 1.0)  # best metric: it would take the bounty
        blk = c.b.make(c.top, txs=(cheat,), extra=b"grind %d" % i)
        c.n.feed(blk).raise_error()
        c.top = blk.hash
        assert audit(c, cheat.id)["selected"] is None  # nothing to grind on yet
        # The rule before: sha256(including block || result id) under 10 %.
        old_draw = int.from_bytes(hashlib.sha256(blk.hash + cheat.id).digest()[:8], "big")
        escaped_before += old_draw >= int(p.audit_fraction * 2**64)
        at_beacon(c, cheat.id)
        a = audit(c, cheat.id)
        escaped += not a["selected"] or not a["committee"]
    assert escaped == 0
    assert escaped_before > 0  # the old rule let the grinder pick an unaudited block


def test_a_non_winner_is_selected_by_the_beacon_draw() -> None:
    p = dataclasses.replace(REGTEST, audit_fraction=0.5)
    c = Chain(p)
    t = task()
    c.mine(t)
    rs = [c.result(t, dev_identity(i), 0.1 * i) for i in range(1, 8)]
    c.mine(*rs)
    beacon = c.mine()
    for r in rs:
        winner = r is rs[-1]
        expect = is_selected(p, beacon.hash, r.id, winner)
        assert audit(c, r.id)["selected"] is expect


def test_reorgs_undo_attestations_exactly() -> None:
    c = Chain()
    _t, r = included(c)
    at_beacon(c, r.id)
    base = c.top
    members = committee(c, r.id)
    before = dict(c.n.chain.state)
    a1 = c.mine(attest(members[0], r.id), attest(members[1], r.id, passed=False))
    a2 = c.mine()
    with_attests = dict(c.n.chain.state)
    # A heavier branch from before the attestations, without them.
    b1 = c.b.make(base, extra=b"b1")
    b2 = c.b.make(b1.hash, extra=b"b2")
    b3 = c.b.make(b2.hash, extra=b"b3")
    for blk in (b1, b2, b3):
        c.n.feed(blk).raise_error()
    assert c.n.tip == b3.hash
    assert c.state(result_key(r.id))["attestations"] == []
    shadow = Node()
    shadow.chain.verdicts = c.o
    for e in c.n.chain.active[1:]:
        shadow.feed(c.b.blocks[e.hash]).raise_error()
    assert c.n.chain.state == shadow.chain.state
    for k, v in before.items():  # nothing the attestations changed survives
        if k.startswith(b"rid:"):
            assert c.n.chain.state[k] == v
    # And back: the attesting branch grows heavier again.
    a3 = c.b.make(a2.hash, extra=b"a3")
    a4 = c.b.make(a3.hash, extra=b"a4")
    for blk in (a3, a4):
        c.n.feed(blk).raise_error()
    assert c.n.tip == a4.hash
    assert a1.hash in {e.hash for e in c.n.chain.active}
    got, want = c.state(result_key(r.id)), with_attests[result_key(r.id)]
    assert got["attestations"] == want["attestations"]
    # The failing attestation opened the same dispute again (it has resolved
    # by a4, two blocks later); the whole state is what a replay gives.
    assert got["dispute"]["by"] == want["dispute"]["by"] == members[1].public_key
    replay = Node()
    replay.chain.verdicts = c.o
    for e in c.n.chain.active[1:]:
        replay.feed(c.b.blocks[e.hash]).raise_error()
    assert c.n.chain.state == replay.chain.state


def test_a_failing_attestation_opens_a_dispute_by_its_member() -> None:
    """The join of committees and disputes: a member's failing attestation is
    a challenge with the member's bond at stake; the audit then decides."""
    c = Chain()
    _t, r = included(c)
    at_beacon(c, r.id)
    members = committee(c, r.id)
    c.o.audits[r.id] = "bad-result-audit"
    blk = c.mine(attest(members[0], r.id, passed=False), attest(members[1], r.id, passed=False))
    rec = c.state(result_key(r.id))
    assert rec["status"] == "disputed"
    assert rec["dispute"]["by"] == members[0].public_key  # the first opens it
    assert rec["dispute"]["resolve_at"] == blk.height + REGTEST.dispute_delay
    assert [a[1] for a in rec["attestations"]] == [False, False]  # both recorded
    while c.n.chain.height < blk.height + REGTEST.dispute_delay:
        c.mine()
    rec = c.state(result_key(r.id))
    assert rec["status"] == "void" and rec["dispute"]["reason"] == "bad-result-audit"


def test_params_keep_the_attest_window_inside_the_payout_window() -> None:
    with pytest.raises(ValueError, match="payout_window"):
        dataclasses.replace(REGTEST, audit_delay=3, attest_window=2, payout_window=5)
    with pytest.raises(ValueError, match="attest_fee_share"):
        dataclasses.replace(REGTEST, attest_fee_share=1.5)


def test_failing_attestations_past_the_blocks_challenge_cap_are_recorded_not_disputed() -> None:
    """Attack: members fail-attest many results in one block, each a full
    re-run on every node; they count against `max_challenges_per_block`.
    Past it the verdict is recorded and paid, and opens no dispute."""
    p = dataclasses.replace(REGTEST, max_challenges_per_block=1)
    c = Chain(p)
    _t1, r1 = included(c)
    _t2, r2 = included(c, who=dev_identity(2))
    at_beacon(c, r2.id)  # r1's beacon came first
    fails = [attest(committee(c, r.id)[0], r.id, passed=False) for r in (r1, r2)]
    c.mine(*fails)
    recs = [c.state(result_key(r.id)) for r in (r1, r2)]
    assert [rec["status"] for rec in recs] == ["disputed", "ok"]
    assert all(len(rec["attestations"]) == 1 for rec in recs)  # both recorded


def test_a_failing_attestation_whose_bond_cannot_take_the_stake_is_still_recorded() -> None:
    """A member whose bond is being released cannot stake it: its failing
    verdict is recorded and paid (refusing it would pay members to say
    "pass" unchecked), and no dispute opens."""
    c = Chain()
    _t, r = included(c)
    at_beacon(c, r.id)
    member = committee(c, r.id)[0]
    c.mine(unbond(member))
    before = bal(c.n, member)
    c.mine(attest(member, r.id, passed=False))
    rec = c.state(result_key(r.id))
    assert rec["status"] == "ok" and rec["dispute"] is None
    assert [bytes(a[0]) for a in rec["attestations"]] == [member.public_key]
    assert bal(c.n, member) == before + HOLD // len(audit(c, r.id)["committee"])
