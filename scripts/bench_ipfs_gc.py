#!/usr/bin/env python3
"""Benchmark the embedded IPFS disk cap (issue 14, attack 9); prints figures only.

Node A adds N distinct blobs; node B (``ipfs.storage_max_mb`` = CAP) fetches
them all, as a peer naming ever new CIDs would make it. Printed: B's repo size
at its peak and at the end versus the cap, the collections run and the pause
each cost (calls held off: stop, file work, restart), the fetch rate with the
cap and, for reference, without it (a cap larger than everything fetched).
Everything runs in a temp dir on loopback.

Usage: scripts/bench_ipfs_gc.py [--blobs N] [--blob-mib M] [--cap-mb CAP]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from p2pml.config import IpfsSettings  # noqa: E402
from p2pml.ipfs import embedded_swarm_addrs, open_dataset_store  # noqa: E402
from p2pml.ipfs.embedded import EmbeddedBackend  # noqa: E402
from p2pml.ipfs.repogc import disk_usage  # noqa: E402


async def run(root: Path, cids: list[str], peers: tuple[str, ...], cap_mb: int) -> None:
    store = open_dataset_store(
        IpfsSettings(mode="embedded", peers=peers, storage_max_mb=cap_mb, cache_max_bytes=1),
        root,
    )
    await store.start()
    backend = store.backend
    assert isinstance(backend, EmbeddedBackend)
    peak = 0
    started = time.monotonic()
    fetched = 0
    for cid in cids:
        path = await store.fetch(cid)
        fetched += path.stat().st_size
        peak = max(peak, await asyncio.to_thread(disk_usage, backend.repo_dir))
    elapsed = time.monotonic() - started
    end = await asyncio.to_thread(disk_usage, backend.repo_dir)
    reports = backend.gc_reports
    await store.close()
    print(
        f"cap {cap_mb} MB: fetched {fetched / 1e6:.1f} MB in {elapsed:.2f} s "
        f"({fetched / 1e6 / elapsed:.1f} MB/s); repo peak {peak / 1e6:.1f} MB, "
        f"end {end / 1e6:.1f} MB"
    )
    if reports:  # the backend keeps the last 10
        pauses = [r.pause_seconds for r in reports]
        print(
            f"  collections (last {len(reports)}): pause median {statistics.median(pauses):.2f} s, "
            f"max {max(pauses):.2f} s; file work median "
            f"{statistics.median(r.seconds for r in reports) * 1000:.0f} ms; "
            f"{statistics.mean(r.roots_removed for r in reports):.1f} roots each"
        )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blobs", type=int, default=60)
    ap.add_argument("--blob-mib", type=int, default=1)
    ap.add_argument("--cap-mb", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ipfs-gc-") as tmp:
        base = Path(tmp)
        a = open_dataset_store(IpfsSettings(mode="embedded"), base / "a")
        await a.start()
        try:
            cids = [
                await a.add_bytes(os.urandom(args.blob_mib * 1024**2)) for _ in range(args.blobs)
            ]
            peers = tuple(embedded_swarm_addrs(a))
            total_mb = args.blobs * args.blob_mib * 1.05 * 1.1
            await run(base / "uncapped", cids, peers, int(total_mb) * 2 + 100)
            await run(base / "capped", cids, peers, args.cap_mb)
        finally:
            await a.close()


if __name__ == "__main__":
    asyncio.run(main())
