"""CachingDatasetStore over a fake backend: verification, retries, state, limits.

The backend fake is in-memory and the store's sleep is injected, so the
retry/backoff logic is exercised deterministically without waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from p2pml.errors import (
    CIDMismatch,
    DaemonUnavailable,
    DatasetError,
    DatasetTooLarge,
    FetchTimeout,
    NoProvider,
)
from p2pml.ipfs import add_dataset
from p2pml.ipfs.cache import DatasetCache
from p2pml.ipfs.caching import CachingDatasetStore
from p2pml.ipfs.cid import cid_of_bytes, cid_of_file
from tests.framework.waiting import scaled, wait_until

UNREACHABLE = "fake unreachable at /ip4/127.0.0.1/tcp/1"


class FakeBackend:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.lie: dict[str, bytes] = {}  # cid -> wrong bytes to serve
        self.up = True
        self.fetches = 0
        self.hang = False
        self.no_provider = False
        self.gate: asyncio.Event | None = None  # set: no_provider waits for it
        self.start_deadlines: list[float | None] = []

    @property
    def unreachable_state(self) -> str:
        return UNREACHABLE

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def _check(self) -> None:
        if not self.up:
            raise DaemonUnavailable("connection refused")

    async def add_file(self, path: Path, on_bytes: Callable[[int], None] | None) -> tuple[str, str]:
        self._check()
        data = path.read_bytes()
        cid = cid_of_bytes(data)
        self.blobs[cid] = data
        if on_bytes:
            on_bytes(len(data))
        return cid, cid_of_file(path)

    async def add_bytes(self, data: bytes) -> str:
        self._check()
        cid = cid_of_bytes(data)
        self.blobs[cid] = data
        return cid

    async def fetch_to(
        self,
        cid: str,
        dest: Path,
        max_bytes: int,
        deadline: float,
        start_deadline: float | None = None,
    ) -> str:
        self._check()
        self.fetches += 1
        self.start_deadlines.append(start_deadline)
        if self.no_provider:
            if self.gate is not None:
                await self.gate.wait()
            raise NoProvider(f"nobody has {cid}")
        if self.hang:
            await asyncio.Event().wait()
        data = self.lie.get(cid, self.blobs[cid])
        if len(data) > max_bytes:
            raise DatasetTooLarge("too large")
        dest.write_bytes(data)
        return cid_of_bytes(data)

    async def pin(self, cid: str) -> None:
        self._check()

    async def unpin(self, cid: str) -> None:
        self._check()

    async def has_local(self, cid: str) -> bool:
        self._check()
        return cid in self.blobs


class Clock:
    """Injected sleep: records delays and runs a hook instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.hook: Callable[[int], None] = lambda n: None

    async def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.hook(len(self.delays))
        await asyncio.sleep(0)


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(tmp_path: Path, backend: FakeBackend, clock: Clock) -> CachingDatasetStore:
    s = CachingDatasetStore(
        backend, DatasetCache(tmp_path / "cache", 10**9), 5.0, 10_000, sleep=clock.sleep
    )
    await s.start()
    return s


async def test_fetch_verifies_and_caches(store: CachingDatasetStore, backend: FakeBackend) -> None:
    cid = await store.add_bytes(b"data" * 10)
    path = await store.fetch(cid)
    assert path.read_bytes() == b"data" * 10
    assert await store.fetch(cid) == path
    assert backend.fetches == 1  # second time from the cache
    assert await store.has(cid)


async def test_wrong_bytes_raise_and_are_discarded(
    store: CachingDatasetStore, backend: FakeBackend
) -> None:
    cid = await store.add_bytes(b"the real content")
    backend.lie[cid] = b"evil content!!!!"
    with pytest.raises(CIDMismatch, match=cid):
        await store.fetch(cid)
    assert not store.cache.contains(cid)
    assert list(store.cache.blobs.iterdir()) == []
    assert list(store.cache.tmp.iterdir()) == []


async def test_tampered_cache_entry_is_refetched(
    store: CachingDatasetStore, backend: FakeBackend
) -> None:
    cid = await store.add_bytes(b"x" * 1000)
    path = await store.fetch(cid)
    path.write_bytes(b"y" * 1000)
    again = await store.fetch(cid)
    assert again.read_bytes() == b"x" * 1000
    assert backend.fetches == 2


async def test_oversize_refused(store: CachingDatasetStore, backend: FakeBackend) -> None:
    cid = await store.add_bytes(b"z" * 20_000)
    with pytest.raises(DatasetTooLarge):
        await store.fetch(cid)
    assert not store.cache.contains(cid)


