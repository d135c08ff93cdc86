"""The node's federated oracle: update checks (shape, values, the sample
count a participant claims) and round closes (G_{r+1} recomputed, also after a
restart from the chain's closed rounds). The jobs are the real worker
functions, run in this process by a stand-in pool; the IPFS store is a dict."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import pytest
from sklearn.datasets import load_digits

from p2pml.chain.federated_rounds import fed_key
from p2pml.chain.fedspec import FederatedSpec
from p2pml.chain.params import REGTEST, dev_identity
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.types import RoundCloseTx, TaskTx, UpdateTx
from p2pml.config import TrainingSettings
from p2pml.crypto import Identity
from p2pml.errors import FetchTimeout, MissingDataError, ValidationError
from p2pml.federated import rounds
from p2pml.federated.encoding import encode
from p2pml.ipfs.cid import cid_of_bytes
from p2pml.ml.fedjobs import FedData, FedTrainRequest, fed_train_job
from p2pml.ml.pool import execute, unpack
from p2pml.node.federated import EVENTS_MAX, FederatedService, UpdateWaits
from p2pml.node.federated_verifier import (
    CloseCheck,
    FederatedVerifier,
    UpdateCheck,
    close_check,
)
from p2pml.node.mempool import Mempool
from p2pml.node.verifier import Verifier
from tests.framework.chainbuilder import Builder
from tests.unit.node.fakes import FakeChain, FakeGossip, FakeRelay, Jobs

SEED, TASK = b"\x01" * 32, b"\x02" * 32
P1, P2 = dev_identity(1).public_key, dev_identity(2).public_key


class DictStore:
    """Content by CID in files under ``root``; an unknown CID times out."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, Path] = {}

    async def add_bytes(self, data: bytes) -> str:
        cid = cid_of_bytes(data)
        path = self.root / cid
        path.write_bytes(data)
        self.files[cid] = path
        return cid

    async def fetch(self, cid: str, max_bytes: int | None = None) -> Path:
        if cid not in self.files:
            raise FetchTimeout(f"nobody serves {cid}")
        return self.files[cid]


class InlinePool:
    """The worker pool's job table, run in this process (same code, no fork)."""

    async def run(self, job: str, request: Any, timeout: float, priority: Any = None) -> Any:
        return unpack(execute(job, request))


class NoChecker:
    async def verify(self, claim: Any, background: bool = False) -> None:
        raise AssertionError("no results here")


@pytest.fixture
def env(tmp_path: Path) -> tuple[FederatedVerifier, DictStore, TaskSpec]:
    frame = load_digits(as_frame=True).frame
    csv = tmp_path / "digits.csv"
    frame.to_csv(csv, index=False)
    store = DictStore(tmp_path)
    cid = asyncio.run(store.add_bytes(csv.read_bytes()))
    spec = TaskSpec(
        dataset_cid=cid,
        target="target",
        model="sgd_classifier",
        kind="classification",
        metric="accuracy",
        features=tuple(c for c in frame.columns if c != "target"),
        holdout_fraction=0.25,
        partition_fraction=0.2,
        rounds=2,
        federated=FederatedSpec("fedavg", 2, 1, 10, tuple(range(10))),
    )
    spec.validate()
    return make_verifier(store, tmp_path), store, spec


def make_verifier(store: DictStore, tmp_path: Path) -> FederatedVerifier:
    settings = TrainingSettings()
    inner = Verifier(store, NoChecker())  # type: ignore[arg-type]
    return FederatedVerifier(inner, store, InlinePool(), settings, tmp_path / "parsed")  # type: ignore[arg-type]


def trained(
    store: DictStore, spec: TaskSpec, who: bytes, rnd: int, start: bytes
) -> tuple[bytes, int]:
    data = FedData(str(store.files[spec.dataset_cid]), str(store.root / "parsed"), 10**9)
    return fed_train_job(FedTrainRequest(spec, TASK, SEED, who, rnd, start, data))


def update_tx(
    store: DictStore, artifact: bytes, who: bytes, n: int, rnd: int = 0, *, base: bytes
) -> UpdateTx:
    cid = asyncio.run(store.add_bytes(artifact))
    return UpdateTx(TASK, SEED, rnd, who, cid, n, REGTEST.min_result_fee, base=base)


def g0(spec: TaskSpec) -> bytes:
    wire = spec.to_wire()
    return encode(rounds.layout_of(wire), rounds.initial(wire, SEED))


