"""The backend-independent half of every ``DatasetStore``: cache, verification, retries.

A backend (:class:`Backend`) only moves bytes to and from one IPFS node. This
class owns everything that must not depend on trusting that node:

* every fetched byte is hashed locally and compared with the CID; a
  mismatch raises :class:`CIDMismatch` and the bytes are discarded;
* downloads land in the cache's temp dir and enter the cache only verified;
* an unreachable daemon is retried with exponential backoff and jitter until
  the configured timeout; meanwhile ``state`` says what we are waiting for,
  and the next call after the daemon returns succeeds (no restart needed);
* a CID nobody serves is cheap: a fetch whose first block has not arrived
  within ``start_timeout`` is given up (:class:`NoProvider`), and a CID that
  failed is refused at once for ``unfetchable_ttl`` seconds (a bounded
  negative cache), so naming it again costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Protocol, TypeVar

from p2pml.errors import CIDMismatch, DaemonUnavailable, DatasetError, FetchTimeout, NoProvider
from p2pml.ipfs.cache import DatasetCache
from p2pml.ipfs.cid import cid_of_bytes, cid_of_file, is_cidv0

log = logging.getLogger(__name__)

T = TypeVar("T")

ProgressFn = Callable[[int, int], None]  # (bytes done, bytes total)

BACKOFF_FIRST = 0.05
BACKOFF_MAX = 2.0
UNFETCHABLE_MAX = 4_096  # CIDs remembered as recently unfetchable (oldest forgotten)


class Backend(Protocol):
    """One IPFS node, as seen by :class:`CachingDatasetStore`.

    Methods raise :class:`DaemonUnavailable` when the node cannot be reached
    (the store retries), and other :class:`DatasetError` s for final failures.
    """

    @property
    def unreachable_state(self) -> str:
        """e.g. "sidecar unreachable at /ip4/127.0.0.1/tcp/5002"."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def add_file(self, path: Path, on_bytes: Callable[[int], None] | None) -> tuple[str, str]:
        """Add and pin; return (CID the node reported, CID we computed locally)."""
        ...

    async def add_bytes(self, data: bytes) -> str:
        """Add and pin; return the CID the node reported."""
        ...

    async def fetch_to(
        self,
        cid: str,
        dest: Path,
        max_bytes: int,
        deadline: float,
        start_deadline: float | None = None,
    ) -> str:
        """Write the content of ``cid`` to ``dest``; return the CID computed locally
        over exactly the bytes written. Raise :class:`DatasetTooLarge` past
        ``max_bytes``, :class:`NoProvider` if nothing of it arrived by
        ``start_deadline``. Deadlines are ``time.monotonic()`` values."""
        ...

    async def pin(self, cid: str) -> None: ...

    async def unpin(self, cid: str) -> None: ...

    async def has_local(self, cid: str) -> bool: ...


