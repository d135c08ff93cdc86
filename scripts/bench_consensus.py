#!/usr/bin/env python3
"""Consensus benchmarks: miner hash rate, connect cost vs height, blocks/s.

Prints one line per figure: name, value, target, baseline. ``--quick`` uses a
10,000-block chain instead of 100,000.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/ is not a package

from benchlib import figure

from p2pml.chain.encoding import decode_block, encode_block
from p2pml.chain.index import MemoryBlockSource
from p2pml.chain.params import REGTEST
from p2pml.chain.pow import target_to_bits
from p2pml.chain.state import ChainState
from p2pml.chain.template import build_block, solve
from p2pml.chain.types import Block
from p2pml.mining.miner import Miner
from p2pml.mining.worker import bare_double_sha256, search
from p2pml.store import BlockStore

NOW = REGTEST.genesis_time + 10**9


def bench_hash_loop(n: int) -> None:
    header = bytes(range(92))
    t = time.perf_counter()
    search(header[:84], 0, 0, n)
    ours = n / (time.perf_counter() - t)
    t = time.perf_counter()
    bare_double_sha256(header, n)
    bare = n / (time.perf_counter() - t)
    figure(
        "miner hash rate per worker (H/s)", f"{ours:,.0f}", ">= 0.9x", f"bare hashlib {bare:,.0f}"
    )
    figure("  ratio to bare double-SHA-256", f"{ours / bare:.2f}x", ">= 0.9", "same header")


async def pool_rate(workers: int, seconds: float) -> float:
    block = build_block(REGTEST, REGTEST.genesis_hash, 1, target_to_bits(1), NOW, b"\x01" * 32)

    async def never(_b: Block) -> None:
        raise AssertionError("target 1 cannot be met")

    miner = Miner(lambda: block, never, workers=workers, nonce_range=50_000)
    miner.start_pool()
    await miner.mine_blocks(0)  # warm the pool up
    search_task = asyncio.ensure_future(miner._search(block, stop_when_disabled=False))
    await asyncio.sleep(0.5)  # let every worker start hashing before measuring
    h0, t0 = miner.stats.hashes, time.perf_counter()
    await asyncio.sleep(seconds)
    rate = (miner.stats.hashes - h0) / (time.perf_counter() - t0)
    miner.notify()
    await search_task
    await miner.close()
    return rate


def bench_pool(seconds: float) -> None:
    one = asyncio.run(pool_rate(1, seconds))
    two = asyncio.run(pool_rate(2, seconds))
    figure("miner pool, 1 worker (H/s)", f"{one:,.0f}", "", "")
    figure("miner pool, 2 workers (H/s)", f"{two:,.0f}", ">= 1.7x", f"1 worker {one:,.0f}")
    # Under heavy load a worker may not hash at all within the window.
    speedup = f"{two / one:.2f}x" if one else "n/a (1 worker: no hashes)"
    figure("  2-worker speed-up", speedup, ">= 1.7", f"{os.cpu_count()} cores")


def make_chain(n: int) -> list[bytes]:
    src = MemoryBlockSource()
    cs, up = ChainState.create(REGTEST, src)
    src.apply(up)
    raws = []
    for i in range(n):
        tip = cs.tip
        b = solve(
            build_block(
                REGTEST,
                tip.hash,
                tip.height + 1,
                REGTEST.pow_limit_bits,
                tip.header.time + 1,
                bytes([1 + i % 7]) * 32,
            )
        )
        u = cs.accept_block(b, NOW)
        src.apply(u)
        raws.append(encode_block(b))
    return raws


def bench_connect(raws: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as d:
        store = BlockStore.open(Path(d) / "chain.sqlite", REGTEST)
        chain = store.load_chain()
        per_block: list[float] = []
        t_all = time.perf_counter()
        for raw in raws:
            t = time.perf_counter()
            u = chain.accept_block(decode_block(raw), NOW)
            store.apply(u, chain.tip.hash)
            per_block.append(time.perf_counter() - t)
        total = time.perf_counter() - t_all
        store.close()
    n = len(raws)
    rate = n / total
    figure("blocks validated+stored per s (regtest)", f"{rate:,.0f}", ">= 2,000", "")

    def window(h: int) -> float:
        lo, hi = max(0, h - 500), min(n, h + 500)
        xs = sorted(per_block[lo:hi])
        return xs[len(xs) // 2]

    early, late = window(1_000), window(n - 500)
    figure(
        f"connect cost at height {n - 500:,} (median)",
        f"{late * 1e6:.0f} us",
        "<= 1.2x",
        f"height 1,000: {early * 1e6:.0f} us",
    )
    figure("  ratio late/early", f"{late / early:.2f}x", "<= 1.2", "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    print("== consensus ==")
    bench_hash_loop(200_000 if args.quick else 1_000_000)
    bench_pool(1.0 if args.quick else 3.0)
    n = 10_000 if args.quick else 100_000
    t = time.perf_counter()
    raws = make_chain(n)
    print(f"(built a {n:,}-block regtest chain in {time.perf_counter() - t:.1f}s)")
    bench_connect(raws)


if __name__ == "__main__":
    main()
