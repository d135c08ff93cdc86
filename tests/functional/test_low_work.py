"""Scenario: a peer gossips a side branch forked at genesis, where work is cheap.

While the branch is lighter than the node's chain, the node keeps nothing of
it, neither bodies nor headers (until issue 14 it kept the headers), and
does not hold a few such blocks against the peer (an honest miner on a
losing branch sends them too). Once the peer's branch leads, the node asks
it for the headers and bodies it refused and reorgs.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from p2pml.chain.encoding import encode_block
from p2pml.chain.params import REGTEST
from p2pml.chain.template import build_block, solve
from p2pml.chain.types import Block
from p2pml.errors import ApiError
from p2pml.net import protocol as P
from tests.framework.hostile_peer import HostilePeer, branch_responder
from tests.framework.testnode import NodeSet, TestNode
from tests.framework.waiting import wait_until

CHEAP_MINER = b"\x77" * 32


def cheap_branch(n: int) -> list[Block]:
    """``n`` honest regtest blocks on genesis (not the node's chain)."""
    blocks: list[Block] = []
    prev, t = REGTEST.genesis_hash, REGTEST.genesis_time
    for height in range(1, n + 1):
        t += 1
        blk = solve(build_block(REGTEST, prev, height, REGTEST.pow_limit_bits, t, CHEAP_MINER))
        blocks.append(blk)
        prev = blk.hash
    return blocks


def low_work_items(node: TestNode) -> int:
    """Headers/blocks of lighter branches the node counted against its peers."""
    m = re.search(r"^p2pml_p2p_low_work_items (\d+)$", node.api.get("/metrics"), re.M)
    return int(m.group(1)) if m else 0


def tips(node: TestNode) -> dict[str, str]:
    return {t["hash"]: t["status"] for t in node.api.get("/chain/tips")}


def body_status(node: TestNode, blk: Block) -> str | int:
    """The branch status the node gives a block it holds the body of, or the HTTP error."""
    try:
        return str(node.api.get(f"/blocks/{blk.hash.hex()}")["status"])
    except ApiError as exc:
        return exc.status


def test_lighter_gossiped_branch_keeps_nothing_until_it_leads(nodes: NodeSet) -> None:
    a = nodes.add()
    a.start()
    a.mine(4)
    branch = cheap_branch(6)
    lighter, leading = branch[:3], branch[3:]  # 4 ties A; 5 and 6 lead
    published: list[Block] = []  # the peer serves only what it has gossiped
    claims_nothing = P.encode_status(P.StatusMsg(REGTEST.genesis_hash, REGTEST.genesis_hash, 0, 1))

    async def scenario() -> tuple[set[bytes], set[bytes]]:
        hp = HostilePeer("regtest", responder=branch_responder(claims_nothing, published))
        await hp.start()
        try:
            st = await asyncio.to_thread(a.status)
            await hp.connect(st["listen"][0])
            await hp.wait_subscribed(st["peer_id"], "blocks")
            for blk in lighter:  # one at a time: gossip may reorder what is sent at once
                published.append(blk)
                await hp.publish_raw("blocks", encode_block(blk))
            # Each is dropped by its header, one item each: b1 because its
            # branch is lighter, b2 and b3 as children of a header found light
            # (they used to be orphans, decoded and checked, whose sync
            # sessions then held the branch's headers back).
            await wait_until(
                lambda: asyncio.to_thread(lambda: low_work_items(a) >= len(lighter)),
                what="the lighter branch counted",
            )
            stored = [await asyncio.to_thread(body_status, a, blk) for blk in lighter]
            assert stored == [404, 404, 404], stored
            assert not set(await asyncio.to_thread(tips, a)) & {b.hash.hex() for b in lighter}
            asked_while_lighter = {
                h for _, r in hp.requests if isinstance(r, P.BlocksReq) for h in r.hashes
            }
            for blk in leading:
                published.append(blk)
                await hp.publish_raw("blocks", encode_block(blk))

            def reorged() -> bool:
                return bool(a.status()["tip"] == branch[-1].hash.hex())

            await wait_until(lambda: asyncio.to_thread(reorged), what="A reorgs to the branch")
            asked = {h for _, r in hp.requests if isinstance(r, P.BlocksReq) for h in r.hashes}
            assert hp.peer_id not in (await asyncio.to_thread(a.status))["banned"]
            return asked_while_lighter, asked
        finally:
            await hp.stop()

    asked_while_lighter, asked = asyncio.run(scenario())
    assert asked_while_lighter == set()  # nothing asked of it while lighter
    assert {b.hash for b in lighter} <= asked  # the refused bodies, once it led
    assert [body_status(a, b) for b in branch] == ["active"] * len(branch)
    assert len(a.api.get("/chain?limit=100")) == 7  # genesis and the 6 of the branch
    with pytest.raises(ApiError):
        a.api.get("/blocks/" + "00" * 32)
