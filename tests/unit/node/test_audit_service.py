"""AuditService against fakes of its ports (real consensus underneath): the
committee members, and only they, audit a result once its beacon arrives,
and attest with the audit's verdict; a result whose data is missing is
tried again at the next tip."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from p2pml.chain.encoding import encode_tx
from p2pml.chain.params import REGTEST, dev_identity
from p2pml.chain.tasks import result_key
from p2pml.chain.txrules import handler_for
from p2pml.chain.types import AttestTx, Block, ResultTx
from p2pml.crypto import Identity
from p2pml.errors import ValidationError
from p2pml.ipfs.cid import cid_of_bytes
from p2pml.node.attest_orphans import AttestOrphans
from p2pml.node.audits import AuditService
from p2pml.node.mempool import Mempool
from p2pml.node.relay import Relay
from p2pml.node.verifier import Request
from tests.framework.chainbuilder import NOW, Builder
from tests.unit.chain.test_chain_tasks import FEE, task
from tests.unit.node.fakes import FakeChain, FakeGossip, Jobs

TRAINER = dev_identity(1)
DEV = [dev_identity(i) for i in range(8)]


class AuditVerifier:
    """Answers audits with ``answers`` in turn (None: data missing)."""

    def __init__(self, *answers: str | None) -> None:
        self.answers = list(answers) or [""]
        self.asked: list[Request] = []

    def peek(self, *_a: Any) -> str | None:
        return None

    async def check(self, req: Request, background: bool = False) -> str | None:
        self.asked.append(req)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


class Seat:
    def __init__(self, chain: FakeChain, who: Identity, jobs: Jobs, *answers: str | None):
        self.who = who
        self.pool, self.gossip = Mempool(REGTEST), FakeGossip()
        self.verifier = AuditVerifier(*answers)
        self.svc = AuditService(
            who,
            chain,
            self.pool,
            self.verifier,
            Relay(chain, self.gossip),
            lambda: None,
            jobs,
            enabled=True,
        )

    def attests(self) -> list[AttestTx]:
        return [tx for tx in self.pool.txs.values() if isinstance(tx, AttestTx)]


class World:
    def __init__(self) -> None:
        self.chain, self.jobs, self.b = FakeChain(), Jobs(), Builder()
        self.chain.node.chain.verdicts = lambda _tx, _task, _audit: ""  # cheap checks pass
        self.top = self.b.genesis

    async def mine(self, *txs: Any) -> Block:
        blk = self.b.make(self.top, txs=tuple(txs))
        (await self.chain.submit_block(blk)).raise_error()
        self.top = blk.hash
        await self.jobs.settle()
        return blk

    async def result(self) -> ResultTx:
        t = task()
        seed = (await self.mine(t)).hash
        r = ResultTx(
            t.id, seed, 0, TRAINER.public_key, 0.5, cid_of_bytes(b"a model"), 100, 5, FEE
        ).signed_by(TRAINER, REGTEST.genesis_hash)
        await self.mine(r)
        return r

    def committee(self, rid: bytes) -> set[bytes]:
        rec = self.chain.chain.state[result_key(rid)]
        return {bytes(k) for k in rec["audit"]["committee"]}


async def test_members_and_only_members_audit_and_attest_after_the_beacon() -> None:
    w = World()
    seats = [Seat(w.chain, who, w.jobs) for who in DEV]
    r = await w.result()
    assert all(not s.verifier.asked for s in seats)  # no beacon yet: nobody audits
    await w.mine()  # the beacon (audit_delay 1)
    members = w.committee(r.id)
    assert len(members) == REGTEST.committee_size and TRAINER.public_key not in members
    for s in seats:
        if s.who.public_key in members:
            (req,) = s.verifier.asked
            assert req.audit and req.tx == r  # the result as its block holds it
            (att,) = s.attests()
            assert att.passed and att.result_id == r.id and att.attester == s.who.public_key
            handler_for(att).check(att, REGTEST)  # signed for the network
            assert s.gossip.published == [("attests", encode_tx(att))]
            assert s.svc.counts == {"passed": 1}
        else:
            assert not s.verifier.asked and not s.attests() and not s.svc.counts
    # In a block: the members' attestations count, and nobody audits again.
    atts = [a for s in seats for a in s.attests()]
    await w.mine(*atts)
    rec = w.chain.chain.state[result_key(r.id)]
    assert {bytes(a[0]) for a in rec["attestations"]} == members
    assert all(len(s.verifier.asked) == (s.who.public_key in members) for s in seats)


async def test_a_failed_audit_attests_fail_and_missing_data_is_tried_again() -> None:
    w = World()
    r = await w.result()
    await w.mine()  # the beacon: its committee is known now
    first, second = sorted(w.committee(r.id))[:2]
    by_key = {who.public_key: who for who in DEV}
    failing = Seat(w.chain, by_key[first], w.jobs, "bad-result-audit")
    waiting = Seat(w.chain, by_key[second], w.jobs, None, "")
    # Seated after the beacon (a node started late): start() finds the seats.
    failing.svc.start()
    waiting.svc.start()
    await w.jobs.settle()
    (att,) = failing.attests()
    assert not att.passed and failing.svc.counts == {"failed": 1}
    assert not waiting.attests() and waiting.svc.counts == {"pending": 1}
    await w.mine()  # the next tip: the audit is tried again
    (att2,) = waiting.attests()
    assert att2.passed and waiting.svc.counts == {"pending": 1, "passed": 1}
    assert len(waiting.verifier.asked) == 2
    assert len(failing.verifier.asked) == 1  # attested: not audited again


async def test_no_audit_once_the_window_has_ended() -> None:
    w = World()
    r = await w.result()
    await w.mine()  # the beacon
    for _ in range(REGTEST.attest_window):
        await w.mine()
    member = next(who for who in DEV if who.public_key in w.committee(r.id))
    late = Seat(w.chain, member, w.jobs)
    late.svc.start()
    await w.jobs.settle()
    assert not late.verifier.asked and not late.attests()


async def test_a_dispute_opened_by_a_failing_attestation_is_audited_by_every_node() -> None:
    """Every node must hold a dispute's full-audit verdict by its resolution
    height, whoever opened it: here a committee member's failing attestation,
    not a challenge transaction."""
    from p2pml.node.challenges import ChallengeService

    w = World()
    members_seats = [Seat(w.chain, who, w.jobs, "bad-result-audit") for who in DEV]
    bystander = AuditVerifier()
    ChallengeService(
        dev_identity(7), w.chain, Mempool(REGTEST), bystander, Relay(w.chain, FakeGossip()),
        lambda: None, w.jobs,
    )  # fmt: skip
    r = await w.result()
    await w.mine()  # the beacon: members audit, find it false, attest so
    failing = [a for s in members_seats for a in s.attests() if not a.passed]
    assert failing
    assert not bystander.asked
    await w.mine(failing[0])
    assert w.chain.chain.state[result_key(r.id)]["status"] == "disputed"
    assert [(q.tx.id, q.audit) for q in bystander.asked] == [(r.id, True)]


def attest(who: Identity, rid: bytes, passed: bool = True, fee: int = 0) -> AttestTx:
    return AttestTx(who.public_key, rid, passed, fee).signed_by(who, REGTEST.genesis_hash)


async def test_an_attestation_before_its_beacon_is_held_then_pooled_and_relayed() -> None:
    """A member's attestation that outruns the beacon block to a node is
    refused there as early, held, and pooled and gossiped on once the
    beacon connects (before the buffer it was lost)."""
    w = World()
    r = await w.result()
    # A node that does not sit on the committee (so it attests nothing itself).
    node = Seat(w.chain, dev_identity(0), w.jobs)
    node.svc.enabled = False
    # Which keys the beacon draws is not known yet: members attest after it,
    # on their own nodes; the early copies reach this one first.
    early = [attest(who, r.id) for who in DEV if who.public_key != TRAINER.public_key]
    for a in early:
        with pytest.raises(ValidationError) as exc:
            await node.svc.submit(a, "peer-x")
        assert exc.value.reason == "attest-too-early"
    assert len(node.svc.orphans) == len(early) and not node.attests()
    await w.mine()  # the beacon
    await w.jobs.settle()
    members = w.committee(r.id)
    got = node.attests()
    assert {a.attester for a in got} == members  # the others are not-in-committee
    assert len(node.svc.orphans) == 0
    relayed = {p for k, p in node.gossip.published if k == "attests"}
    assert relayed == {encode_tx(a) for a in got}
    # And a block may include them: the members are paid.
    await w.mine(*got)
    rec = w.chain.chain.state[result_key(r.id)]
    assert {bytes(a[0]) for a in rec["attestations"]} == members


async def test_an_attestation_before_its_results_block_is_held_through_the_beacon() -> None:
    """A node that lacks the result's block too (it lags, or that block waits
    for its data) holds the attestation, then holds it for the beacon."""
    w = World()
    t = task()
    seed = (await w.mine(t)).hash
    r = ResultTx(
        t.id, seed, 0, TRAINER.public_key, 0.5, cid_of_bytes(b"a model"), 100, 5, FEE
    ).signed_by(TRAINER, REGTEST.genesis_hash)
    node = Seat(w.chain, dev_identity(0), w.jobs)
    node.svc.enabled = False
    early = [attest(who, r.id) for who in DEV if who.public_key != TRAINER.public_key]
    for a in early:
        with pytest.raises(ValidationError) as exc:
            await node.svc.submit(a, "peer-x")
        assert exc.value.reason == "attest-unknown-result"
    assert len(node.svc.orphans) == len(early)
    await w.mine(r)  # the result's block: now early for the beacon
    assert len(node.svc.orphans) == len(early) and not node.attests()
    await w.mine()  # the beacon
    await w.jobs.settle()
    assert {a.attester for a in node.attests()} == w.committee(r.id)
    assert len(node.svc.orphans) == 0


async def test_an_attestation_of_a_result_that_never_comes_expires() -> None:
    w = World()
    node = Seat(w.chain, dev_identity(0), w.jobs)
    with pytest.raises(ValidationError):
        await node.svc.submit(attest(DEV[2], bytes(32)), "peer-x")
    assert len(node.svc.orphans) == 1
    for _ in range(1 + REGTEST.audit_delay + REGTEST.attest_window):
        assert len(node.svc.orphans) == 1
        await w.mine()
    assert len(node.svc.orphans) == 0


async def test_only_signed_attestations_of_bonded_keys_are_held() -> None:
    w = World()
    r = await w.result()
    node = Seat(w.chain, dev_identity(0), w.jobs)
    stranger = Identity.generate()  # holds no bond: can never sit on a committee
    forged = dataclasses.replace(attest(DEV[2], r.id), passed=False)  # signature broken
    by_trainer = attest(TRAINER, r.id)  # never on its own result's committee
    for tx, reason in (
        (attest(stranger, r.id), "attest-too-early"),
        (forged, "bad-attest-sig"),
        (by_trainer, "attest-too-early"),
    ):
        with pytest.raises(ValidationError) as exc:
            await node.svc.submit(tx, "peer-x")
        assert exc.value.reason == reason
    assert len(node.svc.orphans) == 0
    # Our own early attestation (from the API) is refused, not held.
    with pytest.raises(ValidationError):
        await node.svc.submit(attest(DEV[2], r.id), "api")
    assert len(node.svc.orphans) == 0


async def test_held_attestations_expire_with_their_window() -> None:
    w = World()
    r = await w.result()
    node = Seat(w.chain, dev_identity(0), w.jobs)
    node.svc.enabled = False
    held = [attest(who, r.id) for who in DEV[2:]]
    for a in held:
        with pytest.raises(ValidationError):
            await node.svc.submit(a, "peer-x")
    assert len(node.svc.orphans) == len(held)
    # The tip jumps past the window (a branch connected at once): nothing
    # held may be included any more, so nothing is pooled and all is dropped.
    blocks = []
    top = w.top
    for _ in range(1 + REGTEST.attest_window):
        blk = w.b.make(top)
        blocks.append(blk)
        top = blk.hash
    for blk in blocks[:-1]:
        w.chain.node.chain.accept_block(blk, NOW)  # no tip report: as one update
    await w.chain.submit_block(blocks[-1])
    await w.jobs.settle()
    assert len(node.svc.orphans) == 0 and not node.attests()


def test_the_buffer_is_bounded_per_peer_and_in_total() -> None:
    rid = bytes(32)
    keys = [Identity.generate() for _ in range(12)]
    buf = AttestOrphans(per_peer=3, total=5)
    for k in keys[:4]:
        assert buf.add(attest(k, rid), "flooder", 10, 20)
    # A peer over its cap loses its own oldest, not someone else's.
    assert buf.peer_count("flooder") == 3 and len(buf) == 3
    assert not buf.add(attest(keys[3], rid, fee=1), "other", 10, 20)  # same pair: one entry
    assert buf.add(attest(keys[4], rid), "honest", 10, 20)
    assert buf.add(attest(keys[5], rid), "honest", 10, 20)
    assert len(buf) == 5
    # Full: the fullest peer (the flooder) makes room.
    assert buf.add(attest(keys[6], rid), "third", 10, 20)
    assert len(buf) == 5 and buf.peer_count("flooder") == 2 and buf.peer_count("honest") == 2
    # Ready at the beacon height, in arrival order; nothing before it.
    assert buf.take_ready(9) == []
    got = buf.take_ready(10)
    assert [o.tx.attester for o in got] == [k.public_key for k in (keys[2], keys[3], *keys[4:7])]
    assert len(buf) == 0 and buf.peer_count("flooder") == 0
    # Expired ones are dropped, not returned.
    buf.add(attest(keys[7], rid), "p", 10, 12)
    assert buf.take_ready(12) == [] and len(buf) == 0


def test_one_key_over_many_peers_cannot_push_others_out() -> None:
    """Attestations of results not known yet cannot be checked against their
    committee, so one bonded key can sign any number of them: spread over
    fresh peer ids (one entry each), it used to flush the whole buffer."""
    honest = [Identity.generate() for _ in range(3)]
    buf = AttestOrphans(per_peer=64, total=16, per_signer=4)
    for i, k in enumerate(honest):
        assert buf.add(attest(k, bytes([i]) * 32), "honest", 10, 20)
    sybil = Identity.generate()
    for i in range(1_000):
        buf.add(attest(sybil, i.to_bytes(32, "big")), f"sybil-{i}", 10, 20)
    assert len(buf) == 3 + 4  # the key's quota, not the buffer
    kept = {o.tx.attester for o in buf.take_ready(10)}
    assert {k.public_key for k in honest} <= kept
    # Many keys: a full buffer evicts from the key holding most.
    buf = AttestOrphans(per_peer=64, total=6, per_signer=4)
    for i, k in enumerate(honest):
        assert buf.add(attest(k, bytes([i]) * 32), "honest", 10, 20)
    for i in range(4):
        buf.add(attest(sybil, i.to_bytes(32, "big")), f"sybil-{i}", 10, 20)
    assert len(buf) == 6
    assert {k.public_key for k in honest} <= {o.tx.attester for o in buf.take_ready(10)}