def h0(spec: TaskSpec) -> bytes:
    """hash(G_0): the ``base`` of a round-0 update."""
    return hashlib.sha256(g0(spec)).digest()


def test_update_checks_shape_values_and_the_claimed_sample_count(env: Any) -> None:
    fv, store, spec = env
    art, n = trained(store, spec, P1, 0, g0(spec))
    wire = spec.to_wire()

    def answer(tx: UpdateTx) -> Any:
        return asyncio.run(fv.answer(UpdateCheck(tx, wire, SEED)))

    b0 = h0(spec)
    honest = update_tx(store, art, P1, n, base=b0)
    assert answer(honest) == ""
    # A participant claiming more rows than its shard to weigh more (and earn more).
    assert answer(update_tx(store, art, P1, n * 3, base=b0)) == "bad-update-samples"
    assert answer(update_tx(store, art[:-8], P1, n, base=b0)) == "bad-update-shape"
    bad_value = art[:-8] + b"\x00" * 7 + b"\x80"
    assert answer(update_tx(store, bad_value, P1, n, base=b0)) == "bad-update-value"
    # Round 0 commits to hash(G_0), which only the oracle computes (§11.3).
    assert answer(update_tx(store, art, P1, n, base=bytes(32))) == "update-wrong-base"
    # The chain's question: known now, so answered without work.
    task = {"spec": wire, "seed": SEED}
    assert fv.verdict(honest, task, False) == ""


def test_an_unknown_artifact_is_missing_data_and_wanted(env: Any) -> None:
    fv, _store, spec = env
    tx = UpdateTx(
        TASK, SEED, 0, P1, cid_of_bytes(b"never added"), 10, REGTEST.min_result_fee, base=h0(spec)
    )
    task = {"spec": spec.to_wire(), "seed": SEED}
    assert fv.verdict(tx, task, False) is None
    [wanted] = fv.take_wanted()
    assert isinstance(wanted, UpdateCheck) and wanted.tx == tx
    assert asyncio.run(fv.resolve([wanted])) == 1  # still missing
    fv.want_again([wanted])
    assert list(fv.wanted.values()) == [wanted]


def test_round_closes_are_recomputed_also_after_a_restart(env: Any, tmp_path: Path) -> None:
    fv, store, spec = env
    wire = spec.to_wire()
    a1, n1 = trained(store, spec, P1, 0, g0(spec))
    a2, n2 = trained(store, spec, P2, 0, g0(spec))
    u1 = update_tx(store, a1, P1, n1, base=h0(spec))
    u2 = update_tx(store, a2, P2, n2, base=h0(spec))
    ups = [[P2, u2.update_cid, n2], [P1, u1.update_cid, n1]]  # inclusion order
    fed0 = {"round": 0, "opened_at": 2, "updates": ups, "models": [], "closed": []}
    task = {"spec": wire, "seed": SEED, "fed": fed0}
    g1 = rounds.next_global(wire, rounds.initial(wire, SEED), [(P1, a1, n1), (P2, a2, n2)])
    h1 = rounds.round_hash(wire, g1)
    close = RoundCloseTx(TASK, 0, h1)
    assert fv.verdict(close, task, False) is None
    [want] = fv.take_wanted()
    assert isinstance(want, CloseCheck)
    assert asyncio.run(fv.resolve([want])) == 0
    assert fv.verdict(close, task, False) == ""
    assert (
        fv.peek(dataclasses.replace(close, model_hash=bytes(32)), task, False) == "bad-round-hash"
    )
    assert fv.metrics[h1] is not None and h1 in fv.model_cids

    # Round 1 on a node that never saw round 0's aggregate (a restart).
    fresh = make_verifier(store, tmp_path)
    g1_bytes = encode(rounds.layout_of(wire), g1)
    a3, n3 = trained(store, spec, P1, 1, g1_bytes)
    u3 = update_tx(store, a3, P1, n3, rnd=1, base=h1)
    fed1: dict[str, Any] = {
        "round": 1,
        "opened_at": 4,
        "updates": [[P1, u3.update_cid, n3]],
        "models": [h1],
        "closed": [[3, ups]],
    }
    h2 = rounds.round_hash(wire, rounds.next_global(wire, g1, [(P1, a3, n3)]))
    task1 = {"spec": wire, "seed": SEED, "fed": fed1}
    # G_1 for training (the participant's start), recomputed from the chain.
    assert asyncio.run(fresh.global_model(TASK, task1, fed1)) == g1_bytes
    fresh = make_verifier(store, tmp_path)
    sizes: list[int] = []  # rounds per fed_aggregate job
    real = fresh._pool.run

    async def counting(job: str, request: Any, timeout: float, priority: Any = None) -> Any:
        if job == "fed_aggregate":  # scoring runs in fed_score jobs of its own
            sizes.append(len(request.rounds))
        return await real(job, request, timeout, priority)

    fresh._pool.run = counting  # type: ignore[method-assign]
    got = asyncio.run(
        fresh.answer(
            CloseCheck(TASK, wire, SEED, tuple(fed1["closed"]), (h1,), ((P1, u3.update_cid, n3),))
        )
    )
    assert got == (h2, ())  # no gains: the task rewards samples
    # One job per round (consensus bounds a round's artifacts, not R rounds').
    assert sizes == [1, 1]
    assert fresh.verdict(RoundCloseTx(TASK, 1, h2), task1, False) == ""


