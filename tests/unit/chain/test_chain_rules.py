"""One test per reject reason: each names the exact reason string."""

from __future__ import annotations

import dataclasses

import pytest

from p2pml.chain import rules
from p2pml.chain.encoding import tx_id, with_raw
from p2pml.chain.hashing import merkle_root
from p2pml.chain.params import REGTEST
from p2pml.chain.pow import bits_to_target, check_pow, target_to_bits
from p2pml.chain.template import build_block, solve
from p2pml.chain.types import Block, BlockHeader, Coinbase
from p2pml.errors import ValidationError
from tests.framework.chainbuilder import MINER, NOW, Builder, Node


def reason_of(node: Node, block: Block, now: int = NOW) -> str | None:
    up = node.feed(block, now)
    return up.error.reason if up.error else None


def resolve(block: Block, txs: tuple[Coinbase, ...] | None = None, **hdr: int) -> Block:
    """Rebuild ``block`` with other txs/header fields, tx root fixed, re-solved."""
    txs = txs if txs is not None else block.txs
    header = dataclasses.replace(
        block.header, tx_root=merkle_root([tx_id(t) for t in txs]), nonce=0, **hdr
    )
    return solve(Block(header, txs))


def unsolve(block: Block) -> Block:
    """Same block with a nonce whose hash misses the target."""
    target = bits_to_target(block.header.bits)
    nonce = block.header.nonce
    while True:
        nonce += 1
        h = dataclasses.replace(block.header, nonce=nonce)
        if not check_pow(h.hash, target):
            return with_raw(Block(h, block.txs))


@pytest.fixture
def b() -> Builder:
    return Builder()


def test_valid_block_connects(b: Builder) -> None:
    n = Node()
    blk = b.make(b.genesis)
    assert reason_of(n, blk) is None
    assert n.tip == blk.hash


def test_bad_pow(b: Builder) -> None:
    assert reason_of(Node(), unsolve(b.make(b.genesis, register=False))) == "bad-pow"


def test_bad_bits_above_pow_limit(b: Builder) -> None:
    blk = b.make(b.genesis, register=False)
    easy = target_to_bits(REGTEST.pow_limit * 2)
    assert reason_of(Node(), resolve(blk, bits=easy)) == "bad-bits"


