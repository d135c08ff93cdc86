"""Property: any block tree, delivered in any order, ends on the max-work valid tip."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pml.chain.bonds import BONDED_KEY, bond_key
from p2pml.chain.ledger import balance_key
from p2pml.chain.types import Block
from tests.framework.chainbuilder import RETARGET_PARAMS, Builder, Node

MINERS = [bytes([i]) * 32 for i in range(1, 4)]


def work_of(bits: int) -> int:
    # Independent of p2pml.chain.pow on purpose.
    target = (bits & 0xFFFFFF) * 256 ** ((bits >> 24) - 3)
    return 2**256 // (target + 1)


@st.composite
def trees(draw: st.DrawFn) -> tuple[Builder, list[Block], set[bytes], list[int]]:
    b = Builder(RETARGET_PARAMS)
    n = draw(st.integers(1, 40))
    blocks: list[Block] = []
    invalid: set[bytes] = set()
    for _ in range(n):
        choices = [b.genesis] + [x.hash for x in blocks]
        # Bias towards recent parents so trees grow deep enough to retarget.
        parent = choices[draw(st.integers(max(0, len(choices) - 6), len(choices) - 1))]
        bad = draw(st.integers(0, 9)) == 0
        blk = b.make(
            parent,
            dt=draw(st.sampled_from([1, 600, 1200])),
            miner=draw(st.sampled_from(MINERS)),
            reward_delta=1 if bad else 0,
        )
        if bad or parent in invalid:
            invalid.add(blk.hash)
        blocks.append(blk)
    order = draw(st.permutations(range(n)))
    return b, blocks, invalid, list(order)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees())
def test_random_trees_end_on_max_work_valid_tip(
    case: tuple[Builder, list[Block], set[bytes], list[int]],
) -> None:
    b, blocks, invalid, order = case
    by_hash = {x.hash: x for x in blocks}
    work: dict[bytes, int] = {b.genesis: work_of(b.params.genesis.header.bits)}
    for x in blocks:  # parents come first in ``blocks``
        work[x.hash] = work[x.prev_hash] + work_of(x.header.bits)
    valid = [h for h in work if h not in invalid]
    best = max(work[h] for h in valid)

    node = Node(RETARGET_PARAMS)
    for i in order:
        node.feed(blocks[i])

    tip = node.chain.tip
    assert tip.hash not in invalid
    assert tip.chain_work == best
    winners = [h for h in valid if work[h] == best]
    if len(winners) == 1:
        assert tip.hash == winners[0]

    # The chain state equals a replay of the winning chain from genesis.
    expected: dict[bytes, Any] = {balance_key(k): a for k, a, _ in b.params.allocations}
    expected.update(  # dev keys are bonded in genesis
        (bond_key(k), {"amount": bond, "height": 0, "unbond_at": None})
        for k, _, bond in b.params.allocations
        if bond
    )
    expected[BONDED_KEY] = sorted(k for k, _, bond in b.params.allocations if bond)
    h = tip.hash
    while h != b.genesis:
        cb = by_hash[h].txs[0]
        expected[balance_key(cb.miner)] = expected.get(balance_key(cb.miner), 0) + cb.amount
        h = by_hash[h].prev_hash
    assert node.chain.state == expected
    assert len(node.chain.orphans) == 0
