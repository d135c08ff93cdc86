"""Three node processes in a line A-B-C (C only knows B): A's block reaches C."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.framework.waiting import TIMEOUT_FACTOR

pytestmark = pytest.mark.timeout(90)

SCRIPT = Path(__file__).with_name("net_node_proc.py")


class Proc:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def spawn(cls, *args: str) -> Proc:
        p = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SCRIPT),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(p)

    async def next(self, event: str, timeout: float = 20.0, **match: Any) -> dict[str, Any]:
        for e in self.events:
            if e["event"] == event and all(e.get(k) == v for k, v in match.items()):
                self.events.remove(e)
                return e
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout * TIMEOUT_FACTOR):
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise AssertionError(f"process exited waiting for {event}")
                e = json.loads(line)
                if e["event"] == event and all(e.get(k) == v for k, v in match.items()):
                    return e
                self.events.append(e)

    async def send(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd.encode() + b"\n")
        await self.proc.stdin.drain()

    async def close(self) -> None:
        if self.proc.returncode is None:
            try:
                await self.send("quit")
                await self.next("stopped", timeout=10)
                await asyncio.wait_for(self.proc.wait(), 10)
            except Exception:
                self.proc.kill()
                await self.proc.wait()


async def wait_peers(p: Proc, n: int) -> None:
    async with asyncio.timeout(20 * TIMEOUT_FACTOR):
        while True:
            await p.send("peers")
            e = await p.next("peers")
            if e["n"] >= n and e["gossip"] >= n:
                return
            await asyncio.sleep(0.05)


async def test_block_crosses_three_processes_in_a_line() -> None:
    procs: list[Proc] = []
    try:
        a = await Proc.spawn("--chain", "5")
        procs.append(a)
        ra = await a.next("ready")
        b = await Proc.spawn("--bootstrap", ra["addrs"][0])
        procs.append(b)
        rb = await b.next("ready")
        c = await Proc.spawn("--bootstrap", rb["addrs"][0])
        procs.append(c)
        await c.next("ready")
        await c.next("tip", height=5, timeout=30)  # synced A's chain through B
        await wait_peers(b, 2)
        await wait_peers(c, 1)
        await a.send("mine")
        mined = await a.next("mined")
        got = await c.next("tip", hash=mined["hash"])
        assert got["height"] == 6
    finally:
        for p in procs:
            await p.close()
    assert all(p.proc.returncode == 0 for p in procs)
