"""Mempool admission, eviction and reorg reconcile; the task service's
reactions to tip changes. Real consensus (pure ChainState), faked ports."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from p2pml.chain.encoding import encode_tx
from p2pml.chain.params import DEV_ALLOCATION, REGTEST, dev_identity
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.types import ChallengeTx, ResultTx, TaskTx, TransferTx
from p2pml.crypto import Identity
from p2pml.errors import MissingDataError, ValidationError
from p2pml.ipfs.cid import cid_of_bytes
from p2pml.node.mempool import Mempool
from p2pml.node.tasks import TaskService
from tests.framework.chainbuilder import Builder
from tests.unit.node.fakes import FakeChain, FakeRelay

PUB = dev_identity(0)
NODE_KEY = dev_identity(5)
SPEC = TaskSpec(
    dataset_cid=cid_of_bytes(b"dataset"), target="y", model="ridge", kind="regression", metric="r2"
)


def task(pub: Identity = PUB, bounty: int = 1000, nonce: int = 1, fee: int = 1000) -> TaskTx:
    return TaskTx(
        spec=SPEC,
        bounty=bounty,
        fee=fee,
        deadline=5,
        result_reward=0,
        max_results=3,
        publisher=pub.public_key,
        nonce=nonce,
    ).signed_by(pub, REGTEST.genesis_hash)


def no_verdict(_tx: ResultTx, _task: dict[str, Any], _audit: bool) -> str | None:
    return None


def reason(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return exc.value.reason


def test_pool_refuses_a_second_task_the_publisher_cannot_also_afford() -> None:
    chain, pool = FakeChain(), Mempool(REGTEST)
    big = DEV_ALLOCATION // 2
    pool.admit(task(bounty=big, nonce=1), chain.chain, no_verdict)
    with pytest.raises(ValidationError) as exc:
        pool.check(task(bounty=big, nonce=2), chain.chain, no_verdict)
    assert reason(exc) == "insufficient-funds"
    # Alone, the second one would have been fine: the pool's own txs count.
    Mempool(REGTEST).check(task(bounty=big, nonce=2), chain.chain, no_verdict)


def test_pool_full_and_duplicate_and_bad_signature_have_their_reasons() -> None:
    chain, pool = FakeChain(), Mempool(REGTEST, max_txs=1)
    t = task()
    pool.admit(t, chain.chain, no_verdict)
    with pytest.raises(ValidationError) as exc:
        pool.check(t, chain.chain, no_verdict)
    assert reason(exc) == "duplicate"
    with pytest.raises(ValidationError) as exc:
        pool.check(task(nonce=9), chain.chain, no_verdict)
    assert reason(exc) == "mempool-full"
    forged = TaskTx(**{**task(nonce=3).__dict__, "bounty": 5})
    with pytest.raises(ValidationError) as exc:
        Mempool(REGTEST).check(forged, chain.chain, no_verdict)
    assert reason(exc) == "bad-task-sig"


def test_select_respects_the_byte_budget_and_reports_fees() -> None:
    chain, pool = FakeChain(), Mempool(REGTEST)
    txs = [task(nonce=i, fee=1000 + 1000 * i) for i in range(3)]
    for t in txs:
        pool.admit(t, chain.chain, no_verdict)
    chosen, fees = pool.select(chain.chain, no_verdict, max_bytes=10**6)
    # Highest fee rate first.
    assert chosen == txs[::-1] and fees == sum(t.fee for t in txs)
    one_size = len(encode_tx(txs[0]))
    chosen, fees = pool.select(chain.chain, no_verdict, max_bytes=one_size + 10)
    assert chosen == [txs[2]] and fees == txs[2].fee


def transfer(
    sender: Identity = PUB, amount: int = 10, fee: int = 1000, nonce: int = 1
) -> TransferTx:
    return TransferTx(sender.public_key, NODE_KEY.public_key, amount, fee, nonce).signed_by(
        sender, REGTEST.genesis_hash
    )


def test_transfers_and_tasks_share_one_fee_rate_order_and_their_fees_count() -> None:
    chain, pool = FakeChain(), Mempool(REGTEST)
    t = task(fee=2000)  # a task is bigger: a lower fee rate than a transfer paying 2,000
    cheap, dear = transfer(fee=1000, nonce=1), transfer(fee=2000, nonce=2)
    for tx in (cheap, t, dear):
        pool.admit(tx, chain.chain, no_verdict)
    rates = {tx.id: tx.fee / len(encode_tx(tx)) for tx in (cheap, t, dear)}
    chosen, fees = pool.select(chain.chain, no_verdict, max_bytes=10**6)
    assert [tx.id for tx in chosen] == sorted(rates, key=lambda i: -rates[i])
    assert chosen[0] == dear and fees == 1000 + 2000 + 2000


def test_pool_refuses_a_transfer_the_sender_can_only_afford_once() -> None:
    chain, pool = FakeChain(), Mempool(REGTEST)
    half = DEV_ALLOCATION // 2
    pool.admit(transfer(amount=half, nonce=1), chain.chain, no_verdict)
    with pytest.raises(ValidationError) as exc:
        pool.check(transfer(amount=half, nonce=2), chain.chain, no_verdict)
    assert reason(exc) == "insufficient-funds"


def test_a_full_pool_evicts_a_cheaper_task_for_a_transfer_that_outbids_it() -> None:
    chain, pool = FakeChain(), Mempool(REGTEST, max_txs=2)
    cheap, dear = task(nonce=1, fee=1000), task(nonce=2, fee=9000)
    for t in (cheap, dear):
        pool.admit(t, chain.chain, no_verdict)
    rich = transfer(fee=1000 + 2 * len(encode_tx(cheap)))
    assert pool.admit(rich, chain.chain, no_verdict) == [cheap]


async def test_task_service_publishes_signed_by_the_node_and_reconciles_on_tips() -> None:
    chain, relay, pool = FakeChain(), FakeRelay(), Mempool(REGTEST)
    changes: list[int] = []
    svc = TaskService(
        NODE_KEY, chain, pool, _NoVerifier(), relay, lambda: changes.append(len(pool))
    )
    order = TaskTx(
        spec=SPEC,
        bounty=10,
        fee=REGTEST.min_task_fee,
        deadline=5,
        result_reward=0,
        max_results=3,
        publisher=b"",
        nonce=0,
    )
    tx = await svc.publish(order)
    assert tx.publisher == NODE_KEY.public_key and tx.id in pool and relay.sent == [tx]
    assert changes == [1]

    # A block including the task: the pool drops it when the tip moves.
    b = Builder()
    blk = b.make(b.genesis, txs=(tx,))
    await chain.submit_block(blk)
    assert tx.id not in pool and changes[-1] == 0

    # A heavier branch without it: the reorg gives the task back to the pool.
    side = b.make(b.genesis, dt=2)
    side2 = b.make(side.hash)
    await chain.submit_block(side)
    await chain.submit_block(side2)
    assert chain.chain.tip.hash == side2.hash
    assert tx.id in pool and changes[-1] == 1


async def test_a_result_with_no_verdict_yet_is_missing_data_when_not_verified() -> None:
    chain, pool = FakeChain(), Mempool(REGTEST)
    svc = TaskService(NODE_KEY, chain, pool, _NoVerifier(), FakeRelay(), lambda: None)
    b = Builder()
    t = task()
    blk = b.make(b.genesis, txs=(t,))
    await chain.submit_block(blk)
    trainer = dev_identity(3)
    res = ResultTx(t.id, blk.hash, 0, trainer.public_key, 0.5, cid_of_bytes(b"m"), 10, 1, 1_000)
    res = res.signed_by(trainer, REGTEST.genesis_hash)
    with pytest.raises(MissingDataError):
        await svc.submit_result(res, "peer", verify=False)
    assert res.id not in pool


class _NoVerifier:
    """A verifier that knows no verdicts (and must not be asked to re-run)."""

    def peek(self, _tx: ResultTx, _task: dict[str, Any], _audit: bool) -> str | None:
        return None

    async def check(self, _req: Any) -> str | None:
        raise AssertionError("not expected to re-run")


def test_a_full_pool_evicts_its_cheapest_task_only_for_one_that_outbids_it() -> None:
    chain, pool = FakeChain(), Mempool(REGTEST, max_txs=3)
    cheap, mid, dear = (task(nonce=i, fee=f) for i, f in ((1, 1000), (2, 5000), (3, 9000)))
    for t in (cheap, mid, dear):
        pool.admit(t, chain.chain, no_verdict)
    size = len(encode_tx(cheap))
    # Same fee rate as the cheapest (plus less than the increment): refused.
    with pytest.raises(ValidationError) as exc:
        pool.admit(task(nonce=4, fee=1000 + size // 2), chain.chain, no_verdict)
    assert reason(exc) == "mempool-full"
    rich = task(nonce=5, fee=1000 + 2 * size)
    assert pool.admit(rich, chain.chain, no_verdict) == [cheap]
    assert cheap.id not in pool and rich.id in pool and len(pool) == 3


def test_admission_cost_does_not_grow_with_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """Attack: with thousands of pooled tasks, every new (unfunded) task used
    to re-apply the whole pool. Count rule applications, not seconds."""
    from p2pml.chain import tasks as chain_tasks

    chain, pool = FakeChain(), Mempool(REGTEST)
    keys = [dev_identity(i) for i in range(8)]
    for i in range(2_000):
        pool.admit(task(pub=keys[i % 8], nonce=i, bounty=1), chain.chain, no_verdict)
    calls = [0]
    real = chain_tasks.TaskHandler.apply

    def counted(self: Any, tx: Any, view: Any, ctx: Any) -> None:
        calls[0] += 1
        real(self, tx, view, ctx)

    monkeypatch.setattr(chain_tasks.TaskHandler, "apply", counted)
    poor = Identity.from_seed(b"\x42" * 32)
    for i in range(50):
        with pytest.raises(ValidationError) as exc:
            pool.admit(task(pub=poor, nonce=i), chain.chain, no_verdict)
        assert reason(exc) == "insufficient-funds"
    assert calls[0] == 50  # one application each, whatever the pool holds


def test_the_pool_holds_one_blocks_worth_of_challenges() -> None:
    """A flood of challenges: the pool keeps at most max_challenges_per_block
    (the rest are refused until a block takes those), so every template it
    makes is valid; a dry-run check takes no slot."""
    chain = FakeChain()
    chain.chain.verdicts = lambda _tx, _task, _audit: ""
    b = Builder()
    b.ref.verdicts = chain.chain.verdicts
    t = dataclasses.replace(task(), max_results=10, signature=b"").signed_by(
        PUB, REGTEST.genesis_hash
    )
    b1 = b.make(b.genesis, txs=(t,))
    chain.node.feed(b1).raise_error()
    trainers = [dev_identity(i) for i in (1, 2, 3, 4, 5, 6)]
    results = [
        ResultTx(
            t.id, b1.hash, 0, who.public_key, 0.5, cid_of_bytes(b"m%d" % i), 10, 1, 1_000
        ).signed_by(who, REGTEST.genesis_hash)
        for i, who in enumerate(trainers)
    ]
    b2 = b.make(b1.hash, txs=tuple(results))
    chain.node.feed(b2).raise_error()
    flood = [
        ChallengeTx(
            PUB.public_key if i == 0 else trainers[i - 1].public_key, r.id, 1_000, i
        ).signed_by(PUB if i == 0 else trainers[i - 1], REGTEST.genesis_hash)
        for i, r in enumerate(results[: REGTEST.max_challenges_per_block + 1])
    ]
    pool = Mempool(REGTEST)
    pool.check(flood[0], chain.chain, no_verdict)  # a dry run: no slot taken
    for c in flood[:-1]:
        pool.admit(c, chain.chain, no_verdict)
    with pytest.raises(ValidationError) as exc:
        pool.admit(flood[-1], chain.chain, no_verdict)
    assert reason(exc) == "too-many-challenges"
    chosen, _fees = pool.select(chain.chain, no_verdict, REGTEST.max_block_bytes)
    assert len(chosen) == REGTEST.max_challenges_per_block
    b3 = b.make(b2.hash, txs=tuple(chosen))
    chain.node.feed(b3).raise_error()  # the template's block is valid
    pool.reconcile(chain.chain, no_verdict, [b3], [])
    pool.admit(flood[-1], chain.chain, no_verdict)  # room again in the next block


def test_round_closes_never_push_a_full_pools_template_past_the_block_limits() -> None:
    """The attack: fill the pool with minimum-fee transfers and make a round
    close due. The closes are added after the pool's choice; without room
    kept for them the template held max_block_txs + 1 transactions, a block
    every node refuses (`bad-tx-count`) after its proof of work, every time."""
    from p2pml.chain.encoding import tx_id
    from p2pml.chain.rules import check_block_body
    from p2pml.chain.template import build_block
    from p2pml.chain.types import RoundCloseTx
    from p2pml.config import MiningSettings
    from p2pml.node.mining import MiningService
    from p2pml.node.relay import Relay
    from tests.unit.node.fakes import FakeGossip

    params = dataclasses.replace(REGTEST, max_block_txs=40)
    chain, pool = FakeChain(params), Mempool(params)
    for i in range(50):
        pool.admit(transfer(sender=dev_identity(i % 4), nonce=i), chain.chain, no_verdict)

    class Templates(FakeChain):
        def template(self, miner: bytes, txs: Any = (), fees: int = 0) -> Any:
            tip = self.chain.tip
            return build_block(
                params, tip.hash, tip.height + 1, self.chain.next_bits(tip), tip.header.time + 1,
                miner, txs=txs, fees=fees,
            )  # fmt: skip

    chain.__class__ = Templates
    closes = [RoundCloseTx(bytes([i]) * 32, 0, bytes(32)) for i in range(3)]
    svc = MiningService(
        NODE_KEY, chain, pool, no_verdict, Relay(chain, FakeGossip()),  # type: ignore[arg-type]
        MiningSettings(), extra_txs=lambda _txs: list(closes),
    )  # fmt: skip
    blk = svc.template()
    assert len(blk.txs) <= params.max_block_txs
    assert [tx for tx in blk.txs if isinstance(tx, RoundCloseTx)] == closes
    assert len(blk.txs) > 1 + len(closes)  # the pool still fills the rest
    check_block_body(blk, [tx_id(tx) for tx in blk.txs], params)  # bad-tx-count