async def test_unreachable_then_recovers(
    store: CachingDatasetStore, backend: FakeBackend, clock: Clock
) -> None:
    cid = await store.add_bytes(b"payload")
    backend.up = False
    states: list[str] = []

    def hook(n: int) -> None:
        states.append(store.state)
        if n == 4:
            backend.up = True  # the daemon comes back

    clock.hook = hook
    path = await store.fetch(cid)
    assert path.read_bytes() == b"payload"
    assert states == [f"waiting for data: {UNREACHABLE}"] * 4
    assert store.state == "ready"
    # exponential backoff with jitter: each delay within [0.5, 1.5] x base
    for i, d in enumerate(clock.delays):
        base = 0.05 * 2**i
        assert 0.5 * base <= d <= 1.5 * base


async def test_unreachable_until_timeout(tmp_path: Path, backend: FakeBackend) -> None:
    store = CachingDatasetStore(backend, DatasetCache(tmp_path / "c", 10**9), 0.3, 10_000)
    await store.start()
    cid = await store.add_bytes(b"payload")
    backend.up = False
    t0 = time.monotonic()
    with pytest.raises(DaemonUnavailable, match=UNREACHABLE):
        await store.fetch(cid)
    # It gives up at its 0.3 s timeout rather than retrying forever.
    assert time.monotonic() - t0 < scaled(2)
    assert store.state == f"waiting for data: {UNREACHABLE}"


async def test_fetch_timeout(tmp_path: Path, backend: FakeBackend) -> None:
    store = CachingDatasetStore(backend, DatasetCache(tmp_path / "c", 10**9), 0.2, 10_000)
    await store.start()
    cid = await store.add_bytes(b"slow")
    backend.hang = True
    with pytest.raises(FetchTimeout, match=r"ipfs\.timeout"):
        await store.fetch(cid)
    assert list(store.cache.tmp.iterdir()) == []


async def test_an_unfetchable_cid_is_refused_at_once_until_its_ttl(
    tmp_path: Path, backend: FakeBackend
) -> None:
    now = [100.0]
    store = CachingDatasetStore(
        backend,
        DatasetCache(tmp_path / "c", 10**9),
        30.0,
        10_000,
        start_timeout=2.0,
        unfetchable_ttl=60.0,
        clock=lambda: now[0],
    )
    await store.start()
    cid = await store.add_bytes(b"soon served")
    backend.no_provider = True
    with pytest.raises(NoProvider, match="nobody has"):
        await store.fetch(cid)
    assert backend.fetches == 1 and store.stats["no_provider"] == 1
    # The start deadline handed to the backend is the start timeout, not ipfs.timeout.
    start = backend.start_deadlines[0]
    assert start is not None and start - time.monotonic() < 2.0
    backend.no_provider = False
    now[0] += 59
    with pytest.raises(NoProvider, match=r"ipfs\.unfetchable_ttl"):
        await store.fetch(cid)  # within the TTL: refused without asking the backend
    assert backend.fetches == 1 and store.stats["unfetchable_refused"] == 1
    now[0] += 2
    assert (await store.fetch(cid)).read_bytes() == b"soon served"
    assert backend.fetches == 2


async def test_the_start_deadline_counts_from_the_attempt_that_reaches_the_daemon(
    tmp_path: Path, backend: FakeBackend, clock: Clock
) -> None:
    store = CachingDatasetStore(
        backend,
        DatasetCache(tmp_path / "c", 10**9),
        30.0,
        10_000,
        sleep=clock.sleep,
        start_timeout=5.0,
    )
    await store.start()
    cid = await store.add_bytes(b"after the outage")
    backend.up = False

    def outage(n: int) -> None:
        if n == 3:
            backend.up = True
        else:
            time.sleep(1.5)  # the outage: 3 s, more than half the start timeout

    clock.hook = outage
    assert (await store.fetch(cid)).read_bytes() == b"after the outage"
    start = backend.start_deadlines[-1]
    assert start is not None and start - time.monotonic() > 3.5


async def test_fetches_waiting_on_one_that_finds_no_provider_fail_with_it(
    tmp_path: Path, backend: FakeBackend
) -> None:
    store = CachingDatasetStore(
        backend, DatasetCache(tmp_path / "c", 10**9), 30.0, 10_000, unfetchable_ttl=60.0
    )
    await store.start()
    cid = await store.add_bytes(b"nobody serves it")
    backend.no_provider, backend.gate = True, asyncio.Event()
    fetches = asyncio.gather(*(store.fetch(cid) for _ in range(5)), return_exceptions=True)
    # All five behind the one lock of the CID before the first learns its fate.
    await wait_until(lambda: store._fetch_locks.get(cid, (None, [0]))[1][0] == 5)
    backend.gate.set()
    got = await fetches
    assert all(isinstance(e, NoProvider) for e in got), got
    assert backend.fetches == 1  # the others did not try again behind the lock