def test_the_service_trains_pools_and_closes_a_round_in_process(env: Any, tmp_path: Path) -> None:
    """Task in a block -> this node trains and pools its update -> the template
    gets the round close once G_1 is computed -> the block with both connects."""
    fv, _store, spec = env
    spec = dataclasses.replace(
        spec, federated=dataclasses.replace(spec.federated, participants=1, round_blocks=5)
    )
    me = dev_identity(1)
    chain, builder, relay, jobs = FakeChain(), Builder(), FakeRelay(), Jobs()
    chain.node.chain.verdicts = fv.verdict
    mempool = Mempool(REGTEST)
    svc = FederatedService(
        me,
        chain,  # type: ignore[arg-type]
        mempool,
        fv,
        relay,  # type: ignore[arg-type]
        InlinePool(),  # type: ignore[arg-type]
        TrainingSettings(enabled=True),
        jobs,
        lambda: None,
    )
    pub = dev_identity(0)
    task = TaskTx(spec, 100_000, 1_000, 50, 0, 1, pub.public_key, 1).signed_by(
        pub, REGTEST.genesis_hash
    )

    async def run() -> None:
        b1 = builder.make(builder.genesis, txs=(task,))
        (await chain.submit_block(b1)).raise_error()
        await jobs.settle()  # trained, checked, pooled
        [update] = list(mempool.txs.values())
        assert isinstance(update, UpdateTx) and update.participant == me.public_key
        assert relay.sent == [update]
        assert svc.closes([update]) == []  # G_1 not known yet: computed now
        await jobs.settle()
        [close] = svc.closes([update])
        assert isinstance(close, RoundCloseTx) and close.round == 0
        b2 = builder.make(b1.hash, txs=(update, close))
        (await chain.submit_block(b2)).raise_error()
        assert chain.chain.tip.hash == b2.hash
        assert chain.chain.state[fed_key(task.id)]["models"] == [close.model_hash]
        view = svc.describe(task.id)
        assert view is not None and view["rounds"][0]["metric"] is not None

    asyncio.run(run())


def test_a_round_close_is_cached_by_who_sent_each_update_and_its_weight() -> None:
    """Attack: a second key re-signs another participant's update CID. Two
    branches then hold the same CIDs under other keys (the aggregation order)
    or sample counts (the weights): a cache keyed by CIDs alone answered one
    branch's round close with the other's G_{r+1}, and the nodes split."""
    from p2pml.node.federated_verifier import CloseCheck

    tid, seed, c_a, c_b = b"t" * 32, b"s" * 32, "QmA", "QmB"
    p1, p2, p3 = b"1" * 32, b"2" * 32, b"3" * 32
    spec: dict[str, Any] = {}
    honest = CloseCheck(tid, spec, seed, (), (), ((p1, c_a, 10), (p2, c_b, 20)))
    resigned = CloseCheck(tid, spec, seed, (), (), ((p3, c_a, 10), (p2, c_b, 20)))
    reweighed = CloseCheck(tid, spec, seed, (), (), ((p1, c_a, 11), (p2, c_b, 20)))
    assert len({honest.key, resigned.key, reweighed.key}) == 3
    same = CloseCheck(tid, spec, seed, (), (), ((p1, c_a, 10), (p2, c_b, 20)))
    assert same.key == honest.key


