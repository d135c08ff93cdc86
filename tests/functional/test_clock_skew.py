"""Scenario 7: a node whose clock runs 3 hours ahead mines blocks the others
refuse as time-too-new (without banning it); once its clock is right it
follows and extends the same chain as everyone else."""

from __future__ import annotations

from tests.framework.testnode import NodeSet, connect_nodes, sync_blocks
from tests.framework.testnode import blocks_rejected as rejected
from tests.framework.waiting import wait_until_sync


def test_clock_skew(nodes: NodeSet) -> None:
    a = nodes.add()
    b = nodes.add()
    skewed = nodes.add(node={"clock_offset_seconds": 3 * 3600})
    nodes.start_all()
    connect_nodes(a, b)
    connect_nodes(skewed, a)
    a.mine(2)
    sync_blocks([a, b, skewed])

    skewed.mine(2)
    wait_until_sync(lambda: rejected(a, "time-too-new") >= 1, 30, what="a time-too-new reject")
    assert a.height == 2 and skewed.height == 4
    assert skewed.status()["peer_id"] not in a.status()["banned"]

    # The honest majority keeps mining; the skewed node follows the most work.
    a.mine(4)
    sync_blocks([a, b, skewed])

    # Its clock is fixed: what it mines now is accepted by everyone.
    skewed.stop()
    skewed.configure("node", clock_offset_seconds=0)
    skewed.start()
    connect_nodes(skewed, a)
    sync_blocks([a, b, skewed])
    mined = skewed.mine(1)
    sync_blocks([a, b, skewed])
    assert a.tip == mined[0] and a.height == 7