async def test_a_total_timeout_also_marks_the_cid_unfetchable(
    tmp_path: Path, backend: FakeBackend
) -> None:
    store = CachingDatasetStore(
        backend, DatasetCache(tmp_path / "c", 10**9), 0.2, 10_000, unfetchable_ttl=60.0
    )
    await store.start()
    cid = await store.add_bytes(b"slow")
    backend.hang = True
    with pytest.raises(FetchTimeout, match=r"ipfs\.timeout"):
        await store.fetch(cid)
    with pytest.raises(NoProvider):
        await store.fetch(cid)
    assert backend.fetches == 1
    store.forget_unfetchable(cid)
    backend.hang = False
    assert (await store.fetch(cid)).read_bytes() == b"slow"


async def test_add_waits_for_daemon(
    store: CachingDatasetStore, backend: FakeBackend, clock: Clock, tmp_path: Path
) -> None:
    src = tmp_path / "src.csv"
    src.write_bytes(b"a,b\n1,2\n")
    backend.up = False
    clock.hook = lambda n: setattr(backend, "up", n >= 2)
    seen: list[tuple[int, int]] = []
    cid = await add_dataset(store, src, lambda done, total: seen.append((done, total)))
    assert cid == cid_of_file(src)
    assert seen[0] == (0, 8) and seen[-1] == (8, 8)


async def test_bad_cid_rejected(store: CachingDatasetStore) -> None:
    with pytest.raises(DatasetError, match="CIDv0"):
        await store.fetch("not-a-cid")


async def test_concurrent_fetches_download_once(
    store: CachingDatasetStore, backend: FakeBackend
) -> None:
    cid = await store.add_bytes(b"shared")
    paths = await asyncio.gather(*(store.fetch(cid) for _ in range(5)))
    assert len(set(paths)) == 1
    assert backend.fetches == 1


async def test_fetch_lock_map_holds_only_cids_in_flight(
    tmp_path: Path, backend: FakeBackend, clock: Clock
) -> None:
    # Attack 9 (issue 14): a peer naming endless distinct CIDs grew this map forever.
    # A thousand fetches at once queue for the few hashing threads: on a loaded
    # machine the last waited past the usual fixture's 5 s deadline, which is
    # not what this test is about.
    store = CachingDatasetStore(
        backend, DatasetCache(tmp_path / "cache", 10**9), 600.0, 10_000, sleep=clock.sleep
    )
    await store.start()
    cids = [await store.add_bytes(b"blob %d" % i) for i in range(4_000)]
    for start in range(0, len(cids), 500):
        batch = cids[start : start + 500]
        # each CID twice at once: a waiter, then reuse of the first download
        await asyncio.gather(*(store.fetch(c) for c in batch + batch))
    assert backend.fetches == 4_000
    assert store._fetch_locks == {}


async def test_fetch_lock_dropped_after_failure_and_cancel(
    store: CachingDatasetStore, backend: FakeBackend
) -> None:
    big = await store.add_bytes(b"x" * 20_000)  # over the store's 10_000-byte limit
    with pytest.raises(DatasetTooLarge):
        await store.fetch(big)
    assert store._fetch_locks == {}

    cid = await store.add_bytes(b"never arrives")
    backend.hang = True
    fetches = [asyncio.ensure_future(store.fetch(cid)) for _ in range(3)]
    await wait_until(lambda: backend.fetches == 2, 5.0)  # one downloads, two wait for its lock
    assert list(store._fetch_locks) == [cid]
    for f in fetches:
        f.cancel()
    await asyncio.gather(*fetches, return_exceptions=True)
    assert store._fetch_locks == {}


async def test_pin_of_content_only_in_the_cache_adds_it_back(
    store: CachingDatasetStore, backend: FakeBackend
) -> None:
    """The repo's GC took the blocks after the fetch; the verified cached
    copy is added again (which pins it) instead of a pin that would fetch it."""
    data = b"a model the verifier fetched" * 100
    cid = await store.add_bytes(data)
    await store.fetch(cid)  # cached
    del backend.blobs[cid]  # collected from the repo
    backend.no_provider = True  # and nobody serves it any more
    fetches = backend.fetches
    await store.pin(cid)
    assert backend.blobs.get(cid) == data
    assert backend.fetches == fetches