def test_after_a_reorg_that_changes_g_r_the_service_trains_again_from_it(
    env: Any, tmp_path: Path
) -> None:
    """Branch A closes round 0 with this node's update; branch B (longer)
    closes it empty, so G_1 differs. Having trained round 1 from A's G_1, the
    node must train it again from B's after the reorg and pool that update
    instead: its old one is valid by the rules but from the wrong model (the
    training claim was keyed by task, seed and round only: it sat round 1 out)."""
    fv, store, spec = env
    spec = dataclasses.replace(
        spec, federated=dataclasses.replace(spec.federated, participants=2, round_blocks=2)
    )
    wire = spec.to_wire()
    me = dev_identity(1)
    chain, builder, relay, jobs = FakeChain(), Builder(), FakeRelay(), Jobs()
    chain.node.chain.verdicts = fv.verdict
    mempool = Mempool(REGTEST)
    FederatedService(
        me,
        chain,  # type: ignore[arg-type]
        mempool,
        fv,
        relay,  # type: ignore[arg-type]
        InlinePool(),  # type: ignore[arg-type]
        TrainingSettings(enabled=True),
        jobs,
        lambda: None,
    )
    pub = dev_identity(0)
    task = TaskTx(spec, 100_000, 1_000, 50, 0, 1, pub.public_key, 1).signed_by(
        pub, REGTEST.genesis_hash
    )

    def my_update(rnd: int) -> UpdateTx:
        [u] = [
            t
            for t in mempool.txs.values()
            if isinstance(t, UpdateTx) and t.round == rnd and t.participant == me.public_key
        ]
        return u

    async def close_for(fed: dict[str, Any], seed: bytes) -> RoundCloseTx:
        digest, gains = await fv.answer(close_check(task.id, {"spec": wire, "seed": seed}, fed))
        return RoundCloseTx(task.id, int(fed["round"]), digest, gains)

    async def run() -> None:
        b1 = builder.make(builder.genesis, txs=(task,))
        (await chain.submit_block(b1)).raise_error()
        await jobs.settle()
        u0 = my_update(0)
        # Branch A: our round-0 update, the window's end, the close.
        a2 = builder.make(b1.hash, txs=(u0,))
        a3 = builder.make(a2.hash)
        for b in (a2, a3):
            (await chain.submit_block(b)).raise_error()
        fed_a = chain.chain.state[fed_key(task.id)]
        a4 = builder.make(a3.hash, txs=(await close_for(fed_a, b1.hash),))
        (await chain.submit_block(a4)).raise_error()
        await jobs.settle()
        stale = my_update(1)  # trained from A's G_1
        # Branch B: round 0 closes with no update (G_1 = G_0), and B is longer.
        empty = {"round": 0, "opened_at": 2, "updates": [], "models": [], "closed": []}
        c2 = builder.make(b1.hash, dt=2)
        c3 = builder.make(c2.hash)
        c4 = builder.make(c3.hash, txs=(await close_for(empty, b1.hash),))
        c5 = builder.make(c4.hash)
        for b in (c2, c3, c4, c5):
            (await chain.submit_block(b)).raise_error()
        assert chain.chain.tip.hash == c5.hash
        g1_b = await fv.global_model(
            task.id, {"spec": wire, "seed": b1.hash}, chain.chain.state[fed_key(task.id)]
        )
        assert g1_b is not None
        await jobs.settle()
        fresh = my_update(1)
        assert fresh.id != stale.id and stale.id not in mempool.txs
        data = FedData(str(store.files[spec.dataset_cid]), str(store.root / "parsed"), 10**9)
        want, _n = fed_train_job(
            FedTrainRequest(spec, task.id, b1.hash, me.public_key, 1, g1_b, data)
        )
        assert fresh.update_cid == cid_of_bytes(want)

    asyncio.run(run())


def early_env(env: Any, round_blocks: int = 2) -> tuple[Any, ...]:
    """A validating node that does not train (it only judges peers' updates)."""
    fv, store, spec = env
    spec = dataclasses.replace(
        spec,
        federated=dataclasses.replace(spec.federated, participants=1, round_blocks=round_blocks),
    )
    chain, builder, relay, jobs = FakeChain(), Builder(), FakeRelay(), Jobs()
    chain.node.chain.verdicts = fv.verdict
    mempool = Mempool(REGTEST)
    svc = FederatedService(
        dev_identity(0),
        chain,  # type: ignore[arg-type]
        mempool,
        fv,
        relay,  # type: ignore[arg-type]
        InlinePool(),  # type: ignore[arg-type]
        TrainingSettings(enabled=False),
        jobs,
        lambda: None,
    )
    pub = dev_identity(0)
    task = TaskTx(spec, 100_000, 1_000, 50, 0, 1, pub.public_key, 1).signed_by(
        pub, REGTEST.genesis_hash
    )
    return svc, chain, builder, relay, jobs, mempool, store, spec, task


