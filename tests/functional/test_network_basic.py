"""Several real node processes on loopback: peers, block propagation, sync."""

from __future__ import annotations

from tests.framework.testnode import NodeSet, connect_nodes, sync_blocks


def test_line_of_three_propagates_and_late_node_syncs(nodes: NodeSet) -> None:
    a, b, c = nodes.add(), nodes.add(), nodes.add()
    nodes.start_all()
    connect_nodes(a, b)
    connect_nodes(b, c)
    a.mine(5)
    sync_blocks([a, b, c])
    assert c.height == 5
    peers = {p["peer_id"] for p in b.api.get("/peers")}
    assert peers == {a.status()["peer_id"], c.status()["peer_id"]}
    # A late node syncs the chain from one peer.
    d = nodes.add()
    d.start()
    c.mine(3)
    connect_nodes(d, c)
    sync_blocks([a, b, c, d])
    assert d.height == 8
