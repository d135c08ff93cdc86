"""Headers pre-sync: a branch's headers enter the index only once its work
reaches max(min chain work, our tip's work); until then they are held, in
memory and bounded, for the session (peer) that sent them.
Diagrams read left to right from genesis (G); ``*`` marks the tip.
"""

from __future__ import annotations

import dataclasses

import pytest

from p2pml.chain import presync
from p2pml.chain.params import MAIN, REGTEST
from p2pml.chain.pow import bits_to_target, block_work
from tests.framework.chainbuilder import NOW, Builder, Node

OTHER = b"\x22" * 32
GENESIS_WORK = block_work(bits_to_target(REGTEST.pow_limit_bits))


def test_lighter_batch_is_held_and_nothing_enters_the_index() -> None:
    #   G - a1 - a2 - a3 - a4*
    #    \
    #     b1 - b2 - b3          (headers from sync: lighter)
    b, n = Builder(), Node()
    n.feed_all(b.chain(b.genesis, 4))
    bb = b.chain(b.genesis, 3, miner=OTHER)
    up = n.chain.accept_headers([x.header for x in bb], NOW, session="p")
    assert up.error is None and up.headers_ok == 3 and up.headers_work == 4 * GENESIS_WORK
    assert up.new_entries == [] and up.headers_held == 3 and up.headers_new_held == 3
    assert all(n.chain.entry(x.hash) is None for x in bb)


def test_branch_enters_the_index_once_a_later_batch_reaches_our_work() -> None:
    #   G - a1 - a2 - a3*
    #    \
    #     b1 - b2 | b3 - b4    (two batches of one session)
    b, n = Builder(), Node()
    n.feed_all(b.chain(b.genesis, 3))
    bb = b.chain(b.genesis, 4, miner=OTHER)
    first = n.chain.accept_headers([x.header for x in bb[:2]], NOW, session="p")
    assert first.new_entries == [] and first.headers_held == 2
    second = n.chain.accept_headers([x.header for x in bb[2:]], NOW, session="p")
    assert second.error is None
    assert [e.hash for e in second.new_entries] == [x.hash for x in bb]  # oldest first
    assert second.headers_held == 0 and second.headers_new_held == 0
    top = n.chain.entry(bb[-1].hash)
    assert top is not None and top.parent is n.chain.entry(bb[-2].hash)
    assert n.chain.bodiless_ancestors(bb[-1].hash, ()) == [x.header for x in bb]


def test_a_tie_is_enough_to_enter_the_index() -> None:
    b, n = Builder(), Node()
    n.feed_all(b.chain(b.genesis, 2))
    bb = b.chain(b.genesis, 2, miner=OTHER)
    up = n.chain.accept_headers([x.header for x in bb], NOW, session="p")
    assert len(up.new_entries) == 2


def test_held_headers_are_per_session_and_not_counted_twice() -> None:
    b, n = Builder(), Node()
    n.feed_all(b.chain(b.genesis, 5))
    bb = b.chain(b.genesis, 3, miner=OTHER)
    hs = [x.header for x in bb]
    assert n.chain.accept_headers(hs[:2], NOW, session="p").headers_new_held == 2
    again = n.chain.accept_headers(hs, NOW, session="p")  # resent with one more
    assert again.headers_held == 3 and again.headers_new_held == 1
    # Another session starts afresh: the first one's headers are forgotten.
    other = n.chain.accept_headers(hs[2:], NOW, session="q")
    assert other.error is not None and other.error.reason == "prev-unknown"
    assert other.headers_held == 0


def test_without_a_session_nothing_outlives_the_call() -> None:
    b, n = Builder(), Node()
    n.feed_all(b.chain(b.genesis, 5))
    bb = b.chain(b.genesis, 2, miner=OTHER)
    assert n.chain.accept_headers([bb[0].header], NOW).headers_held == 1
    up = n.chain.accept_headers([bb[1].header], NOW)
    assert up.error is not None and up.error.reason == "prev-unknown"


def test_held_headers_are_checked_like_stored_ones() -> None:
    b, n = Builder(), Node()
    n.feed_all(b.chain(b.genesis, 5))
    bb = b.chain(b.genesis, 3, miner=OTHER)
    bad = dataclasses.replace(bb[2].header, time=bb[0].header.time - 10_000)
    up = n.chain.accept_headers([bb[0].header, bb[1].header, bad], NOW, session="p")
    assert up.error is not None and up.error.reason in {"bad-pow", "time-too-old"}
    assert up.headers_ok == 2


