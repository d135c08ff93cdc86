#!/usr/bin/env python3
"""Benchmark the IPFS dataset layer; prints figures, changes nothing outside a temp dir.

1. Fetch throughput through ``DatasetStore.fetch`` (download + local CID
   verification + cache commit) versus a bare client read of the same CID from
   the same node, for 5 MB and 100 MB (``--quick``: 1 MB and 10 MB), for both
   backends. Target ratio >= 0.9.
   - sidecar: js-ipfs (scripts/install-jsipfs) holds the data; bare read is
     aioipfs ``core.cat``. Both readers long-lived and warmed up, in
     alternating order; the store's cache entry is dropped between rounds.
     A third reader is a reference for a fetch that checks every byte: the
     same read, with SHA-256 of each leaf on two threads, in memory, and no
     file written and no tree built.
   - embedded: node A holds the data; each measurement uses a fresh node B
     (empty blockstore) that pulls over bitswap on loopback; bare read is
     Kubo's own ``Download`` on B into a file, without verification. The
     two alternate which goes first.
2. Peak RSS while adding a 1 GB file (``--quick``: 200 MB), in a fresh child
   process per backend. Target < 200 MB.

Usage: scripts/bench_ipfs.py [--quick] [--backend sidecar|embedded|both]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import hashlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "scripts"))  # scripts/ is not a package

import aioipfs  # noqa: E402
from benchlib import figure  # noqa: E402

from p2pml.config import IpfsSettings  # noqa: E402
from p2pml.ipfs import CachingDatasetStore, embedded_swarm_addrs, open_dataset_store  # noqa: E402
from p2pml.ipfs.cid import CHUNK_SIZE  # noqa: E402
from p2pml.ipfs.embedded import EmbeddedBackend  # noqa: E402

MB = 1024**2
EMBEDDED_REPEAT = 21  # each round starts fresh Kubo nodes; 9 rounds swung 0.81-0.92
SIDECAR_REPEAT = 24  # 4 x each of the 6 orders of the 3 readers


def make_file(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        left = size
        while left:
            n = min(left, 16 * MB)
            f.write(os.urandom(n))
            left -= n
    return path


def sha256_of(*parts: memoryview) -> bytes:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)  # drops the GIL
    return h.digest()


def fmt(size: int, seconds: float) -> str:
    return f"{size / MB / seconds:8.1f} MB/s"


Row = tuple[str, int, float, float]


async def bench_sidecar(root: Path, sizes: list[int]) -> tuple[list[Row], list[Row]]:
    """Bare ``core.cat`` vs ``store.fetch``, measured the same way.

    Both readers are long-lived and warmed up, as in a running node: the bare
    client keeps its HTTP connection across rounds, so the store does too (a
    fresh store per round paid a new session and connection that the bare read
    did not: 2-3 ms of a 5 MB fetch). The cache entry is dropped after every
    fetch, outside the timing, so each round is a full download, hash and
    commit. The two alternate which goes first, and each figure is the median
    of ``SIDECAR_REPEAT`` rounds: this is a shared 2-core machine, where the
    daemon competes for the same cores.
    """
    from tests.framework.ipfs_daemon import JsIpfsDaemon

    daemon = JsIpfsDaemon(root / "jsipfs")
    daemon.start()
    rows, references = [], []
    hashers = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="bench-hash")
    loop = asyncio.get_running_loop()
    try:
        settings = IpfsSettings(mode="sidecar", api=daemon.api_multiaddr, timeout=600)
        publisher = open_dataset_store(settings, root / "pub")
        await publisher.start()
        store = open_dataset_store(settings, root / "trainer")
        await store.start()
        client = aioipfs.AsyncIPFS(maddr=daemon.api_multiaddr)
        for size in sizes:
            src = make_file(root / f"s{size}", size)
            cid = await publisher.add(src)

            async def bare_read(cid: str = cid, size: int = size) -> float:
                t = time.perf_counter()
                data = await client.core.cat(cid)
                seconds = time.perf_counter() - t
                assert len(data) == size
                return seconds

            async def hash_only(cid: str = cid, size: int = size) -> float:
                t = time.perf_counter()
                leaves: list[asyncio.Future[bytes]] = []
                parts: list[memoryview] = []
                held = received = 0
                async with client.session.post(
                    f"{client.api_url}cat", params={"arg": cid}, read_bufsize=MB
                ) as resp:
                    async for chunk in resp.content.iter_chunked(MB):
                        view, received = memoryview(chunk), received + len(chunk)
                        while view:
                            take = min(CHUNK_SIZE - held, len(view))
                            parts.append(view[:take])
                            view, held = view[take:], held + take
                            if held == CHUNK_SIZE:
                                leaves.append(loop.run_in_executor(hashers, sha256_of, *parts))
                                parts, held = [], 0
                if parts:  # the short last leaf
                    leaves.append(loop.run_in_executor(hashers, sha256_of, *parts))
                await asyncio.gather(*leaves)
                seconds = time.perf_counter() - t
                assert received == size
                return seconds

            async def fetch(cid: str = cid, size: int = size) -> float:
                t = time.perf_counter()
                path = await store.fetch(cid)
                seconds = time.perf_counter() - t
                assert path.stat().st_size == size
                store.cache.discard(cid)
                return seconds

            readers = [bare_read, fetch, hash_only]
            times: dict[object, list[float]] = {r: [] for r in readers}
            for reader in readers:  # warm-up, not counted
                await reader()
            orders = list(itertools.permutations(readers))  # each follows each equally often
            for i in range(SIDECAR_REPEAT):
                for reader in orders[i % len(orders)]:
                    times[reader].append(await reader())
            bare = statistics.median(times[bare_read])
            rows.append(("sidecar", size, bare, statistics.median(times[fetch])))
            references.append(("sidecar", size, bare, statistics.median(times[hash_only])))
            src.unlink()
        await client.close()
        await store.close()
        await publisher.close()
    finally:
        hashers.shutdown()
        daemon.stop()
    return rows, references


async def bench_embedded(root: Path, sizes: list[int]) -> list[tuple[str, int, float, float]]:
    settings = IpfsSettings(mode="embedded", timeout=600)
    a = open_dataset_store(settings, root / "a")
    await a.start()
    peers = tuple(embedded_swarm_addrs(a))
    rows = []
    n = 0
    try:
        for size in sizes:
            src = make_file(root / f"e{size}", size)
            cid = await a.add(src)

            async def bare_round(n: int, cid: str = cid, size: int = size) -> float:
                # Kubo's Download on a fresh node, no verification, no cache
                b = EmbeddedBackend(root / f"bare{n}", ("/ip4/127.0.0.1/tcp/0",), peers)
                await b.start()
                dest = root / f"bare{n}.out"
                t = time.perf_counter()
                await b._call("download", {"cid": cid, "dest": str(dest)})
                seconds = time.perf_counter() - t
                assert dest.stat().st_size == size
                await b.close()
                dest.unlink()
                return seconds

            async def fetch_round(n: int, cid: str = cid) -> float:
                store = open_dataset_store(
                    IpfsSettings(mode="embedded", timeout=600, peers=peers), root / f"t{n}"
                )
                await store.start()
                t = time.perf_counter()
                await store.fetch(cid)
                seconds = time.perf_counter() - t
                await store.close()
                return seconds

            bare, ours = [], []
            for i in range(EMBEDDED_REPEAT):  # alternate which goes first
                n += 1
                if i % 2:
                    ours.append(await fetch_round(n))
                    bare.append(await bare_round(n))
                else:
                    bare.append(await bare_round(n))
                    ours.append(await fetch_round(n))
            rows.append(("embedded", size, statistics.median(bare), statistics.median(ours)))
            src.unlink()
    finally:
        await a.close()
    return rows


async def _add_child(mode: str, api: str, path: Path, data_dir: Path) -> None:
    store: CachingDatasetStore = open_dataset_store(
        IpfsSettings(mode=mode, api=api, timeout=600), data_dir
    )
    await store.start()
    t = time.perf_counter()
    cid = await store.add(path)
    seconds = time.perf_counter() - t
    # VmHWM is the peak RSS of this process image. (ru_maxrss is not: Linux
    # carries it over from the forking parent across exec.)
    self_kb = _vm_hwm_kb("self")
    kubo_kb = 0
    if isinstance(store.backend, EmbeddedBackend) and store.backend.pid is not None:
        kubo_kb = _vm_hwm_kb(str(store.backend.pid))
    await store.close()
    print(json.dumps({"cid": cid, "seconds": seconds, "self_kb": self_kb, "kubo_kb": kubo_kb}))


def _vm_hwm_kb(pid: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc status")


def measure_add_rss(mode: str, api: str, path: Path, data_dir: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--add-child", mode, api, str(path), str(data_dir)],
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def rss_bench(root: Path, size: int, backends: list[str]) -> list[str]:
    from tests.framework.ipfs_daemon import JsIpfsDaemon

    big = make_file(root / "big.bin", size)
    lines = []
    try:
        for mode in backends:
            daemon = None
            api = IpfsSettings().api
            if mode == "sidecar":
                daemon = JsIpfsDaemon(root / "rss-jsipfs")
                daemon.start()
                api = daemon.api_multiaddr
            try:
                r = measure_add_rss(mode, api, big, root / f"rss-{mode}")
            finally:
                if daemon is not None:
                    daemon.stop()
            extra = (
                f", embedded Kubo child peak RSS {r['kubo_kb'] / 1024:.0f} MB"
                if mode == "embedded"
                else ""
            )
            figure(
                f"ipfs {mode}: python peak RSS adding {size / MB:.0f} MB",
                f"{r['self_kb'] / 1024:.0f} MB",
                "< 200 MB",
                f"add took {r['seconds']:.1f} s",
                show=False,
            )
            if mode == "embedded":
                figure(
                    f"ipfs {mode}: Kubo child peak RSS adding {size / MB:.0f} MB",
                    f"{r['kubo_kb'] / 1024:.0f} MB",
                    "",
                    "separate process, not in the target",
                    show=False,
                )
            lines.append(
                f"{mode:9s} add {size / MB:.0f} MB: {r['seconds']:.1f} s, "
                f"python process peak RSS {r['self_kb'] / 1024:.0f} MB{extra}"
            )
    finally:
        big.unlink(missing_ok=True)
    return lines


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--add-child":
        mode, api, path, data_dir = sys.argv[2:6]
        asyncio.run(_add_child(mode, api, Path(path), Path(data_dir)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1/10 MB fetches, 200 MB add")
    parser.add_argument("--backend", choices=["sidecar", "embedded", "both"], default="both")
    args = parser.parse_args()
    sizes = [1 * MB, 10 * MB] if args.quick else [5 * MB, 100 * MB]
    add_size = 200 * MB if args.quick else 1024 * MB
    backends = ["sidecar", "embedded"] if args.backend == "both" else [args.backend]

    with tempfile.TemporaryDirectory(prefix="p2pml-bench-") as tmp:
        root = Path(tmp)
        rows: list[Row] = []
        references: list[Row] = []
        if "sidecar" in backends:
            rows, references = asyncio.run(bench_sidecar(root / "sidecar", sizes))
        if "embedded" in backends:
            rows += asyncio.run(bench_embedded(root / "embedded", sizes))
        print(
            f"fetch throughput (median of {SIDECAR_REPEAT} sidecar, "
            f"{EMBEDDED_REPEAT} embedded rounds); ratio = bare time / fetch time"
        )
        print(f"{'backend':9s} {'size':>7s} {'bare read':>13s} {'store.fetch':>13s} {'ratio':>6s}")
        for backend, size, bare, ours in rows:
            print(
                f"{backend:9s} {size / MB:5.0f}MB {fmt(size, bare)} {fmt(size, ours)} "
                f"{bare / ours:6.2f}"
            )
            figure(
                f"ipfs {backend}: fetch {size / MB:.0f} MB, bare/fetch time",
                f"{bare / ours:.2f}x",
                ">= 0.9",
                f"bare read {size / MB / bare:.1f} MB/s, store.fetch {size / MB / ours:.1f} MB/s",
                show=False,
            )
        if references:
            print(
                "\nhash-only reference (the same read + SHA-256 of each leaf on two threads,"
                "\nin memory: no file, no tree); ratio = bare time / its time"
            )
        for backend, size, bare, hashed in references:
            print(
                f"{backend:9s} {size / MB:5.0f}MB {fmt(size, bare)} {fmt(size, hashed)} "
                f"{bare / hashed:6.2f}"
            )
            figure(
                f"ipfs {backend}: fetch {size / MB:.0f} MB, hash-only reference",
                f"{bare / hashed:.2f}x",
                "",
                "read + SHA-256 of every leaf, nothing written",
                show=False,
            )
        print()
        for line in rss_bench(root, add_size, backends):
            print(line)


if __name__ == "__main__":
    main()
