"""Building candidate blocks (templates) and solving easy ones in-process.

The miner searches nonces for templates in worker processes; tests and
regtest tools use :func:`solve` directly, which is only reasonable for
minimum-difficulty targets.
"""

from __future__ import annotations

from dataclasses import replace

from p2pml.chain.encoding import tx_id, with_raw
from p2pml.chain.hashing import merkle_root
from p2pml.chain.params import BLOCK_VERSION, NetworkParams
from p2pml.chain.pow import bits_to_target, check_pow
from p2pml.chain.types import Block, BlockHeader, Coinbase, Transaction


def build_block(
    params: NetworkParams,
    prev_hash: bytes,
    height: int,
    bits: int,
    time: int,
    miner: bytes,
    txs: tuple[Transaction, ...] = (),
    fees: int = 0,
    extra: bytes = b"",
    nonce: int = 0,
) -> Block:
    cb = Coinbase(height=height, miner=miner, amount=params.coinbase_reward + fees, extra=extra)
    all_txs = (cb, *txs)
    header = BlockHeader(
        version=BLOCK_VERSION,
        height=height,
        prev_hash=prev_hash,
        tx_root=merkle_root([tx_id(t) for t in all_txs]),
        time=time,
        bits=bits,
        nonce=nonce,
    )
    return Block(header, all_txs)


def with_nonce(block: Block, nonce: int) -> Block:
    return with_raw(Block(replace(block.header, nonce=nonce), block.txs))


def solve(block: Block, max_tries: int = 1 << 24) -> Block:
    """Search nonces in this process until the PoW holds."""
    target = bits_to_target(block.header.bits)
    h = block.header
    for nonce in range(h.nonce, h.nonce + max_tries):
        cand = replace(h, nonce=nonce)
        if check_pow(cand.hash, target):
            return with_raw(Block(cand, block.txs))
    raise RuntimeError("no nonce found; solve() is meant for easy targets")
