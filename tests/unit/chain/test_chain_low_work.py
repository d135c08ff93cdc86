"""Unrequested blocks on lighter branches keep their header, not their body.

Without this, anyone could fill a node's disk with side branches forked at an
old height, where the work per block is what the chain's start demanded.
Diagrams read left to right from genesis (G); ``*`` marks the tip.
"""

from __future__ import annotations

from p2pml.chain.index import ChainUpdate
from p2pml.chain.types import Block
from tests.framework.chainbuilder import NOW, Builder, Node

OTHER = b"\x22" * 32


def gossip(n: Node, block: Block) -> ChainUpdate:
    up = n.chain.accept_block(block, NOW, requested=False)
    n.source.apply(up)
    return up


def test_lighter_unrequested_block_keeps_only_its_header() -> None:
    #   G - a1 - a2 - a3*
    #    \
    #     b1            (gossiped: lighter than a3)
    b, n = Builder(), Node()
    a = b.chain(b.genesis, 3)
    b1 = b.chain(b.genesis, 1, miner=OTHER)[0]
    n.feed_all(a)
    up = gossip(n, b1)
    assert up.error is None and up.low_work and not up.orphaned
    assert up.new_blocks == []  # nothing for the store to write but the header
    e = n.chain.entry(b1.hash)
    assert e is not None and not e.has_data
    assert n.chain.get_block(b1.hash) is None
    assert n.tip == a[-1].hash


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


def test_branch_that_overtakes_waits_for_the_bodies_it_lacks() -> None:
    #   G - a1 - a2 - a3
    #    \
    #     b1 - b2 - b3 - b4*   (b1, b2 gossiped while lighter: headers only)
    b, n = Builder(), Node()
    a = b.chain(b.genesis, 3)
    bb = b.chain(b.genesis, 4, miner=OTHER)
    n.feed_all(a)
    assert [gossip(n, x).low_work for x in bb] == [True, True, False, False]
    tip_entry = n.chain.entry(bb[-1].hash)
    assert tip_entry is not None and tip_entry.has_data and not tip_entry.chain_has_data
    assert n.tip == a[-1].hash  # cannot go over without b1, b2
    n.feed(bb[0])  # sync fetches the missing bodies: requested
    up = n.feed(bb[1])
    assert n.tip == bb[-1].hash and up.reorg_depth == 3


def test_unrequested_orphan_is_held_to_the_rule_when_adopted() -> None:
    #   G - a1 - a2 - a3*
    #    \
    #     b1 - b2      (b2 gossiped first: an orphan; then b1)
    b, n = Builder(), Node()
    a = b.chain(b.genesis, 3)
    bb = b.chain(b.genesis, 2, miner=OTHER)
    n.feed_all(a)
    assert gossip(n, bb[1]).orphaned
    gossip(n, bb[0])
    assert len(n.chain.orphans) == 0
    for x in bb:
        e = n.chain.entry(x.hash)
        assert e is not None and not e.has_data, x.height


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


def test_orphans_adopted_after_a_lighter_parent_ask_for_its_body() -> None:
    #   G - a1 - a2 - a3*
    #    \
    #     b1 - b2 - b3 - b4   (gossiped b4, b3, b2, then b1)
    # b1 and b2 are lighter: headers only. b3 ties, b4 leads: both stored, so
    # the branch is ahead but cannot connect until b1, b2 come; the update says so.
    b, n = Builder(), Node()
    a = b.chain(b.genesis, 3)
    bb = b.chain(b.genesis, 4, miner=OTHER)
    n.feed_all(a)
    for x in reversed(bb[1:]):
        assert gossip(n, x).orphaned
    up = gossip(n, bb[0])
    assert up.low_work and up.needs_ancestors
    assert [n.chain.entry(x.hash).has_data for x in bb] == [False, False, True, True]  # type: ignore[union-attr]
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
