"""Build block trees by hand for consensus tests (no mining processes)."""

from __future__ import annotations

import dataclasses

from p2pml.chain.audits import miner_fee
from p2pml.chain.index import ChainUpdate, IndexEntry, MemoryBlockSource
from p2pml.chain.params import REGTEST, NetworkParams
from p2pml.chain.state import ChainState
from p2pml.chain.template import build_block, solve
from p2pml.chain.types import Block, BlockHeader, Transaction

MINER = b"\x11" * 32
NOW = REGTEST.genesis_time + 10_000_000

# Retargets every 4 blocks at 600 s spacing: fast timestamps make a branch
# heavier per block, so tests can build heavier-but-shorter chains.
RETARGET_PARAMS = dataclasses.replace(
    REGTEST, name="regtest-retarget", no_retarget=False, retarget_window=4, target_spacing=600
)


class Builder:
    """A reference chain plus a way to make valid blocks on any known parent.

    ``ref`` sees every block first (so it can compute bits and median time for
    any parent); tests feed the same blocks to the chain under test in any order.
    """

    def __init__(self, params: NetworkParams = REGTEST) -> None:
        self.params = params
        self.source = MemoryBlockSource()
        self.ref, up = ChainState.create(params, self.source)
        self.source.apply(up)
        self.blocks: dict[bytes, Block] = {params.genesis_hash: params.genesis}

    @property
    def genesis(self) -> bytes:
        return self.params.genesis_hash

    def entry(self, h: bytes) -> IndexEntry:
        e = self.ref.entry(h)
        assert e is not None
        return e

    def make(
        self,
        parent: bytes,
        *,
        dt: int = 1,
        miner: bytes = MINER,
        extra: bytes = b"",
        reward_delta: int = 0,
        register: bool = True,
        txs: tuple[Transaction, ...] = (),
    ) -> Block:
        """A solved block on ``parent``, ``dt`` seconds after it.

        ``reward_delta`` makes a structurally fine block whose coinbase pays the
        wrong amount: it passes every stateless check and fails at connect.
        """
        p = self.entry(parent)
        fees = sum(miner_fee(self.params, t) for t in txs if hasattr(t, "fee"))
        b = build_block(
            self.params,
            parent,
            p.height + 1,
            self.ref.next_bits(p),
            p.header.time + dt,
            miner,
            txs=txs,
            extra=extra,
            fees=fees + reward_delta,
        )
        b = solve(b)
        if register:
            self._register(b)
        return b

    def _register(self, b: Block) -> None:
        """Teach the reference index the header so children can be built
        (directly: a batch from sync would hold a lighter branch back)."""
        self.blocks[b.hash] = b
        self.ref.accept_header(b.header, NOW, ChainUpdate())

    def chain(self, parent: bytes, n: int, **kw: object) -> list[Block]:
        out = []
        for _ in range(n):
            b = self.make(parent, **kw)  # type: ignore[arg-type]
            out.append(b)
            parent = b.hash
        return out

    def header(self, h: bytes) -> BlockHeader:
        return self.blocks[h].header


class Node:
    """A chain under test with its in-memory store."""

    def __init__(self, params: NetworkParams = REGTEST) -> None:
        self.source = MemoryBlockSource()
        self.chain, up = ChainState.create(params, self.source)
        self.source.apply(up)

    def feed(self, block: Block, now: int = NOW) -> ChainUpdate:
        up = self.chain.accept_block(block, now)
        self.source.apply(up)
        return up

    def feed_all(self, blocks: list[Block], now: int = NOW) -> list[ChainUpdate]:
        return [self.feed(b, now) for b in blocks]

    @property
    def tip(self) -> bytes:
        return self.chain.tip.hash
