#!/usr/bin/env python3
"""Benchmark fetches of CIDs nobody serves (issue 14, attack 5); prints figures only.

Node B (embedded, connected to an honest node A) is asked for N distinct
CIDs nobody has, K at a time (the verifier's fetch slots), while an honest
1 MiB fetch from A runs every second. Printed: how long each bogus fetch held
its slot, the embedded node's restarts and abandoned downloads, the repeat of
one bogus CID (refused from the negative cache), the honest fetch latency,
and the RSS of B's Kubo process before and after (what the abandoned
downloads cost). Everything runs in a temp dir on loopback.

Usage: scripts/bench_unfetchable.py [--cids N] [--slots K] [--start-timeout S]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from p2pml.cidv0 import b58encode  # noqa: E402
from p2pml.config import IpfsSettings  # noqa: E402
from p2pml.errors import FetchTimeout  # noqa: E402
from p2pml.ipfs import embedded_swarm_addrs, open_dataset_store  # noqa: E402
from p2pml.ipfs.embedded import EmbeddedBackend  # noqa: E402


def nobody_has() -> str:
    return b58encode(b"\x12\x20" + hashlib.sha256(secrets.token_bytes(32)).digest())


def rss_mb(pid: int | None) -> float:
    return psutil.Process(pid).memory_info().rss / 1e6 if pid else float("nan")


async def main(n: int, slots: int, start_timeout: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        a = open_dataset_store(IpfsSettings(mode="embedded", timeout=60.0), root / "a")
        await a.start()
        b = open_dataset_store(
            IpfsSettings(
                mode="embedded",
                timeout=60.0,
                fetch_start_timeout=start_timeout,
                peers=tuple(embedded_swarm_addrs(a)),
                cache_max_bytes=1,
            ),
            root / "b",
        )
        await b.start()
        kb = b.backend
        assert isinstance(kb, EmbeddedBackend)
        rss_before = rss_mb(kb.pid)
        held: list[float] = []
        honest: list[float] = []
        sem = asyncio.Semaphore(slots)
        cids = [nobody_has() for _ in range(n)]

        async def bogus(cid: str) -> None:
            async with sem:
                t0 = time.monotonic()
                try:
                    await b.fetch(cid)
                except FetchTimeout:
                    pass
                held.append(time.monotonic() - t0)

        async def honest_loop(stop: asyncio.Event) -> None:
            while not stop.is_set():
                cid = await a.add_bytes(os.urandom(1024**2))
                t0 = time.monotonic()
                await b.fetch(cid)
                honest.append(time.monotonic() - t0)
                await asyncio.sleep(1.0)

        stop = asyncio.Event()
        loop_task = asyncio.create_task(honest_loop(stop))
        t0 = time.monotonic()
        await asyncio.gather(*(bogus(c) for c in cids))
        elapsed = time.monotonic() - t0
        t1 = time.monotonic()
        try:
            await b.fetch(cids[0])
        except FetchTimeout:
            pass
        repeat = time.monotonic() - t1
        stop.set()
        await loop_task
        print(
            f"{n} CIDs nobody has, {slots} at a time, fetch_start_timeout {start_timeout:g}s: "
            f"{elapsed:.1f} s in all; slot held median {statistics.median(held):.2f} s, "
            f"max {max(held):.2f} s"
        )
        print(
            f"embedded node: {kb.spawns - 1} restarts, {kb.kills} kills, "
            f"{kb.abandoned_total} downloads abandoned; Kubo RSS {rss_before:.0f} -> "
            f"{rss_mb(kb.pid):.0f} MB"
        )
        print(f"the same CID again: refused in {repeat * 1000:.1f} ms")
        print(
            f"honest 1 MiB fetches meanwhile: {len(honest)}, "
            f"median {statistics.median(honest):.3f} s, max {max(honest):.3f} s"
        )
        await b.close()
        await a.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cids", type=int, default=24)
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--start-timeout", type=float, default=2.0)
    args = ap.parse_args()
    asyncio.run(main(args.cids, args.slots, args.start_timeout))
