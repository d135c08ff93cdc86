"""A minimal p2pml network node in its own process (tests and the benchmark).

Reads commands on stdin, writes JSON events on stdout, one per line::

    -> {"event": "ready", "peer_id": ..., "addrs": [...]}
    <- mine                -> {"event": "mined", "hash": ..., "height": n, "t": unix}
    <- peers               -> {"event": "peers", "n": k}
    <- connect <multiaddr> -> {"event": "connected", "peer_id": ...} | {"event": "error", ...}
    <- quit                -> {"event": "stopped"}
    every new tip          -> {"event": "tip", "hash": ..., "height": n, "t": unix}

``--chain N`` preloads a deterministic N-block regtest chain. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from p2pml.chain.params import REGTEST
from p2pml.chain.template import build_block, solve
from p2pml.chain.types import Block
from p2pml.config import P2PSettings
from p2pml.crypto import Identity
from p2pml.net import BlockOutcome, P2PService
from p2pml.net.memory_backend import MemoryChainBackend


def emit(**event: object) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class ReportingBackend(MemoryChainBackend):
    def __init__(self, quiet_below: int = 0) -> None:
        super().__init__(REGTEST)
        self.quiet_below = quiet_below

    async def submit_block(
        self, block: Block, from_peer: str | None, requested: bool = True
    ) -> BlockOutcome:
        out = await super().submit_block(block, from_peer, requested)
        if out.tip_changed:
            tip = self.chain.tip
            if tip.height >= self.quiet_below:
                emit(event="tip", hash=tip.hash.hex(), height=tip.height, t=time.time())
        return out


def next_block(be: MemoryChainBackend, tag: bytes) -> Block:
    tip = be.chain.tip
    t = max(tip.header.time + 1, int(time.time()) - 3600)
    return solve(
        build_block(
            REGTEST, tip.hash, tip.height + 1, REGTEST.pow_limit_bits, t, tag.ljust(32, b"\0")
        )
    )


def preload(be: MemoryChainBackend, n: int) -> None:
    tip = be.chain.tip
    prev, t = tip.hash, tip.header.time
    for h in range(1, n + 1):
        b = solve(build_block(REGTEST, prev, h, REGTEST.pow_limit_bits, t + h, b"\x01" * 32))
        up = be.chain.accept_block(b, int(time.time()))
        be.source.apply(up)
        assert up.error is None, up.error
        prev = b.hash


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", default="")
    ap.add_argument("--listen", default="/ip4/127.0.0.1/tcp/0")
    ap.add_argument("--bootstrap", action="append", default=[])
    ap.add_argument("--chain", type=int, default=0)
    ap.add_argument("--report-from", type=int, default=0)
    args = ap.parse_args()
    ident = Identity(bytes.fromhex(args.seed)) if args.seed else Identity.generate()
    be = ReportingBackend(quiet_below=args.report_from)
    preload(be, args.chain)
    svc = P2PService(
        ident,
        REGTEST,
        P2PSettings(listen=(args.listen,), bootstrap=tuple(args.bootstrap), max_peers=16),
    )
    await svc.start(be)
    emit(
        event="ready",
        peer_id=svc.peer_id,
        addrs=svc.listen_addrs(),
        height=be.chain.height,
        t=time.time(),
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while True:
            line = (await reader.readline()).decode().strip()
            if not line or line == "quit":
                break
            cmd, _, arg = line.partition(" ")
            if cmd == "mine":
                b = next_block(be, ident.public_key[:8])
                t = time.time()
                await be.submit_block(b, None)
                await svc.publish_block(b)
                emit(event="mined", hash=b.hash.hex(), height=b.height, t=t)
            elif cmd == "peers":
                emit(event="peers", n=len(svc.peers()), gossip=svc.gossip_peers("blocks"))
            elif cmd == "connect":
                try:
                    emit(event="connected", peer_id=await svc.connect(arg))
                except Exception as exc:
                    emit(event="error", error=str(exc))
            else:
                emit(event="error", error=f"unknown command {cmd!r}")
    finally:
        await svc.stop()
        emit(event="stopped")


if __name__ == "__main__":
    asyncio.run(main())
