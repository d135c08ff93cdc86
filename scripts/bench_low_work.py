#!/usr/bin/env python3
"""Low-work traffic (issue 14, attack 6): what a block or header on a lighter
branch costs a node, in the order the blocks topic now checks it.

* a 0.9 MB block of 2,800 signed tasks (the most that fit) forked at genesis: the stateless
  checks the libp2p thread used to run on it (PoW, tx root, every signature)
  vs what it does now before dropping it (peek the header, PoW, "is its branch lighter?");
* memory per header held back in a sync session's pre-sync (and so the bound
  of ``PRESYNC_MAX_HEADERS``).

``--quick`` uses fewer repetitions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/ is not a package

from benchlib import figure

from p2pml.chain import rules
from p2pml.chain.encoding import (
    decode_block,
    decode_header,
    encode_block,
    peek_block_header,
)
from p2pml.chain.params import REGTEST, dev_identity
from p2pml.chain.presync import PRESYNC_MAX_HEADERS
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.template import build_block, solve
from p2pml.chain.types import Block, TaskTx
from p2pml.ipfs.cid import cid_of_bytes
from p2pml.net.memory_backend import MemoryChainBackend

SPEC = TaskSpec(
    dataset_cid=cid_of_bytes(b"dataset"),
    target="y",
    model="ridge",
    kind="regression",
    metric="r2",
    rounds=2,
)


def chain(prev: bytes, n: int, miner: bytes, t0: int) -> list[Block]:
    out: list[Block] = []
    for h in range(1, n + 1):
        b = solve(build_block(REGTEST, prev, h, REGTEST.pow_limit_bits, t0 + h, miner, extra=b""))
        out.append(b)
        prev = b.hash
    return out


def fat_block(n_tx: int) -> Block:
    pub = dev_identity(0)
    txs = tuple(
        TaskTx(
            spec=SPEC,
            bounty=1000,
            fee=1000,
            deadline=5,
            result_reward=0,
            max_results=10,
            publisher=pub.public_key,
            nonce=i,
        ).signed_by(pub, REGTEST.genesis_hash)
        for i in range(n_tx)
    )
    fees = sum(t.fee for t in txs)
    return solve(
        build_block(
            REGTEST,
            REGTEST.genesis_hash,
            1,
            REGTEST.pow_limit_bits,
            REGTEST.genesis_time + 1,
            b"\x66" * 32,
            txs=txs,
            fees=fees,
        )
    )


def median_ms(fn: object, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    reps = 3 if args.quick else 7
    be = MemoryChainBackend(REGTEST)
    for b in chain(REGTEST.genesis_hash, 3, b"\x11" * 32, REGTEST.genesis_time):
        be.source.apply(be.chain.accept_block(b, REGTEST.genesis_time + 10**6))
    block = decode_block(encode_block(fat_block(2_800)), REGTEST.max_block_bytes)
    size = len(encode_block(block))
    raw = encode_block(block)

    def old_order() -> None:  # what the validator ran before: decode, every stateless rule
        block = decode_block(raw, REGTEST.max_block_bytes)
        rules.check_header(block.header, REGTEST)
        ids = rules.check_tx_root(block)
        rules.check_block_body(block, ids, REGTEST)

    def new_order() -> None:  # what it runs now before dropping a low-work block
        header = peek_block_header(raw)  # no decode of the transactions
        rules.check_header(header, REGTEST)
        assert be.low_work(header)

    decode = median_ms(lambda: decode_block(raw, REGTEST.max_block_bytes), reps)
    old = median_ms(old_order, reps)
    new = median_ms(new_order, reps * 20)
    label = f"{size / 1e6:.2f} MB, {len(block.txs) - 1:,} signed txs"
    figure(f"low-work block ({label}): checks before drop, old order", f"{old:.1f} ms", "", "")
    figure(
        f"low-work block ({label}): checks before drop, new order",
        f"{new * 1000:.0f} us",
        "<= 1000 us",
        f"old {old:.1f} ms",
    )
    figure("  of which decoding it (no longer paid)", f"{decode:.1f} ms", "", "")

    # Memory per held pre-sync header: 2,000 lighter headers in one session.
    ours = chain(REGTEST.genesis_hash, 2_010, b"\x11" * 32, REGTEST.genesis_time)
    lighter = chain(REGTEST.genesis_hash, 2_000, b"\x66" * 32, REGTEST.genesis_time + 5)
    be2 = MemoryChainBackend(REGTEST)
    for b in ours:
        be2.source.apply(be2.chain.accept_block(b, REGTEST.genesis_time + 10**6))
    wire = [b.header.serialize() for b in lighter]
    del lighter
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    t = time.perf_counter()
    headers = [decode_header(r) for r in wire]  # as sync gets them: held with their entries
    up = be2.chain.accept_headers(headers, REGTEST.genesis_time + 10**6, session="bench")
    del headers
    took = time.perf_counter() - t
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert up.headers_held == 2_000 and not up.new_entries
    per = held / 2_000
    figure("pre-sync: memory per held header", f"{per:.0f} B", "", "")
    figure(
        f"pre-sync: bound at PRESYNC_MAX_HEADERS={PRESYNC_MAX_HEADERS:,}",
        f"{per * PRESYNC_MAX_HEADERS / 1e6:.1f} MB",
        "<= 32 MB",
        "",
    )
    figure(
        "pre-sync: decoding and checking a 2,000-header lighter batch",
        f"{took * 1000:.0f} ms",
        "",
        "",
    )


if __name__ == "__main__":
    main()
