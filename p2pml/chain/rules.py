"""Block and header validity rules, each failure a stable reason string.

Stateless rules need only the object and the network parameters; contextual
rules also need facts about the parent that :class:`ChainState` computes.
"""

from __future__ import annotations

from p2pml.chain.encoding import encode_block, tx_id
from p2pml.chain.hashing import merkle_root
from p2pml.chain.params import BLOCK_VERSION, NetworkParams
from p2pml.chain.pow import bits_to_target, check_pow
from p2pml.chain.txrules import handler_for
from p2pml.chain.types import Allocation, Block, BlockHeader, Coinbase
from p2pml.errors import ValidationError


def check_header(header: BlockHeader, params: NetworkParams) -> None:
    """Proof of work and a sane target: cheap, done before anything is stored."""
    if header.version != BLOCK_VERSION:
        raise ValidationError("bad-version", f"version {header.version}")
    target = bits_to_target(header.bits)
    if target > params.pow_limit:
        raise ValidationError("bad-bits", "target above the pow limit")
    if not check_pow(header.hash, target):
        raise ValidationError("bad-pow", "hash above target")


def check_header_context(
    header: BlockHeader,
    parent_height: int,
    expected_bits: int,
    median_time_past: int,
    now: int,
    params: NetworkParams,
) -> None:
    if header.height != parent_height + 1:
        raise ValidationError("bad-height", f"height {header.height} after {parent_height}")
    if header.bits != expected_bits:
        raise ValidationError("bad-bits", f"bits {header.bits:#x}, expected {expected_bits:#x}")
    if header.time <= median_time_past:
        raise ValidationError("time-too-old", f"time {header.time} <= median {median_time_past}")
    if header.time > now + params.max_future_seconds:
        raise ValidationError(
            "time-too-new", f"time {header.time} > now {now} + {params.max_future_seconds}"
        )


def check_timewarp(header: BlockHeader, parent_time: int, params: NetworkParams) -> None:
    """BIP-94: the first block of a retarget window may not be timestamped
    more than ``params.timewarp_seconds`` before its parent (the last block
    of the previous window).

    A window's timespan runs from its own first block to its own last, so
    the step between windows is counted by neither: without this rule, a
    majority miner stamps each window's last block late and the next
    window's first block back at the median time past, and every window
    looks slow, driving difficulty down while blocks come ever faster.
    """
    if params.no_retarget or header.height % params.retarget_window != 0:
        return
    floor = parent_time - params.timewarp_seconds
    if header.time < floor:
        raise ValidationError(
            "time-timewarp-attack",
            f"window's first block at {header.time} < parent {parent_time} "
            f"- {params.timewarp_seconds}",
        )


def work_threshold(tip_work: int, params: NetworkParams) -> int:
    """Least cumulative work a branch needs before we store any of it."""
    return max(params.min_chain_work, tip_work)


def check_branch_work(branch_work: int, tip_work: int, params: NetworkParams) -> None:
    """A branch that would stay lighter than our chain (or than the network's
    minimum chain work) is not worth storing, nor checking further: its
    signatures cost far more to check than its header cost to mine."""
    threshold = work_threshold(tip_work, params)
    if branch_work < threshold:
        raise ValidationError("low-work", f"branch work {branch_work} < {threshold}")


def check_tx_root(block: Block) -> list[bytes]:
    """The body matches the header's commitment; returns the tx ids.

    A mismatch means this body is not the block the header names (maybe
    mangled in transit), so the header itself must not be marked invalid.
    """
    ids = [tx_id(tx) for tx in block.txs]
    if merkle_root(ids) != block.header.tx_root:
        raise ValidationError("bad-tx-root", "transactions do not match the header")
    return ids


def check_block_body(block: Block, ids: list[bytes], params: NetworkParams) -> None:
    """Stateless body rules for a block whose tx root already matched."""
    size = len(encode_block(block))
    if size > params.max_block_bytes:
        raise ValidationError("block-too-large", f"{size} bytes > {params.max_block_bytes}")
    if not block.txs:
        raise ValidationError("bad-coinbase", "no transactions")
    if len(block.txs) > params.max_block_txs:
        raise ValidationError("bad-tx-count", f"{len(block.txs)} > {params.max_block_txs}")
    if len(set(ids)) != len(ids):
        raise ValidationError("duplicate-tx", "a transaction appears twice")
    cb = block.txs[0]
    if not isinstance(cb, Coinbase):
        raise ValidationError("bad-coinbase", "first transaction is not a coinbase")
    if any(isinstance(tx, Coinbase) for tx in block.txs[1:]):
        raise ValidationError("bad-coinbase", "more than one coinbase")
    if cb.height != block.header.height:
        raise ValidationError("bad-coinbase", "coinbase height differs from block height")
    if block.header.height > 0 and any(isinstance(tx, Allocation) for tx in block.txs):
        raise ValidationError("bad-allocation", "allocations exist only in genesis")
    for tx in block.txs:
        handler_for(tx).check(tx, params)


def median_time(times: list[int]) -> int:
    s = sorted(times)
    return s[len(s) // 2]
