"""The async miner: hands bounded nonce ranges to worker processes.

Ranges are small (``nonce_range`` hashes, ~40 ms on this hardware), so a new
tip or new transactions make the miner drop its template within about one
range. The event loop only schedules ranges; it never hashes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import secrets
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from p2pml.chain.pow import bits_to_target
from p2pml.chain.template import with_nonce
from p2pml.chain.types import NONCE_OFFSET, Block
from p2pml.mining.worker import search
from p2pml.oslimits import limit_memory

log = logging.getLogger(__name__)

TEMPLATE_MAX_AGE = 10.0  # seconds before the template is rebuilt with a fresh time


@dataclass
class MinerStats:
    hashes: int = 0
    blocks_found: int = 0
    started: float = 0.0
    busy_seconds: float = 0.0

    @property
    def hash_rate(self) -> float:
        return self.hashes / self.busy_seconds if self.busy_seconds else 0.0


class Miner:
    def __init__(
        self,
        template: Callable[[], Block],
        submit: Callable[[Block], Awaitable[None]],
        workers: int = 1,
        nonce_range: int = 50_000,
        memory_mb: int | None = None,
    ) -> None:
        self._template = template
        self.memory_mb = memory_mb  # address-space limit of each worker process
        self._submit = submit
        self.workers = max(1, workers)
        self.nonce_range = nonce_range
        self._pool: ProcessPoolExecutor | None = None
        self._generation = 0
        self._changed = asyncio.Event()
        self._enabled = asyncio.Event()
        self._lock = asyncio.Lock()  # one search at a time: background loop or mine_blocks
        self.stats = MinerStats()

    # -- lifecycle -------------------------------------------------------------

    def start_pool(self) -> None:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=limit_memory,
                initargs=(self.memory_mb,),
            )

    async def close(self) -> None:
        self._enabled.clear()
        self.notify()
        pool, self._pool = self._pool, None
        if pool is not None:
            # Ranges in flight are short; waiting for them keeps no stray process.
            await asyncio.to_thread(pool.shutdown, True, cancel_futures=True)

    @property
    def enabled(self) -> bool:
        return self._enabled.is_set()

    def set_enabled(self, on: bool) -> None:
        if on:
            self.start_pool()
            self._enabled.set()
        else:
            self._enabled.clear()
            self.notify()

    def notify(self) -> None:
        """The tip or the mempool changed: abandon the current template."""
        self._generation += 1
        self._changed.set()

    # -- mining ------------------------------------------------------------------

    async def run(self) -> None:
        """Mine forever while enabled (a supervisor task)."""
        while True:
            await self._enabled.wait()
            async with self._lock:
                block = await self._search(self._template(), stop_when_disabled=True)
            if block is not None:
                await self._submit(block)

    async def mine_blocks(self, n: int) -> list[bytes]:
        """Mine ``n`` blocks now (regtest tooling); returns their hashes."""
        self.start_pool()
        hashes: list[bytes] = []
        async with self._lock:
            while len(hashes) < n:
                block = await self._search(self._template(), stop_when_disabled=False)
                if block is not None:
                    await self._submit(block)
                    hashes.append(block.hash)
        return hashes

    async def _search(self, template: Block, stop_when_disabled: bool) -> Block | None:
        """Search nonces for ``template``; None when it went stale first."""
        self.start_pool()
        assert self._pool is not None
        loop = asyncio.get_running_loop()
        gen = self._generation
        self._changed.clear()
        prefix = template.header.serialize()[:NONCE_OFFSET]
        target = bits_to_target(template.header.bits)
        next_start = secrets.randbits(64)
        built = time.monotonic()
        inflight: set[asyncio.Future[Any]] = set()

        def launch() -> None:
            nonlocal next_start
            assert self._pool is not None
            fut: Future[int | None] = self._pool.submit(
                search, prefix, target, next_start, self.nonce_range
            )
            inflight.add(asyncio.wrap_future(fut, loop=loop))
            next_start = (next_start + self.nonce_range) % (1 << 64)

        try:
            for _ in range(self.workers):
                launch()
            while True:
                t0 = time.monotonic()
                changed: asyncio.Future[Any] = asyncio.ensure_future(self._changed.wait())
                done, _ = await asyncio.wait(
                    [*inflight, changed], return_when=asyncio.FIRST_COMPLETED
                )
                changed.cancel()
                for fut in done:
                    if fut is changed:
                        continue
                    inflight.discard(fut)
                    self.stats.hashes += self.nonce_range
                    nonce = fut.result()
                    if nonce is not None:
                        self.stats.busy_seconds += time.monotonic() - t0
                        self.stats.blocks_found += 1
                        return with_nonce(template, nonce)
                self.stats.busy_seconds += time.monotonic() - t0
                stale = gen != self._generation
                if stop_when_disabled and not self._enabled.is_set():
                    stale = True
                if time.monotonic() - built > TEMPLATE_MAX_AGE:
                    stale = True
                if stale:
                    return None
                while len(inflight) < self.workers:
                    launch()
        finally:
            # Ranges still running finish by themselves within ~one range.
            for fut in inflight:
                with contextlib.suppress(asyncio.CancelledError):
                    fut.cancel()