def test_session_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(presync, "PRESYNC_MAX_HEADERS", 5)
    b, n = Builder(), Node()
    n.feed_all(b.chain(b.genesis, 20))
    bb = b.chain(b.genesis, 8, miner=OTHER)
    up = n.chain.accept_headers([x.header for x in bb], NOW, session="p")
    assert up.error is not None and up.error.reason == "presync-full"
    assert up.headers_ok == 5 and up.headers_held == 5
    assert all(n.chain.entry(x.hash) is None for x in bb)


def test_held_parent_that_entered_the_index_by_another_way_is_relinked() -> None:
    #   G - a1 - a2*
    #    \
    #     b1 - b2 - b3   (b1 held; then stored as a requested body; then b2, b3)
    b, n = Builder(), Node()
    n.feed_all(b.chain(b.genesis, 2))
    bb = b.chain(b.genesis, 3, miner=OTHER)
    n.chain.accept_headers([bb[0].header], NOW, session="p")
    n.feed(bb[0])  # requested: stored with its own index entry
    up = n.chain.accept_headers([x.header for x in bb], NOW, session="p")
    assert up.error is None and [e.hash for e in up.new_entries] == [bb[1].hash, bb[2].hash]
    e2 = n.chain.entry(bb[1].hash)
    assert e2 is not None and e2.parent is n.chain.entry(bb[0].hash)


def test_committed_branch_walks_the_index_not_held_copies() -> None:
    #   G - a1 - a2 - a3*
    #    \
    #     b1 - b2 - b3   (b1, b2 held; b1 then stored by another way; then b3)
    # b3's skip pointer (height 1) was set while b1 was a held copy: once the
    # branch commits, ancestor walks must reach the index's b1, or a verdict
    # on it (``_descends_from_failed`` compares by identity) would be missed.
    b, n = Builder(), Node()
    n.feed_all(b.chain(b.genesis, 3))
    bb = b.chain(b.genesis, 3, miner=OTHER)
    held = n.chain.accept_headers([x.header for x in bb[:2]], NOW, session="p")
    assert held.new_entries == [] and held.headers_held == 2
    n.feed(bb[0])  # requested: stored with its own index entry
    up = n.chain.accept_headers([x.header for x in bb], NOW, session="p")
    assert up.error is None and [e.hash for e in up.new_entries] == [bb[1].hash, bb[2].hash]
    e1, e3 = n.chain.entry(bb[0].hash), n.chain.entry(bb[2].hash)
    assert e1 is not None and e3 is not None
    assert e3.ancestor(1) is e1 and e3.ancestor(0) is n.chain.entry(b.genesis)


MIN_WORK = dataclasses.replace(REGTEST, name="regtest-minwork", min_chain_work=6 * GENESIS_WORK)


def test_min_chain_work_holds_back_a_fresh_nodes_first_headers() -> None:
    # The threshold is the network's minimum chain work while our chain is lighter.
    b, n = Builder(MIN_WORK), Node(MIN_WORK)
    chain = b.chain(b.genesis, 6)
    first = n.chain.accept_headers([x.header for x in chain[:4]], NOW, session="p")
    assert first.new_entries == [] and first.headers_held == 4
    second = n.chain.accept_headers([x.header for x in chain[4:]], NOW, session="p")
    assert len(second.new_entries) == 6


def test_min_chain_work_applies_to_gossiped_blocks() -> None:
    b, n = Builder(MIN_WORK), Node(MIN_WORK)
    a1 = b.chain(b.genesis, 1)[0]
    up = n.chain.accept_block(a1, NOW, requested=False)
    assert up.low_work and n.chain.entry(a1.hash) is None
    assert not n.chain.accept_block(a1, NOW).low_work  # requested by sync: stored


def test_network_minimum_chain_work_values() -> None:
    assert REGTEST.min_chain_work == 0
    assert MAIN.min_chain_work == 1_440 * block_work(bits_to_target(MAIN.pow_limit_bits))
    assert MAIN.min_chain_work == 94_373_280  # the value docs/consensus.md states
