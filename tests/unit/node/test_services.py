"""Training, gossip verdicts, verification scheduling and the relay, each
against fakes of its ports (real consensus underneath)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from p2pml.chain.encoding import encode_tx
from p2pml.chain.params import DEVNET, REGTEST, dev_identity
from p2pml.chain.tasks import slot_key
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.types import ResultTx, TaskTx, TransferTx
from p2pml.config import TrainingSettings
from p2pml.errors import MissingDataError, ValidationError
from p2pml.ipfs.cid import cid_of_bytes
from p2pml.net.backend import BlockStatus, Verdict
from p2pml.node.gossip import GossipHandler
from p2pml.node.mempool import Mempool
from p2pml.node.relay import Relay
from p2pml.node.tasks import TaskService
from p2pml.node.training import TrainingService
from p2pml.node.transfers import TransferService
from p2pml.node.verification import (
    MAX_RESULT_CHECKS,
    RETRY_MIN,
    UNFETCHABLE_ARTIFACT_SECONDS,
    VerificationService,
)
from tests.framework.chainbuilder import Builder
from tests.framework.waiting import wait_until
from tests.unit.node.fakes import (
    FakeChain,
    FakeGossip,
    FakeRelay,
    FakeResults,
    FakeTrainer,
    Jobs,
)

PUB, ME, OTHER = dev_identity(0), dev_identity(5), dev_identity(6)
ON, OFF = TrainingSettings(enabled=True), TrainingSettings(enabled=False)
SPEC = TaskSpec(
    dataset_cid=cid_of_bytes(b"dataset"),
    target="y",
    model="ridge",
    kind="regression",
    metric="r2",
    rounds=3,
)


def task(nonce: int = 1) -> TaskTx:
    return TaskTx(SPEC, 1000, 1000, 5, 0, 9, PUB.public_key, nonce).signed_by(
        PUB, REGTEST.genesis_hash
    )


async def chain_with_task(chain: FakeChain) -> tuple[Builder, TaskTx, bytes]:
    b = Builder()
    t = task()
    blk = b.make(b.genesis, txs=(t,))
    await chain.submit_block(blk)
    return b, t, blk.hash


def result_for(t: TaskTx, seed: bytes, rnd: int = 0, trainer: Any = OTHER) -> ResultTx:
    return ResultTx(
        t.id, seed, rnd, trainer.public_key, 0.5, cid_of_bytes(b"model%d" % rnd), 10, 1, 1_000
    ).signed_by(trainer, REGTEST.genesis_hash)


# -- training ----------------------------------------------------------------------


async def test_a_connected_task_is_trained_once_per_round_and_results_go_out() -> None:
    chain, trainer, results, relay, jobs = (
        FakeChain(),
        FakeTrainer(),
        FakeResults(),
        FakeRelay(),
        Jobs(),
    )
    svc = TrainingService(ME, chain, trainer, results, relay, jobs, ON)
    _, t, seed = await chain_with_task(chain)
    await jobs.settle()
    assert sorted(trainer.rounds) == [(t.id, r) for r in range(3)]
    assert [tx.round for tx, _ in sorted(results.submitted, key=lambda x: x[0].round)] == [0, 1, 2]
    assert all(tx.trainer == ME.public_key and tx.seed == seed for tx in relay.sent)
    assert len(relay.sent) == 3 and svc.jobs_done == 3
    # At restart the same open task is not trained again by this service.
    svc.schedule_open_tasks()
    await jobs.settle()
    assert len(trainer.rounds) == 3


async def test_training_failures_are_recorded_and_disabled_training_does_nothing() -> None:
    chain, jobs = FakeChain(), Jobs()
    failing = TrainingService(
        ME, chain, FakeTrainer(fail="job-timeout"), FakeResults(), FakeRelay(), jobs, ON
    )
    idle_trainer = FakeTrainer()
    TrainingService(ME, chain, idle_trainer, FakeResults(), FakeRelay(), jobs, OFF)
    _, t, _ = await chain_with_task(chain)
    await jobs.settle()
    assert failing.jobs_failed == 3
    assert {f["reason"] for f in failing.failures[t.id]} == {"job-timeout"}
    assert idle_trainer.rounds == []


async def test_policy_refusal_is_a_failure_with_its_reason() -> None:
    chain, jobs = FakeChain(), Jobs()
    trainer = FakeTrainer(accepts="model-not-allowed")
    svc = TrainingService(ME, chain, trainer, FakeResults(), FakeRelay(), jobs, ON)
    _, t, _ = await chain_with_task(chain)
    assert trainer.rounds == [] and jobs.tasks == []
    assert svc.failures[t.id][0]["reason"] == "model-not-allowed"


async def test_rounds_queue_by_pay_within_node_and_publisher_caps() -> None:
    """Attack: a task with no bounty and 64 rounds queued 64 jobs on every
    training node, first come first served. Now the queue is bounded, per
    publisher too, and better-paying rounds go first or evict."""
    chain, trainer, jobs = FakeChain(), FakeTrainer(), Jobs()
    trainer_gate = asyncio.Event()
    real_train = trainer.train_round

    async def held(*args: Any) -> Any:
        await trainer_gate.wait()
        return await real_train(*args)

    trainer.train_round = held  # type: ignore[method-assign]
    settings = TrainingSettings(
        enabled=True, max_concurrent_jobs=1, max_queued_rounds=6, max_rounds_per_publisher=4
    )
    svc = TrainingService(ME, chain, trainer, FakeResults(), FakeRelay(), jobs, settings)
    b = Builder()
    free_spec = dataclasses.replace(SPEC, rounds=10)
    free = TaskTx(free_spec, 0, 1000, 50, 0, 9, PUB.public_key, 1).signed_by(
        PUB, REGTEST.genesis_hash
    )
    blk = b.make(b.genesis, txs=(free,))
    await chain.submit_block(blk)
    # One runs, three wait: the publisher's share is 4; six rounds refused.
    assert len(jobs.tasks) == 1 and svc.queued_rounds == 3
    refused = [f for f in svc.failures[free.id] if f["reason"] == "training-queue-full"]
    assert len(refused) == 6

    richer = []
    for i, pub in enumerate((dev_identity(1), dev_identity(2))):
        t = TaskTx(SPEC, 9_000, 1000, 50, 0, 9, pub.public_key, 10 + i).signed_by(
            pub, REGTEST.genesis_hash
        )
        richer.append(t)
    blk2 = b.make(blk.hash, txs=tuple(richer))
    await chain.submit_block(blk2)
    # 6 rounds of pay 3000 each arrive; the queue (1 running + 3 waiting free
    # rounds) takes 2 and evicts the 3 free waiting rounds for 3 more.
    evicted = [f for f in svc.failures[free.id] if f["reason"] == "training-evicted"]
    assert len(evicted) == 3
    assert svc.queued_rounds == 5 and all(r.task_id != free.id for r in svc._waiting)
    trainer_gate.set()
    await jobs.settle()
    # Better-paying rounds first; refused and evicted rounds are not lost:
    # they come back as slots free, until every round of every task is done.
    order = [tid for tid, _ in trainer.rounds]
    rich = {t.id for t in richer}
    assert order[0] == free.id and set(order[1:7]) == rich and set(order[7:]) == {free.id}
    assert sorted(trainer.rounds) == sorted(
        [(free.id, r) for r in range(10)] + [(t.id, r) for t in richer for r in range(3)]
    )


async def test_a_round_already_in_the_chain_is_not_trained() -> None:
    chain, trainer, jobs = FakeChain(), FakeTrainer(), Jobs()
    b = Builder()
    t = task()
    blk = b.make(b.genesis, txs=(t,))
    await chain.submit_block(blk)
    mine = result_for(t, blk.hash, rnd=1, trainer=ME)
    chain.chain.verdicts = lambda *_: ""
    b.ref.verdicts = lambda *_: ""
    await chain.submit_block(b.make(blk.hash, txs=(mine,)))
    assert chain.chain.state.get(slot_key(t.id, ME.public_key, 1))
    svc = TrainingService(ME, chain, trainer, FakeResults(), FakeRelay(), jobs, ON)
    svc.schedule_open_tasks()
    await jobs.settle()
    assert sorted(r for _, r in trainer.rounds) == [0, 2]


# -- gossip verdicts ---------------------------------------------------------------


def handler(chain: FakeChain, jobs: Jobs, gossip: FakeGossip) -> tuple[GossipHandler, Mempool]:
    pool = Mempool(REGTEST)
    relay = Relay(chain, gossip)
    tasks = TaskService(ME, chain, pool, _Verdicts(), relay, lambda: None)
    verification = VerificationService(chain, _Verifier(), FakeResults(), FakeRelay(), gossip, jobs)
    transfers = TransferService(ME, chain, pool, _Verdicts(), relay, lambda: None)
    h = GossipHandler(chain, tasks, verification, relay, gossip, transfers)  # type: ignore[arg-type]
    return h, pool


async def test_gossip_verdicts_accept_ignore_and_reject_with_their_reasons() -> None:
    chain, jobs, gossip = FakeChain(), Jobs(), FakeGossip()
    h, pool = handler(chain, jobs, gossip)
    t = task()
    assert await h.on_gossip("tasks", t, "peerA") is Verdict.ACCEPT
    assert t.id in pool
    assert await h.on_gossip("tasks", t, "peerA") is Verdict.IGNORE  # duplicate: harmless
    forged = TaskTx(**{**task(nonce=2).__dict__, "bounty": 1})
    assert await h.on_gossip("tasks", forged, "peerA") is Verdict.REJECT  # bad-task-sig
    assert await h.on_gossip("blocks", t, "peerA") is Verdict.REJECT  # wrong kind


async def test_gossiped_transfers_are_pooled_or_refused_with_their_reasons() -> None:
    chain, jobs, gossip = FakeChain(), Jobs(), FakeGossip()
    h, pool = handler(chain, jobs, gossip)
    pay = TransferTx(PUB.public_key, OTHER.public_key, 10, 1_000, 1)
    good = pay.signed_by(PUB, REGTEST.genesis_hash)
    assert await h.on_gossip("transfers", good, "peerA") is Verdict.ACCEPT
    assert good.id in pool
    assert await h.on_gossip("transfers", good, "peerA") is Verdict.IGNORE  # duplicate
    devnet = dataclasses.replace(pay, nonce=2).signed_by(PUB, DEVNET.genesis_hash)
    assert await h.on_gossip("transfers", devnet, "peerA") is Verdict.REJECT  # bad-transfer-sig
    assert await h.on_gossip("tasks", good, "peerA") is Verdict.REJECT  # wrong kind
    poor = type(ME).from_seed(b"\x09" * 32)
    unfunded = TransferTx(poor.public_key, PUB.public_key, 10, 1_000, 1).signed_by(
        poor, REGTEST.genesis_hash
    )
    assert await h.on_gossip("transfers", unfunded, "peerA") is Verdict.IGNORE  # harmless
    assert unfunded.id not in pool


async def test_a_sent_transfer_is_pooled_and_relayed_on_the_transfers_topic() -> None:
    chain, gossip = FakeChain(), FakeGossip()
    pool = Mempool(REGTEST)
    svc = TransferService(PUB, chain, pool, _Verdicts(), Relay(chain, gossip), lambda: None)
    tx = await svc.send(OTHER.public_key, 123, 1_000)
    assert tx.id in pool and tx.sender == PUB.public_key
    assert gossip.published == [("transfers", encode_tx(tx))]
    with pytest.raises(ValidationError) as err:
        await svc.send(PUB.public_key, 1, 1_000)
    assert err.value.reason == "bad-transfer-self"
    assert len(gossip.published) == 1


async def test_gossiped_result_with_unknown_verdict_is_ignored_and_checked_off_the_worker() -> None:
    chain, jobs, gossip = FakeChain(), Jobs(), FakeGossip()
    h, _ = handler(chain, jobs, gossip)
    _, t, seed = await chain_with_task(chain)
    r = result_for(t, seed)
    assert await h.on_gossip("results", r, "peerB") is Verdict.IGNORE
    assert jobs.names == ["verify-result"]
    await jobs.settle()


async def test_blocks_from_gossip_get_stable_outcomes() -> None:
    chain, jobs, gossip = FakeChain(), Jobs(), FakeGossip()
    h, _ = handler(chain, jobs, gossip)
    b = Builder()
    blk = b.make(b.genesis)
    assert (await h.submit_block(blk, "peerC")).status is BlockStatus.ACCEPTED
    assert (await h.submit_block(blk, "peerC")).status is BlockStatus.DUPLICATE
    bad = b.make(blk.hash, reward_delta=1)
    out = await h.submit_block(bad, "peerC")
    assert (out.status, out.reason) == (BlockStatus.INVALID, "bad-coinbase-amount")
    orphan_parent = b.make(blk.hash, dt=3)
    orphan = b.make(orphan_parent.hash)
    assert (await h.submit_block(orphan, "peerC")).status is BlockStatus.ORPHAN


# -- verification of gossiped results -------------------------------------------


async def test_a_false_gossiped_result_costs_its_sender_a_true_one_is_relayed() -> None:
    chain, jobs, gossip, relay = FakeChain(), Jobs(), FakeGossip(), FakeRelay()
    results = FakeResults(ValidationError("bad-result-metric", "claimed 0.9, got 0.5"))
    svc = VerificationService(chain, _Verifier(), results, relay, gossip, jobs)
    _, t, seed = await chain_with_task(chain)
    svc.check_gossiped_result(result_for(t, seed, 0), "liar")
    await jobs.settle()
    assert gossip.penalties == [("liar", "invalid-result:bad-result-metric", 100)]
    assert relay.sent == []

    results.error = ValidationError("result-task-closed", "late")  # harmless: no penalty
    svc.check_gossiped_result(result_for(t, seed, 1), "late")
    results.error = MissingDataError("Qm", "model not fetchable now")  # pending: no penalty
    svc.check_gossiped_result(result_for(t, seed, 2), "slow")
    await jobs.settle()
    assert len(gossip.penalties) == 1 and relay.sent == []

    results.error = None
    good = result_for(t, seed, 0, trainer=ME)
    svc.check_gossiped_result(good, "honest")
    await jobs.settle()
    assert relay.sent == [good]


async def test_a_result_naming_an_artifact_nobody_serves_costs_its_sender() -> None:
    chain, jobs, gossip = FakeChain(), Jobs(), FakeGossip()
    results = FakeResults(MissingDataError("Qm", "no provider"))
    verifier = _Verifier()
    svc = VerificationService(
        chain, verifier, results, FakeRelay(), gossip, jobs, clock=results.clock
    )
    _, t, seed = await chain_with_task(chain)
    pending, bogus = result_for(t, seed, 0), result_for(t, seed, 1)
    svc.check_gossiped_result(pending, "slow")  # e.g. our own daemon down: nothing proven
    await jobs.settle()
    assert gossip.penalties == [] and svc.budget.balance("slow") == svc.budget.burst
    verifier.unfetchable.add(bogus.id)
    svc.check_gossiped_result(bogus, "liar")
    await jobs.settle()
    assert gossip.penalties == []  # budget, not score (see the module docstring)
    assert svc.budget.balance("liar") == svc.budget.burst - UNFETCHABLE_ARTIFACT_SECONDS
    assert svc.counts["unfetchable"] == 1 and svc.counts["pending"] == 1


async def test_gossiped_result_checks_are_bounded_and_deduplicated() -> None:
    chain, jobs, gossip = FakeChain(), _HeldJobs(), FakeGossip()
    svc = VerificationService(chain, _Verifier(), FakeResults(), FakeRelay(), gossip, jobs)
    _, t, seed = await chain_with_task(chain)
    r = result_for(t, seed)
    svc.check_gossiped_result(r, "a")
    svc.check_gossiped_result(r, "b")  # the same result: one check
    assert len(jobs.coros) == 1
    for i in range(MAX_RESULT_CHECKS + 10):
        trainer = type(ME).from_seed(i.to_bytes(32, "big"))
        svc.check_gossiped_result(result_for(t, seed, 0, trainer=trainer), f"peer{i}")
    assert len(jobs.coros) == MAX_RESULT_CHECKS
    jobs.close()


async def test_a_block_waiting_for_a_verdict_connects_once_the_verifier_answers() -> None:
    chain, jobs, gossip = FakeChain(), Jobs(), FakeGossip()
    verifier = _Verifier()
    chain.chain.verdicts = verifier.verdict
    svc = VerificationService(chain, verifier, FakeResults(), FakeRelay(), gossip, jobs)
    b, t, seed = await chain_with_task(chain)
    b.ref.verdicts = lambda *_: ""
    r = result_for(t, seed)
    blk = b.make(chain.chain.tip.hash, txs=(r,))
    up = await chain.submit_block(blk)
    assert up.waiting and chain.chain.tip.hash != blk.hash
    loop = asyncio.ensure_future(svc.run())
    try:
        verifier.answers[r.id] = ""
        verifier.wake()
        await wait_until(lambda: chain.chain.tip.hash == blk.hash, timeout=10)
    finally:
        loop.cancel()


async def test_a_retry_that_gets_further_into_a_block_does_not_back_off() -> None:
    """A block of several results connects only up to its first unknown
    verdict: each retry learns the next one. Backing off between such retries
    (doubling each time) made a block of eight new results wait over a minute."""
    chain, jobs, gossip = FakeChain(), Jobs(), FakeGossip()
    verifier = _Verifier()
    chain.chain.verdicts = verifier.verdict
    svc = VerificationService(chain, verifier, FakeResults(), FakeRelay(), gossip, jobs)
    b, t, seed = await chain_with_task(chain)
    b.ref.verdicts = lambda *_: ""
    r1 = result_for(t, seed, trainer=dev_identity(1))
    r2 = result_for(t, seed, trainer=dev_identity(2))
    blk = b.make(chain.chain.tip.hash, txs=(r1, r2))
    assert (await chain.submit_block(blk)).waiting
    verifier.answers[r1.id] = ""
    assert await svc.verify_pass(RETRY_MIN * 4) == RETRY_MIN  # it asked for r2 now
    assert (r2.id, False) in verifier.wanted
    # Nothing new learnt: the same verdict is still unknown, back off.
    assert await svc.verify_pass(RETRY_MIN) == 2 * RETRY_MIN
    verifier.answers[r2.id] = ""
    await svc.verify_pass(RETRY_MIN)
    assert chain.chain.tip.hash == blk.hash


# -- the relay ---------------------------------------------------------------------


async def test_relay_swallows_network_errors_and_sends_nothing_once_stopped() -> None:
    chain, gossip = FakeChain(), FakeGossip(fail=True)
    relay = Relay(chain, gossip)
    t = task()
    await relay.tx(t)  # a NetworkError is logged, not raised
    gossip.fail = False
    with relay.paused():
        b = Builder()
        await relay.mined(b.make(b.genesis))
    assert gossip.blocks == []
    await relay.tx(t)
    assert len(gossip.published) == 1
    relay.stop()
    await relay.tx(t)
    await relay.block(b.make(b.genesis, dt=2))
    assert len(gossip.published) == 1 and gossip.blocks == []


class _Verdicts:
    def peek(self, *_a: Any) -> str | None:
        return None

    async def check(self, _req: Any) -> str | None:
        return None


class _Verifier:
    """The Verifier's surface the service uses, with answers set by the test."""

    def __init__(self) -> None:
        self.wanted: dict[Any, Any] = {}
        self.answers: dict[bytes, str] = {}
        self.unfetchable: set[bytes] = set()
        self._wake: Any = None

    def artifact_unfetchable(self, result_id: bytes) -> bool:
        return result_id in self.unfetchable

    def verdict(self, tx: ResultTx, task: dict[str, Any], audit: bool) -> str | None:
        got = self.answers.get(tx.id)
        if got is None:
            self.wanted[(tx.id, audit)] = tx
        return got

    def wake(self) -> None:
        self.wanted[("wake", False)] = None

    def take_wanted(self) -> list[Any]:
        reqs = list(self.wanted.values())
        self.wanted.clear()
        return reqs

    async def resolve(self, reqs: list[Any]) -> int:
        return sum(1 for r in reqs if r is not None and r.id not in self.answers)

    def want_again(self, reqs: list[Any]) -> None:
        pass