def peer_update(
    store: DictStore, spec: TaskSpec, task_id: bytes, seed: bytes, who: Any, rnd: int
) -> UpdateTx:
    """``who``'s honest update of round ``rnd``, trained from G_0 (every round
    here closes empty, so G_r = G_0)."""
    data = FedData(str(store.files[spec.dataset_cid]), str(store.root / "parsed"), 10**9)
    art, n = fed_train_job(
        FedTrainRequest(spec, task_id, seed, who.public_key, rnd, g0(spec), data)
    )
    cid = asyncio.run(store.add_bytes(art))
    return UpdateTx(
        task_id, seed, rnd, who.public_key, cid, n, REGTEST.min_result_fee, base=h0(spec)
    ).signed_by(who, REGTEST.genesis_hash)


def test_an_update_early_for_its_round_is_held_then_pooled_and_relayed(env: Any) -> None:
    """Attack on liveness (issue 16): a peer's round-1 update comes before the
    block closing round 0. It was refused as ``bad-update-round`` and never
    came again, so this node neither pooled nor relayed it and, in a line of
    nodes, the participant's round was lost. Held, it enters once round 1 opens."""
    svc, chain, builder, relay, jobs, mempool, store, spec, task = early_env(env)
    wire = spec.to_wire()

    async def run() -> None:
        b1 = builder.make(builder.genesis, txs=(task,))
        b2 = builder.make(b1.hash)
        b3 = builder.make(b2.hash)
        for b in (b1, b2, b3):
            (await chain.submit_block(b)).raise_error()
        early = await asyncio.to_thread(
            peer_update, store, spec, task.id, b1.hash, dev_identity(2), 1
        )
        with pytest.raises(ValidationError) as exc:
            await svc.submit(early, "peerA")
        assert exc.value.reason == "bad-update-round"
        assert len(svc.waiting) == 1 and not mempool.txs and relay.sent == []
        assert svc.events[task.id][-1]["event"] == "held"
        # Gossip delivers a message once: the same one again is one entry.
        with pytest.raises(ValidationError):
            await svc.submit(early, "peerB")
        assert len(svc.waiting) == 1
        # Round 0 closes (empty: G_1 = G_0); round 1 opens at the next height.
        fed = chain.chain.state[fed_key(task.id)]
        digest, _gains = await svc.verifier.answer(
            close_check(task.id, {"spec": wire, "seed": b1.hash}, fed)
        )
        b4 = builder.make(b3.hash, txs=(RoundCloseTx(task.id, 0, digest),))
        (await chain.submit_block(b4)).raise_error()
        await jobs.settle()  # its artifact checked, then pooled and relayed
        assert early.id in mempool.txs and relay.sent == [early]
        assert len(svc.waiting) == 0

    asyncio.run(run())


def test_an_update_before_its_tasks_block_is_held_only_from_a_bonded_key(env: Any) -> None:
    """An update whose task's block has not come (``update-task-unknown``) is
    held and pooled when it comes; one signed by an unbonded key (nobody
    could be paid for it: free to make) or for a round already over is not."""
    svc, chain, builder, relay, jobs, mempool, store, spec, task = early_env(env)

    async def run() -> None:
        b1 = builder.make(builder.genesis, txs=(task,))
        stranger = Identity.generate()
        honest = await asyncio.to_thread(
            peer_update, store, spec, task.id, b1.hash, dev_identity(2), 0
        )
        free = await asyncio.to_thread(peer_update, store, spec, task.id, b1.hash, stranger, 0)
        for tx in (honest, free):
            with pytest.raises(ValidationError) as exc:
                await svc.submit(tx, "peerA")
            assert exc.value.reason == "update-task-unknown"
        assert len(svc.waiting) == 1
        (await chain.submit_block(b1)).raise_error()
        await jobs.settle()
        assert honest.id in mempool.txs and relay.sent == [honest]
        # Round 0 is full now: another update for it is refused, not held.
        late = await asyncio.to_thread(
            peer_update, store, spec, task.id, b1.hash, dev_identity(3), 0
        )
        with pytest.raises(ValidationError):
            await svc.submit(late, "peerA")
        assert len(svc.waiting) == 0

    asyncio.run(run())


