"""Fork scenarios in the style of Bitcoin Core's feature_block.py.

Diagrams read left to right from genesis (G); ``*`` marks the expected tip.
"""

from __future__ import annotations

from p2pml.chain.index import Status
from p2pml.chain.ledger import balance_key
from tests.framework.chainbuilder import MINER, RETARGET_PARAMS, Builder, Node

OTHER = b"\x22" * 32


def test_simple_reorg() -> None:
    #   G - a1 - a2
    #    \
    #     b1 - b2 - b3*
    b, n = Builder(), Node()
    a = b.chain(b.genesis, 2)
    bb = b.chain(b.genesis, 3, miner=OTHER)
    n.feed_all(a)
    assert n.tip == a[-1].hash
    ups = n.feed_all(bb)
    assert n.tip == bb[-1].hash
    assert ups[-1].reorg_depth == 2
    assert balance_key(MINER) not in n.chain.state  # a's rewards undone
    assert n.chain.state[balance_key(OTHER)] == 3 * b.params.coinbase_reward


def test_100_block_reorg() -> None:
    #   G - a1 - ... - a100
    #    \
    #     b1 - ... - b100 - b101*
    b, n = Builder(), Node()
    a = b.chain(b.genesis, 100)
    bb = b.chain(b.genesis, 101, miner=OTHER)
    n.feed_all(a)
    ups = n.feed_all(bb)
    assert n.tip == bb[-1].hash
    assert sum(u.reorg_depth for u in ups) == 100
    assert n.chain.height == 101
    assert [n.chain.at_height(h).hash for h in range(1, 102)] == [x.hash for x in bb]  # type: ignore[union-attr]


def test_equal_work_fork_keeps_first_seen() -> None:
    #   G - a1 - a2*
    #    \
    #     b1 - b2      (same work, arrived later: no reorg)
    b, n = Builder(), Node()
    a = b.chain(b.genesis, 2)
    bb = b.chain(b.genesis, 2, miner=OTHER)
    n.feed_all(a)
    ups = n.feed_all(bb)
    assert n.tip == a[-1].hash
    assert all(u.reorg_depth == 0 for u in ups)
    assert n.chain.branch_status(n.chain.entry(bb[-1].hash)) == "valid-fork"  # type: ignore[arg-type]


def test_heavier_branch_with_invalid_block_in_the_middle() -> None:
    #   G - a1 - a2 - a3*
    #    \
    #     b1 - b2(bad) - b3 - b4    (more work, but b2 pays itself too much)
    b, n = Builder(), Node()
    a = b.chain(b.genesis, 3)
    b1 = b.make(b.genesis, miner=OTHER)
    b2 = b.make(b1.hash, miner=OTHER, reward_delta=1)
    b3 = b.make(b2.hash, miner=OTHER)
    b4 = b.make(b3.hash, miner=OTHER)
    n.feed_all(a)
    state_before = dict(n.chain.state)
    ups = n.feed_all([b1, b2, b3, b4])
    assert n.tip == a[-1].hash
    assert n.chain.state == state_before
    assert "bad-coinbase-amount" in [r for _, r in ups[-1].rejected]
    assert n.chain.entry(b2.hash).status is Status.INVALID  # type: ignore[union-attr]
    assert n.chain.entry(b4.hash).status is Status.FAILED_CHILD  # type: ignore[union-attr]
    # Anything built on the bad branch later is refused outright.
    b5 = b.make(b4.hash, miner=OTHER)
    assert n.feed(b5).error.reason == "bad-prev"  # type: ignore[union-attr]


def test_orphans_delivered_in_reverse_order() -> None:
    #   G - c1 - c2 - ... - c10*   delivered c10, c9, ..., c1
    b, n = Builder(), Node()
    c = b.chain(b.genesis, 10)
    ups = n.feed_all(list(reversed(c)))
    assert all(u.orphaned for u in ups[:-1])
    assert len(n.chain.orphans) == 0
    assert n.tip == c[-1].hash
    assert len(ups[-1].connected) == 10


def test_reorg_across_a_retarget_boundary() -> None:
    #   window = 4 blocks; a-branch spaced 600 s (difficulty stays), b-branch
    #   spaced 1 s (difficulty x4 from height 4 on)
    #   G - a1 - ... - a6*             then
    #    \
    #     b1 - b2 - b3 - b4 - b5*      (b4, b5 carry 4x work each)
    p = RETARGET_PARAMS
    b, n = Builder(p), Node(p)
    a = b.chain(b.genesis, 6, dt=600)
    bb = b.chain(b.genesis, 5, dt=1, miner=OTHER)
    assert bb[3].header.bits != bb[2].header.bits  # retarget happened at height 4
    n.feed_all(a)
    assert n.tip == a[-1].hash
    n.feed_all(bb)
    assert n.tip == bb[-1].hash
    assert n.chain.tip.chain_work > n.chain.entry(a[-1].hash).chain_work  # type: ignore[union-attr]


def test_heavier_but_shorter_chain_beats_a_longer_one() -> None:
    #   G - a1 - a2 - ... - a8          (8 blocks at minimum difficulty)
    #    \
    #     b1 - b2 - b3 - b4 - b5 - b6*  (6 blocks, the last three 4x harder)
    p = RETARGET_PARAMS
    b, n = Builder(p), Node(p)
    a = b.chain(b.genesis, 8, dt=600)
    bb = b.chain(b.genesis, 6, dt=1, miner=OTHER)
    n.feed_all(a)
    n.feed_all(bb)
    assert n.chain.height == 6 < 8
    assert n.tip == bb[-1].hash


def test_reorg_back_when_new_branch_fails_midway() -> None:
    #   G - a1 - a2*
    #    \
    #     b1 - b2(bad) - b3   delivered after a2 as one orphan chain: the node
    #   tries b, fails at b2 and must return to a2 with a2's state
    b, n = Builder(), Node()
    a = b.chain(b.genesis, 2)
    b1 = b.make(b.genesis, miner=OTHER)
    b2 = b.make(b1.hash, miner=OTHER, reward_delta=-1)
    b3 = b.make(b2.hash, miner=OTHER)
    n.feed_all(a)
    state = dict(n.chain.state)
    n.feed(b3)
    n.feed(b2)
    up = n.feed(b1)
    assert n.tip == a[-1].hash
    assert n.chain.state == state
    # went over (a2, a1 off; b1 on), failed at b2, and came back (b1 off)
    assert up.disconnected == [a[1].hash, a[0].hash, b1.hash]
    assert [h for h, _ in up.rejected] == [b2.hash]