class _HeldJobs:
    """Jobs that never start: they hold their place until the test closes them."""

    def __init__(self) -> None:
        self.coros: list[Any] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._never = asyncio.Event()

    def __call__(self, coro: Any, name: str) -> asyncio.Task[None]:
        self.coros.append(coro)

        async def held() -> None:
            await self._never.wait()

        task = asyncio.ensure_future(held())
        self._tasks.append(task)
        return task

    def close(self) -> None:
        for c in self.coros:
            c.close()
        for t in self._tasks:
            t.cancel()


async def test_a_burst_cannot_start_before_it_is_charged_and_a_banned_peer_is_refused() -> None:
    """Found by the attack benchmark: the budget was charged only when checks
    ended, so a burst all started; a banned peer's later results still ran."""
    from p2pml.node.verification import CHECK_RESERVE_SECONDS, PEER_CHECK_BURST_SECONDS

    chain, jobs, gossip = FakeChain(), Jobs(), FakeGossip()
    results = FakeResults()
    results.gate = asyncio.Event()  # nothing finishes while the burst arrives
    svc = VerificationService(
        chain, _Verifier(), results, FakeRelay(), gossip, jobs, clock=results.clock
    )
    _, t, seed = await chain_with_task(chain)
    started = sum(
        svc.check_gossiped_result(result_for(t, seed, 0, trainer=_key(i)), "burst")
        for i in range(50)
    )
    assert started == int(PEER_CHECK_BURST_SECONDS // CHECK_RESERVE_SECONDS)
    assert svc.counts["refused-budget"] == 50 - started
    gossip.ban("burst")
    assert not svc.check_gossiped_result(result_for(t, seed, 1), "burst")
    assert svc.counts["refused-banned"] == 1
    results.gate.set()
    await jobs.settle()
    assert all(task.cancelled() for task in jobs.tasks)


def _key(i: int) -> Any:
    return type(ME).from_seed(i.to_bytes(32, "big"))