def test_bad_bits_not_the_expected_difficulty(b: Builder) -> None:
    blk = b.make(b.genesis, register=False)
    harder = target_to_bits(REGTEST.pow_limit // 2)
    assert reason_of(Node(), resolve(blk, bits=harder)) == "bad-bits"


def test_bad_bits_negative_encoding() -> None:
    with pytest.raises(ValidationError) as exc:
        bits_to_target(0x04923456)
    assert exc.value.reason == "bad-bits"


def test_bad_version(b: Builder) -> None:
    blk = b.make(b.genesis, register=False)
    assert reason_of(Node(), resolve(blk, version=2)) == "bad-version"


def test_bad_height(b: Builder) -> None:
    blk = b.make(b.genesis, register=False)
    cb = dataclasses.replace(blk.txs[0], height=5)
    assert reason_of(Node(), resolve(blk, txs=(cb,), height=5)) == "bad-height"


def test_time_too_old(b: Builder) -> None:
    n = Node()
    chain = b.chain(b.genesis, 11, dt=10)
    n.feed_all(chain)
    mtp = n.chain.median_time_past(n.chain.tip)
    late = b.make(chain[-1].hash, register=False)
    assert reason_of(n, resolve(late, time=mtp)) == "time-too-old"
    assert reason_of(n, resolve(late, time=mtp + 1)) is None


def test_time_too_new_is_not_cached_as_invalid(b: Builder) -> None:
    n = Node()
    blk = b.make(b.genesis, register=False)
    future = resolve(blk, time=NOW + REGTEST.max_future_seconds + 1)
    assert reason_of(n, future) == "time-too-new"
    # Once our clock catches up the same block is fine: it was never marked bad.
    assert reason_of(n, future, now=NOW + 10) is None
    assert n.tip == future.hash


def test_bad_tx_root_does_not_poison_the_header(b: Builder) -> None:
    n = Node()
    blk = b.make(b.genesis)
    other_cb = dataclasses.replace(blk.txs[0], extra=b"mangled")
    mangled = Block(blk.header, (other_cb,))
    assert reason_of(n, mangled) == "bad-tx-root"
    assert reason_of(n, blk) is None  # the real body still connects
    assert n.tip == blk.hash


def test_bad_coinbase_missing(b: Builder) -> None:
    blk = b.make(b.genesis, register=False)
    assert reason_of(Node(), resolve(blk, txs=())) == "bad-coinbase"


def test_bad_coinbase_two_coinbases(b: Builder) -> None:
    blk = b.make(b.genesis, register=False)
    cb2 = dataclasses.replace(blk.txs[0], extra=b"second")
    assert reason_of(Node(), resolve(blk, txs=(blk.txs[0], cb2))) == "bad-coinbase"


def test_bad_coinbase_wrong_height(b: Builder) -> None:
    blk = b.make(b.genesis, register=False)
    cb = dataclasses.replace(blk.txs[0], height=7)
    assert reason_of(Node(), resolve(blk, txs=(cb,))) == "bad-coinbase"


def test_bad_coinbase_amount_marks_block_invalid(b: Builder) -> None:
    n = Node()
    blk = b.make(b.genesis, reward_delta=1)
    assert reason_of(n, blk) is None  # accepted for storage...
    up_reasons = n.chain.entry(blk.hash)
    assert up_reasons is not None and up_reasons.invalid_reason == "bad-coinbase-amount"
    assert n.tip == b.genesis  # ...but never connected
    assert reason_of(n, blk) == "duplicate-invalid"


def test_block_too_large(b: Builder) -> None:
    small = dataclasses.replace(REGTEST, name="regtest-small", max_block_bytes=200)
    bb = Builder(small)
    blk = bb.make(bb.genesis, extra=b"x" * 64)
    assert reason_of(Node(small), blk) == "block-too-large"


def test_bad_tx_count(b: Builder) -> None:
    few = dataclasses.replace(REGTEST, name="regtest-few", max_block_txs=1)
    bb = Builder(few)
    blk = bb.make(bb.genesis, register=False)
    cb2 = dataclasses.replace(blk.txs[0], extra=b"2")
    assert reason_of(Node(few), resolve(blk, txs=(blk.txs[0], cb2))) == "bad-tx-count"


def test_duplicate_tx() -> None:
    t = REGTEST.genesis_time + 1
    blk = build_block(REGTEST, REGTEST.genesis_hash, 1, REGTEST.pow_limit_bits, t, MINER)
    assert reason_of(Node(), resolve(blk, txs=blk.txs * 2)) == "duplicate-tx"


def test_duplicate_block(b: Builder) -> None:
    n = Node()
    blk = b.make(b.genesis)
    assert reason_of(n, blk) is None
    assert reason_of(n, blk) == "duplicate"


def test_bad_prev_child_of_invalid(b: Builder) -> None:
    n = Node()
    bad = b.make(b.genesis, reward_delta=5)
    child = b.make(bad.hash)
    n.feed(bad)
    assert reason_of(n, child) == "bad-prev"


def test_header_with_unknown_parent(b: Builder) -> None:
    n = Node()
    blk = b.make(b.genesis)
    child = b.make(blk.hash)
    up = n.chain.accept_headers([child.header], NOW)
    assert up.error is not None and up.error.reason == "prev-unknown"


def test_genesis_pow_holds_on_every_network() -> None:
    from p2pml.chain.params import NETWORKS

    for p in NETWORKS.values():
        assert check_pow(p.genesis.hash, p.pow_limit), p.name
        rules.check_header(p.genesis.header, p)


def test_header_layout_is_fixed() -> None:
    h = BlockHeader(1, 2, b"\x03" * 32, b"\x04" * 32, 5, 0x207FFFFF, 7)
    raw = h.serialize()
    assert len(raw) == 92
    assert raw[:8] == bytes.fromhex("0000000100000002")
    assert raw[-8:] == (7).to_bytes(8, "big")
    assert BlockHeader.deserialize(raw) == h