def test_held_updates_expire_and_are_bounded_per_peer() -> None:
    buf = UpdateWaits(per_peer=2, total=3)
    keys = [dev_identity(i) for i in range(4)]

    def upd(k: Any, rnd: int = 1) -> UpdateTx:
        return UpdateTx(TASK, SEED, rnd, k.public_key, "Qm" + "a" * 44, 1, 1, base=bytes(32))

    assert buf.add(upd(keys[0]), "flooder", 5, 9)
    assert not buf.add(upd(keys[0]), "other", 5, 9)  # one per (participant, task, round)
    assert buf.add(upd(keys[0], 2), "flooder", 5, 9)
    assert buf.add(upd(keys[1]), "flooder", 5, 9)  # its own oldest goes
    assert buf.peer_count("flooder") == 2
    assert buf.add(upd(keys[2]), "honest", 5, 7)
    assert buf.add(upd(keys[3]), "third", 5, 9)  # full: the fullest peer's oldest goes
    assert len(buf) == 3 and buf.peer_count("flooder") == 1
    assert buf.take_ready(4) == []
    # The honest one expired at height 7: dropped, not handed back.
    got = buf.take_ready(7)
    assert [w.tx.participant for w in got] == [keys[1].public_key, keys[3].public_key]
    assert len(buf) == 0


def test_the_events_a_task_keeps_are_bounded(env: Any) -> None:
    """Peers' updates refused or held are noted for the API: a bonded peer
    sending variant after variant must not grow the list without end."""
    svc, *_rest, task = early_env(env)
    for i in range(EVENTS_MAX + 5):
        svc._note(task.id, 1, P2, "held", "bad-update-round", f"peer{i}")
    kept = svc.events[task.id]
    assert len(kept) == EVENTS_MAX
    assert kept[0]["detail"] == "peer5" and kept[-1]["detail"] == f"peer{EVENTS_MAX + 4}"


def test_gossiped_update_checks_are_budgeted_and_a_bad_artifact_penalises_its_relay(
    env: Any,
) -> None:
    """Issue 16: before, a peer could keep every background update check busy
    (updates naming artifacts nobody serves) and relay updates whose artifact
    is no model of the task, at no cost to itself."""
    fv, store, spec = env
    chain, builder, jobs, gossip = FakeChain(), Builder(), Jobs(), FakeGossip()
    chain.node.chain.verdicts = fv.verdict
    svc = FederatedService(
        dev_identity(1),
        chain,  # type: ignore[arg-type]
        Mempool(REGTEST),
        fv,
        FakeRelay(),  # type: ignore[arg-type]
        InlinePool(),  # type: ignore[arg-type]
        TrainingSettings(enabled=False),
        jobs,
        lambda: None,
        gossip=gossip,
        clock=lambda: 0.0,  # no refill: the burst is all a peer gets
    )
    pub, eve = dev_identity(0), dev_identity(2)
    task = TaskTx(spec, 100_000, 1_000, 50, 0, 1, pub.public_key, 1).signed_by(
        pub, REGTEST.genesis_hash
    )

    def gossiped(cid: str, n: int) -> UpdateTx:
        tx = UpdateTx(
            task.id, b1.hash, 0, eve.public_key, cid, n, REGTEST.min_result_fee, base=h0(spec)
        )
        return tx.signed_by(eve, REGTEST.genesis_hash)

    async def submit(tx: UpdateTx, peer: str) -> None:
        with pytest.raises(MissingDataError):
            await svc.submit(tx, peer)

    b1 = builder.make(builder.genesis, txs=(task,))

    async def run() -> None:
        (await chain.submit_block(b1)).raise_error()
        for n in range(1, 21):
            await submit(gossiped(cid_of_bytes(b"nobody serves %d" % n), n), "flooder")
        # 120 s of burst at a 10 s reservation each: 12 checks, then none.
        assert jobs.names.count("federated-update-check") == 12
        await submit(gossiped(cid_of_bytes(b"another peer"), 100), "honest")
        assert jobs.names.count("federated-update-check") == 13  # others are not starved
        await jobs.settle()
        assert gossip.penalties == []  # missing data proves nothing
        bad = await store.add_bytes(b"P2FL\x01 not a model of this task")
        await submit(gossiped(bad, 7), "liar")
        await jobs.settle()
        assert gossip.penalties == [("liar", "invalid-update:bad-update-shape", 100)]

    asyncio.run(run())
