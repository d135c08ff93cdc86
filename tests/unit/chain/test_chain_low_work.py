"""Unrequested blocks on lighter branches are not kept: neither body nor header.

Without this, anyone could fill a node's disk with side branches forked at an
old height, where the work per block is what the chain's start demanded.
(Until issue 14 the header was kept: 3,000 genesis-forked headers filled the
index; see test_chain_presync.py.) Diagrams read left to right from genesis
(G); ``*`` marks the tip.
"""

from __future__ import annotations

import dataclasses

from p2pml.chain.index import ChainUpdate
from p2pml.chain.types import Block
from tests.framework.chainbuilder import NOW, Builder, Node

OTHER = b"\x22" * 32


def gossip(n: Node, block: Block) -> ChainUpdate:
    up = n.chain.accept_block(block, NOW, requested=False)
    n.source.apply(up)
    return up


def test_lighter_unrequested_block_keeps_nothing() -> None:
    #   G - a1 - a2 - a3*
    #    \
    #     b1            (gossiped: lighter than a3)
    b, n = Builder(), Node()
    a = b.chain(b.genesis, 3)
    b1 = b.chain(b.genesis, 1, miner=OTHER)[0]
    n.feed_all(a)
    up = gossip(n, b1)
    assert up.error is None and up.low_work and not up.orphaned
    assert up.new_blocks == [] and up.new_entries == []  # nothing for the store
    assert n.chain.entry(b1.hash) is None
    assert n.chain.get_block(b1.hash) is None
    assert n.tip == a[-1].hash


def test_lighter_block_with_bad_pow_is_invalid_not_light() -> None:
    b, n = Builder(), Node()
    n.feed_all(b.chain(b.genesis, 3))
    b1 = b.chain(b.genesis, 1, miner=OTHER)[0]
    bad = Block(dataclasses.replace(b1.header, bits=0x1D00FFFF), b1.txs)
    up = gossip(n, bad)
    assert up.error is not None and up.error.reason == "bad-pow"


def test_equal_work_and_heavier_unrequested_blocks_are_stored() -> None:
    #   G - a1 - a2*
    #    \
    #     b1 - b2 - b3  (b2 ties a2, b3 beats it: both bodies kept)
    b, n = Builder(), Node()
    a = b.chain(b.genesis, 2)
    bb = b.chain(b.genesis, 3, miner=OTHER)
    n.feed_all(a)
    n.feed(bb[0])  # requested (sync): stored although lighter
    assert n.chain.entry(bb[0].hash).has_data  # type: ignore[union-attr]
    tie = gossip(n, bb[1])
    assert not tie.low_work and n.chain.entry(bb[1].hash).has_data  # type: ignore[union-attr]
    assert n.tip == a[-1].hash  # first seen keeps the tie
    ahead = gossip(n, bb[2])
    assert not ahead.low_work and ahead.reorg_depth == 2
    assert n.tip == bb[-1].hash


def test_branch_that_overtakes_after_dropped_blocks_waits_as_orphans() -> None:
    #   G - a1 - a2 - a3
    #    \
    #     b1 - b2 - b3 - b4*   (b1, b2 gossiped while lighter: dropped)
    b, n = Builder(), Node()
    a = b.chain(b.genesis, 3)
    bb = b.chain(b.genesis, 4, miner=OTHER)
    n.feed_all(a)
    ups = [gossip(n, x) for x in bb]
    assert [u.low_work for u in ups] == [True, False, False, False]
    assert [u.orphaned for u in ups] == [False, True, True, True]  # b1 unknown: sync asks
    assert n.tip == a[-1].hash
    n.feed(bb[0])  # sync fetches b1 (requested): the pooled b2..b4 follow
    assert n.tip == bb[-1].hash and len(n.chain.orphans) == 0


def test_unrequested_orphan_is_held_to_the_rule_when_adopted() -> None:
    #   G - a1 - a2 - a3*
    #    \
    #     b1 - b2      (b2 gossiped first: an orphan; then b1)
    b, n = Builder(), Node()
    a = b.chain(b.genesis, 3)
    bb = b.chain(b.genesis, 2, miner=OTHER)
    n.feed_all(a)
    assert gossip(n, bb[1]).orphaned
    assert gossip(n, bb[0]).low_work  # b1 with b2 on it still falls short
    assert len(n.chain.orphans) == 0  # b2 dropped with it: it can never connect
    assert all(n.chain.entry(x.hash) is None for x in bb)