class CachingDatasetStore:
    """A :class:`~p2pml.ipfs.store.DatasetStore` over any :class:`Backend`."""

    def __init__(
        self,
        backend: Backend,
        cache: DatasetCache,
        timeout: float,
        max_dataset_bytes: int,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        start_timeout: float | None = None,
        unfetchable_ttl: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.cache = cache
        self.timeout = timeout
        self.start_timeout = start_timeout
        self.unfetchable_ttl = unfetchable_ttl
        self._clock = clock
        # CID -> when it last failed to fetch (timeout or no provider)
        self._unfetchable: OrderedDict[str, float] = OrderedDict()
        self.max_dataset_bytes = max_dataset_bytes
        self._sleep = sleep
        self._state = "not started"
        self._waiting = 0  # operations currently retrying an unreachable daemon
        # One lock per CID being fetched, with the number of fetches holding or
        # awaiting it; dropped when that reaches 0, so the map holds only CIDs
        # in flight (a peer naming endless distinct CIDs cannot grow it).
        self._fetch_locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        # Plain counters for the node's /metrics.
        self.stats: dict[str, int] = {
            "bytes_fetched": 0,
            "bytes_added": 0,
            "fetches": 0,
            "cache_hits": 0,
            "errors": 0,
            "no_provider": 0,  # fetches given up at the start timeout
            "unfetchable_refused": 0,  # refused at once: failed within unfetchable_ttl
        }

    @property
    def state(self) -> str:
        return self._state

    async def start(self) -> None:
        await asyncio.to_thread(self.cache.open)
        await self.backend.start()
        self._state = "ready"

    async def close(self) -> None:
        await self.backend.close()
        self._state = "closed"

    # -- retries -------------------------------------------------------------

    async def _retrying(self, what: str, op: Callable[[], Awaitable[T]], deadline: float) -> T:
        """Run ``op``, retrying :class:`DaemonUnavailable` with backoff until ``deadline``."""
        delay = BACKOFF_FIRST
        waiting = False
        try:
            while True:
                try:
                    result = await op()
                except DaemonUnavailable as exc:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise DaemonUnavailable(
                            f"{what}: {self.backend.unreachable_state} "
                            f"(gave up after {self.timeout:g}s): {exc}"
                        ) from exc
                    if not waiting:
                        waiting = True
                        self._waiting += 1
                    self._state = f"waiting for data: {self.backend.unreachable_state}"
                    log.info("%s: %s; retrying in %.2fs", what, exc, delay)
                    await self._sleep(min(delay * random.uniform(0.5, 1.5), remaining))
                    delay = min(delay * 2, BACKOFF_MAX)
                else:
                    self._state = "ready"
                    return result
        finally:
            if waiting:
                self._waiting -= 1

    # -- DatasetStore --------------------------------------------------------

    async def add(self, path: Path) -> str:
        return await self.add_with_progress(path, None)

    async def add_with_progress(self, path: Path, progress: ProgressFn | None) -> str:
        """Add a file (streamed, never read whole into memory), pin it, return its CID."""
        try:
            cid = await self._add_with_progress(path, progress)
        except DatasetError:
            self.stats["errors"] += 1
            raise
        self.stats["bytes_added"] += path.stat().st_size
        return cid

    async def _add_with_progress(self, path: Path, progress: ProgressFn | None) -> str:
        total = path.stat().st_size
        on_bytes = None if progress is None else (lambda done: progress(done, total))
        deadline = time.monotonic() + self.timeout
        daemon_cid, local_cid = await self._retrying(
            f"add {path}", lambda: self.backend.add_file(path, on_bytes), deadline
        )
        if daemon_cid != local_cid:
            raise CIDMismatch(
                f"IPFS node returned {daemon_cid} for {path}, but its CIDv0 is {local_cid} "
                "(node not using the default importer?)"
            )
        return local_cid

    async def add_bytes(self, data: bytes) -> str:
        local_cid = cid_of_bytes(data)
        deadline = time.monotonic() + self.timeout
        daemon_cid = await self._retrying(
            "add bytes", lambda: self.backend.add_bytes(data), deadline
        )
        if daemon_cid != local_cid:
            raise CIDMismatch(f"IPFS node returned {daemon_cid} for bytes whose CID is {local_cid}")
        return local_cid

    async def has(self, cid: str) -> bool:
        _check_cid(cid)
        if self.cache.contains(cid):
            return True
        try:
            return await asyncio.wait_for(self.backend.has_local(cid), timeout=5)
        except (DatasetError, TimeoutError):
            return False

    async def pin(self, cid: str) -> None:
        """Pin ``cid`` in the IPFS node. Content that is here only in our
        cache (the repo's GC collected its blocks after the fetch) is added
        back from the verified cached copy, which pins it: pinning it in the
        node would fetch it from peers, for ever if nobody serves it any more
        (a trainer that withholds its artifact after inclusion)."""
        _check_cid(cid)
        if not await self._repo_has(cid):
            cached = await self.cache.aget_verified(cid)
            if cached is not None:
                added = await self._add_with_progress(cached, None)
                if added != cid:  # the cached file changed since it was verified
                    raise CIDMismatch(f"cached copy of {cid} now hashes to {added}")
                return
        deadline = time.monotonic() + self.timeout
        await self._retrying(f"pin {cid}", lambda: self.backend.pin(cid), deadline)

    async def _repo_has(self, cid: str) -> bool:
        try:
            return await asyncio.wait_for(self.backend.has_local(cid), timeout=5)
        except (DatasetError, TimeoutError):
            return True  # unknown: pin as before

    async def unpin(self, cid: str) -> None:
        """Let the IPFS node drop ``cid`` when it needs the space (embedded: our
        GC past ``ipfs.storage_max_mb``; sidecar: the daemon's own GC). The
        node keeps pinned what it still needs (datasets of open tasks, artifacts
        of results not yet final) and unpins the rest."""
        _check_cid(cid)
        deadline = time.monotonic() + self.timeout
        await self._retrying(f"unpin {cid}", lambda: self.backend.unpin(cid), deadline)

    async def fetch(self, cid: str, max_bytes: int | None = None) -> Path:
        _check_cid(cid)
        cached = await self.cache.aget_verified(cid)
        if cached is not None:
            self.stats["cache_hits"] += 1
            return cached
        self._refuse_if_unfetchable(cid)
        try:
            path = await self._fetch(cid, max_bytes or self.max_dataset_bytes)
        except FetchTimeout:
            self.stats["errors"] += 1
            if self.unfetchable_ttl > 0 and cid not in self._unfetchable:  # else: refused
                self._unfetchable[cid] = self._clock()
                self._unfetchable.move_to_end(cid)
                while len(self._unfetchable) > UNFETCHABLE_MAX:
                    self._unfetchable.popitem(last=False)
            raise
        except DatasetError:
            self.stats["errors"] += 1
            raise
        self.stats["fetches"] += 1
        self.stats["bytes_fetched"] += path.stat().st_size
        return path

    def _refuse_if_unfetchable(self, cid: str) -> None:
        failed = self._unfetchable.get(cid)
        if failed is None:
            return
        ago = self._clock() - failed
        if ago >= self.unfetchable_ttl:
            del self._unfetchable[cid]
            return
        self.stats["unfetchable_refused"] += 1
        raise NoProvider(
            f"fetch {cid}: failed {ago:.0f}s ago; not retried for "
            f"{self.unfetchable_ttl:g}s (ipfs.unfetchable_ttl)"
        )

    def forget_unfetchable(self, cid: str) -> None:
        """Allow ``cid`` to be fetched again at once (e.g. its provider is back)."""
        self._unfetchable.pop(cid, None)

    @contextlib.asynccontextmanager
    async def _fetch_lock(self, cid: str) -> AsyncIterator[None]:
        """One download per CID; others wait and reuse it. The entry lives
        only while some fetch of ``cid`` holds or awaits it."""
        lock, users = self._fetch_locks.setdefault(cid, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._fetch_locks[cid]

    async def _fetch(self, cid: str, max_bytes: int) -> Path:
        async with self._fetch_lock(cid):
            cached = await self.cache.aget_verified(cid)
            if cached is not None:
                return cached
            self._refuse_if_unfetchable(cid)  # it failed while we waited for the lock
            deadline = time.monotonic() + self.timeout
            try:
                async with asyncio.timeout(self.timeout):
                    return await self._retrying(
                        f"fetch {cid}", lambda: self._fetch_once(cid, deadline, max_bytes), deadline
                    )
            except NoProvider:
                self.stats["no_provider"] += 1
                raise
            except TimeoutError:
                if self._state.startswith("waiting for data"):
                    raise DaemonUnavailable(
                        f"fetch {cid}: {self.backend.unreachable_state} "
                        f"(gave up after {self.timeout:g}s)"
                    ) from None
                raise FetchTimeout(
                    f"fetch {cid} did not finish within {self.timeout:g}s (ipfs.timeout)"
                ) from None

    async def _fetch_once(self, cid: str, deadline: float, max_bytes: int) -> Path:
        # The start deadline counts from each attempt: time spent waiting for
        # an unreachable daemon says nothing about the CID's providers.
        start = None if self.start_timeout is None else time.monotonic() + self.start_timeout
        with self.cache.temp_file() as tmp:
            actual = await self.backend.fetch_to(cid, tmp, max_bytes, deadline, start)
            if actual != cid:
                raise CIDMismatch(
                    f"bytes received for {cid} hash to {actual}; discarded "
                    f"(the IPFS node served wrong content)"
                )
            # In a thread: the rename is cheap, but committing may evict entries,
            # and unlinking a 100 MB file just written takes ~4 ms (a hop: ~35 us).
            return await asyncio.to_thread(self.cache.commit, cid, tmp)


def _check_cid(cid: str) -> None:
    if not is_cidv0(cid):
        raise DatasetError(f"not a CIDv0: {cid!r} (p2pml uses base58btc Qm... CIDs)")


async def verify_file(path: Path) -> str:
    """CID of a local file, computed in a thread."""
    return await asyncio.to_thread(cid_of_file, path)
