"""Transfers, cross-network replay and the timewarp rule as consensus rules."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pml.chain.ledger import balance_key
from p2pml.chain.params import DEVNET, REGTEST, dev_identity
from p2pml.chain.transfers import TransferHandler, transfer_key
from p2pml.chain.types import Block, TransferTx
from p2pml.crypto import Identity
from p2pml.errors import ValidationError
from tests.framework.chainbuilder import MINER, RETARGET_PARAMS, Builder, Node

ALICE, BOB, CAROL = dev_identity(0), dev_identity(1), dev_identity(2)
POOR = Identity.from_seed(b"\x77" * 32)
ALLOC = {k: a for k, a, _bond in REGTEST.allocations}
NET = REGTEST.genesis_hash


def transfer(
    sender: Identity = ALICE,
    recipient: bytes = BOB.public_key,
    amount: int = 5_000,
    fee: int = 1_000,
    nonce: int = 1,
    network: bytes = NET,
) -> TransferTx:
    return TransferTx(sender.public_key, recipient, amount, fee, nonce).signed_by(sender, network)


def bal(n: Node, key: Identity | bytes) -> int:
    k = key if isinstance(key, bytes) else key.public_key
    return int(n.chain.state.get(balance_key(k), 0))


def mine(b: Builder, n: Node, parent: bytes, *txs: Any, miner: bytes = MINER) -> Block:
    blk = b.make(parent, txs=tuple(txs), miner=miner)
    n.feed(blk).raise_error()
    assert n.tip == blk.hash
    return blk


# -- transfers ------------------------------------------------------------------------


def test_a_transfer_moves_coins_and_pays_its_fee_to_the_miner() -> None:
    b, n = Builder(), Node()
    t = transfer(amount=7_000, fee=1_500)
    blk = mine(b, n, b.genesis, t)
    assert bal(n, ALICE) == ALLOC[ALICE.public_key] - 7_000 - 1_500
    assert bal(n, BOB) == ALLOC[BOB.public_key] + 7_000
    assert bal(n, MINER) == REGTEST.coinbase_reward + 1_500
    assert n.chain.state[transfer_key(t.id)] == blk.height


def test_coins_earned_by_a_fresh_key_can_move_on() -> None:
    """What a miner earns can fund other keys: the point of transfers."""
    b, n = Builder(), Node()
    miner = Identity.from_seed(b"\x42" * 32)
    blk = mine(b, n, b.genesis, miner=miner.public_key)
    pay = transfer(miner, CAROL.public_key, amount=REGTEST.coinbase_reward - 1_000)
    mine(b, n, blk.hash, pay)
    assert bal(n, miner) == 0
    assert bal(n, CAROL) == ALLOC[CAROL.public_key] + REGTEST.coinbase_reward - 1_000


@pytest.mark.parametrize(
    ("tx", "reason"),
    [
        (dataclasses.replace(transfer(), amount=9_999), "bad-transfer-sig"),
        (dataclasses.replace(transfer(), recipient=CAROL.public_key), "bad-transfer-sig"),
        (transfer(amount=0), "bad-transfer-amount"),
        (transfer(fee=REGTEST.min_transfer_fee - 1), "bad-transfer-fee"),
        (transfer(recipient=ALICE.public_key), "bad-transfer-self"),
        (transfer(network=DEVNET.genesis_hash), "bad-transfer-sig"),
    ],
    ids=["amount-changed", "recipient-changed", "zero", "low-fee", "self", "devnet-signed"],
)
def test_bad_transfers_make_the_block_invalid(tx: TransferTx, reason: str) -> None:
    with pytest.raises(ValidationError) as err:
        TransferHandler().check(tx, REGTEST)
    assert err.value.reason == reason
    b, n = Builder(), Node()
    up = n.feed(b.make(b.genesis, txs=(tx,), register=False))
    assert up.error is not None and up.error.reason == reason
    assert n.tip == b.genesis


def test_a_transfer_signed_for_devnet_verifies_on_devnet_only() -> None:
    """Attack: replay a devnet transfer (free coins there) on another network."""
    tx = transfer(network=DEVNET.genesis_hash)
    TransferHandler().check(tx, DEVNET)
    with pytest.raises(ValidationError) as err:
        TransferHandler().check(tx, REGTEST)
    assert err.value.reason == "bad-transfer-sig"


def test_an_unfunded_transfer_makes_the_block_invalid() -> None:
    b, n = Builder(), Node()
    blk = b.make(b.genesis, txs=(transfer(POOR, amount=1),))
    assert n.feed(blk).rejected == [(blk.hash, "insufficient-funds")]
    # Amount and fee together must be covered, not each alone.
    everything = transfer(amount=ALLOC[ALICE.public_key], fee=1_000)
    blk = b.make(b.genesis, txs=(everything,))
    assert n.feed(blk).rejected == [(blk.hash, "insufficient-funds")]


def test_a_transfer_cannot_be_replayed_but_a_new_nonce_pays_again() -> None:
    b, n = Builder(), Node()
    t = transfer()
    blk = mine(b, n, b.genesis, t)
    again = b.make(blk.hash, txs=(t,))
    assert n.feed(again).rejected == [(again.hash, "duplicate-transfer")]
    twice = b.make(blk.hash, txs=(t, t))
    assert n.feed(twice).error is not None
    assert n.feed(twice).error.reason in ("duplicate-tx", "duplicate-invalid")  # type: ignore[union-attr]
    mine(b, n, blk.hash, transfer(nonce=2))
    assert bal(n, BOB) == ALLOC[BOB.public_key] + 2 * 5_000


def test_a_reorg_undoes_transfers_exactly() -> None:
    #   G - a1(t1) - a2(t2)            state S_a
    #     \
    #      c1 - c2 - c3                heavier: t1, t2 undone, replay matches
    b, n = Builder(), Node()
    before = dict(n.chain.state)
    t1, t2 = transfer(), transfer(BOB, CAROL.public_key, amount=3_000, nonce=9)
    a1 = mine(b, n, b.genesis, t1)
    mine(b, n, a1.hash, t2)
    c = b.chain(b.genesis, 3, miner=b"\x55" * 32)
    n.feed_all(c)
    assert n.tip == c[-1].hash
    replay = Node()
    replay.feed_all(c)
    assert n.chain.state == replay.chain.state
    assert transfer_key(t1.id) not in n.chain.state
    assert bal(n, ALICE) == before[balance_key(ALICE.public_key)]
    # The same transfers are valid again on the new branch.
    mine(b, n, c[-1].hash, t1, t2)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_balances_after_reorgs_with_transfers_equal_a_replay(data: st.DataObject) -> None:
    b, n = Builder(), Node()
    keys = [ALICE, BOB, CAROL, POOR]
    blocks: list[Block] = []
    sent: list[TransferTx] = []
    for _ in range(data.draw(st.integers(3, 14))):
        parents = [b.genesis] + [x.hash for x in blocks]
        parent = parents[data.draw(st.integers(max(0, len(parents) - 4), len(parents) - 1))]
        txs: list[TransferTx] = []
        for _ in range(data.draw(st.integers(0, 3))):
            if sent and data.draw(st.integers(0, 4)) == 0:
                txs.append(data.draw(st.sampled_from(sent)))  # replay: that block is invalid
                continue
            sender = data.draw(st.sampled_from(keys))
            recipient = data.draw(st.sampled_from([k for k in keys if k is not sender]))
            t = transfer(
                sender,
                recipient.public_key,
                amount=data.draw(st.sampled_from([1, 7_777, ALLOC[ALICE.public_key]])),
                nonce=data.draw(st.integers(0, 3)),
            )
            txs.append(t)
            sent.append(t)
        miner = data.draw(st.sampled_from([b"\x01" * 32, POOR.public_key]))
        blk = b.make(parent, txs=tuple(dict.fromkeys(txs)), miner=miner)
        blocks.append(blk)
        n.feed(blk)
    replay = Node()
    chain = []
    e = n.chain.tip
    while e.parent is not None:
        chain.append(b.blocks[e.hash])
        e = e.parent
    for blk in reversed(chain):
        replay.feed(blk).raise_error()
    assert replay.tip == n.tip
    assert replay.chain.state == n.chain.state


# -- timewarp (BIP-94) ----------------------------------------------------------------


def test_the_first_block_of_a_window_may_not_go_back_past_the_bound() -> None:
    """Attack: stamp a window's first block far before its parent (the last
    block of the previous window, stamped late), so neither window counts
    the step and difficulty falls. Refused beyond ``timewarp_seconds``."""
    p = RETARGET_PARAMS
    assert p.retarget_window == 4 and p.timewarp_seconds == 10
    b, n = Builder(p), Node(p)
    blocks = b.chain(b.genesis, 3, dt=600)  # heights 1..3: the next is a window's first
    n.feed_all(blocks)
    parent = blocks[-1]
    warped = b.make(parent.hash, dt=-(p.timewarp_seconds + 1), register=False)
    assert warped.height % p.retarget_window == 0
    up = n.feed(warped)
    assert up.error is not None and up.error.reason == "time-timewarp-attack"
    ok = b.make(parent.hash, dt=-p.timewarp_seconds)
    n.feed(ok).raise_error()
    assert n.tip == ok.hash
    # Inside a window the median-time rule alone applies.
    inside = b.make(ok.hash, dt=-(p.timewarp_seconds + 100))
    assert inside.height % p.retarget_window == 1
    n.feed(inside).raise_error()
    assert n.tip == inside.hash


def test_the_timewarp_bound_is_ten_spacings_on_every_network() -> None:
    from p2pml.chain.params import NETWORKS

    for p in NETWORKS.values():
        assert p.timewarp_seconds == 10 * p.target_spacing