def test_requested_orphan_is_stored_when_adopted() -> None:
    b, n = Builder(), Node()
    a = b.chain(b.genesis, 3)
    bb = b.chain(b.genesis, 2, miner=OTHER)
    n.feed_all(a)
    assert n.feed(bb[1]).orphaned
    n.feed(bb[0])
    assert all(n.chain.entry(x.hash).has_data for x in bb)  # type: ignore[union-attr]


def test_unrequested_block_ahead_of_a_fresh_node_is_stored() -> None:
    # The rule compares with our tip: at genesis, any child is ahead.
    b, n = Builder(), Node()
    a1 = b.chain(b.genesis, 1)[0]
    up = gossip(n, a1)
    assert not up.low_work and n.tip == a1.hash


def test_pooled_orphans_that_lead_make_a_lighter_parent_worth_keeping() -> None:
    #   G - a1 - a2 - a3*
    #    \
    #     b1 - b2 - b3 - b4   (gossiped b4, b3, b2, then b1)
    # b1 alone is lighter, but the pooled b2..b4 on it lead: all are kept
    # and the node reorgs at once.
    b, n = Builder(), Node()
    a = b.chain(b.genesis, 3)
    bb = b.chain(b.genesis, 4, miner=OTHER)
    n.feed_all(a)
    for x in reversed(bb[1:]):
        assert gossip(n, x).orphaned
    up = gossip(n, bb[0])
    assert not up.low_work and up.reorg_depth == 3
    assert n.tip == bb[-1].hash


def test_headers_from_sync_let_a_bodiless_branch_ask_for_its_bodies() -> None:
    #   G - a1 - a2 - a3
    #    \
    #     b1 - b2 - b3 - b4   (headers from sync; b3, b4 bodies gossiped)
    b, n = Builder(), Node()
    a = b.chain(b.genesis, 3)
    bb = b.chain(b.genesis, 4, miner=OTHER)
    n.feed_all(a)
    assert not n.chain.accept_headers([x.header for x in bb], NOW).error
    for x in bb[2:]:
        gossip(n, x)
    assert n.chain.bodiless_ancestors(bb[-1].hash, ()) == [bb[0].header, bb[1].header]
    assert n.chain.bodiless_ancestors(bb[-1].hash, {bb[1].hash}) == []  # asked already
    assert n.chain.bodiless_ancestors(a[-1].hash, ()) == []  # the active chain has them all


def test_a_lighter_block_alone_does_not_ask_for_ancestors() -> None:
    b, n = Builder(), Node()
    a = b.chain(b.genesis, 3)
    bb = b.chain(b.genesis, 3, miner=OTHER)
    n.feed_all(a)
    ups = [gossip(n, x) for x in bb]
    assert [u.needs_ancestors for u in ups] == [False, False, False]  # b3 only ties


def test_children_of_a_header_found_light_are_light_until_their_branch_leads() -> None:
    #   G - a1 - a2 - a3 - a4*
    #    \
    #     b1 - b2 - b3 - b4        (b1 dropped as light; its children have no
    #                               parent in the index, yet b2, b3 stay light
    #                               and b4, tying a4, is not)
    # Before: b2 was not light (unknown parent), so gossip decoded it, checked
    # every signature, pooled it as an orphan and walked a sync session for it.
    b, n = Builder(), Node()
    n.feed_all(b.chain(b.genesis, 4))
    bb = b.chain(b.genesis, 4, miner=OTHER)
    assert n.chain.low_work(bb[0].header)
    assert n.chain.entry(bb[0].hash) is None
    for blk in bb[1:3]:
        assert n.chain.low_work(blk.header), blk.height
    assert not n.chain.low_work(bb[3].header)
    unrelated = b.chain(b.genesis, 2, miner=b"\x33" * 32)[1]  # parent never seen
    assert not n.chain.low_work(unrelated.header)
