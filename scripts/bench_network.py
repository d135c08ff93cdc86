#!/usr/bin/env python3
"""Network benchmark on loopback: block propagation and sync speed.

* propagation: 8 node processes in a line and in a random mesh (each node
  dials up to 3 random earlier ones); a node mines a block and we time until
  all 8 have it as their tip (p50/p99 over the blocks). Target: mesh p99 <= 250 ms.
* sync: a fresh process downloads a 10,000-block regtest chain from one
  peer (headers first, then bodies). Target: >= 1,000 blocks/s.

Usage: python scripts/bench_network.py [--quick] [--seed N]
Every process listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/ is not a package

from benchlib import figure

ROOT = Path(__file__).resolve().parents[1]
NODE = ROOT / "tests" / "integration" / "net" / "net_node_proc.py"


class Proc:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.backlog: list[dict[str, Any]] = []

    @classmethod
    async def spawn(cls, *args: str) -> Proc:
        p = await asyncio.create_subprocess_exec(
            sys.executable,
            str(NODE),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(p)

    async def next(self, event: str, timeout: float = 60.0, **match: Any) -> dict[str, Any]:
        def ok(e: dict[str, Any]) -> bool:
            return e["event"] == event and all(e.get(k) == v for k, v in match.items())

        for e in self.backlog:
            if ok(e):
                self.backlog.remove(e)
                return e
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"node exited while waiting for {event}")
                e = json.loads(line)
                if ok(e):
                    return e
                if e["event"] != "tip":  # tips of other blocks are not needed later
                    self.backlog.append(e)

    async def send(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd.encode() + b"\n")
        await self.proc.stdin.drain()

    async def close(self) -> None:
        if self.proc.returncode is not None:
            return
        try:
            await self.send("quit")
            await asyncio.wait_for(self.proc.wait(), 10)
        except Exception:
            self.proc.kill()
            await self.proc.wait()


async def start_topology(n: int, edges: list[tuple[int, int]]) -> list[Proc]:
    """Start node i after its dial targets (edges (i, j) with j < i)."""
    procs: list[Proc] = []
    addrs: list[str] = []
    for i in range(n):
        boot = [a for (x, j) in edges if x == i for a in ("--bootstrap", addrs[j])]
        p = await Proc.spawn(*boot)
        procs.append(p)
        addrs.append((await p.next("ready"))["addrs"][0])
    degree = [sum(1 for e in edges if i in e) for i in range(n)]
    deadline = time.monotonic() + 30
    for p, d in zip(procs, degree, strict=True):
        while True:
            await p.send("peers")
            e = await p.next("peers")
            if e["n"] >= d and e["gossip"] >= d:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("topology did not form")
            await asyncio.sleep(0.05)
    await asyncio.sleep(1.5)  # let gossipsub heartbeats build the meshes (not a sync point)
    return procs


async def propagation(
    name: str,
    n: int,
    edges: list[tuple[int, int]],
    blocks: int,
    rng: random.Random,
    miner_fixed: int | None,
    target: str = "",
) -> list[float]:
    procs = await start_topology(n, edges)
    lat: list[float] = []
    try:
        for _ in range(blocks):
            m = miner_fixed if miner_fixed is not None else rng.randrange(n)
            await procs[m].send("mine")
            mined = await procs[m].next("mined")
            times = []
            for i, p in enumerate(procs):
                if i == m:
                    continue
                e = await p.next("tip", hash=mined["hash"], timeout=30)
                times.append(e["t"])
            lat.append((max(times) - mined["t"]) * 1000)
    finally:
        await asyncio.gather(*(p.close() for p in procs))
    report(name, lat, target)
    return lat


def report(name: str, lat: list[float], target: str) -> None:
    lat = sorted(lat)
    p50 = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))]
    print(
        f"{name:<28} blocks={len(lat):>3}  p50={p50:7.1f} ms  p99={p99:7.1f} ms"
        f"  max={lat[-1]:7.1f} ms"
    )
    base = f"{len(lat)} blocks, time until all peers have it as tip"
    figure(f"propagation {name}: p50", f"{p50:.1f} ms", "", base, show=False)
    figure(f"propagation {name}: p99", f"{p99:.1f} ms", target, base, show=False)


async def sync_speed(height: int) -> float:
    a = await Proc.spawn("--chain", str(height), "--report-from", str(height))
    try:
        ra = await a.next("ready", timeout=120)
        t0 = time.time()
        b = await Proc.spawn("--bootstrap", ra["addrs"][0], "--report-from", str(height))
        try:
            rb = await b.next("ready")
            done = await b.next("tip", height=height, timeout=300)
        finally:
            await b.close()
    finally:
        await a.close()
    total = done["t"] - t0
    after_ready = done["t"] - float(rb["t"])
    rate = height / after_ready
    print(
        f"sync {height} blocks            {after_ready:6.2f} s after start "
        f"({total:.2f} s incl. process start)  = {rate:,.0f} blocks/s"
    )
    figure(
        f"sync {height:,} blocks from one peer (blocks/s)",
        f"{rate:,.0f}",
        ">= 1,000",
        f"{after_ready:.2f} s after the process is ready",
        show=False,
    )
    return rate


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer blocks, smaller chain")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--nodes", type=int, default=8)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    n = args.nodes
    blocks = 10 if args.quick else 40
    line = [(i, i - 1) for i in range(1, n)]
    mesh: list[tuple[int, int]] = []
    for i in range(1, n):
        for j in rng.sample(range(i), min(i, 3)):
            mesh.append((i, j))
    print(f"{n} node processes on 127.0.0.1; mesh edges: {len(mesh)}")
    await propagation(f"line of {n} (mined at end)", n, line, blocks, rng, miner_fixed=0)
    await propagation(
        f"random mesh of {n}", n, mesh, blocks, rng, miner_fixed=None, target="<= 250 ms"
    )
    await sync_speed(2_000 if args.quick else 10_000)


if __name__ == "__main__":
    asyncio.run(main())
