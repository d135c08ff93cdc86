"""Local content-addressed cache of verified datasets, with a byte limit and LRU eviction.

Layout under ``root``::

    blobs/<CID>     verified content, named by its CIDv0
    tmp/            downloads in progress (wiped on open)

A download is written into ``tmp/`` and renamed into ``blobs/`` only after
its bytes hashed to the CID, so a partial or corrupt download never enters.
The rename is atomic on one filesystem.

Every *use* of an entry (:meth:`DatasetCache.get_verified`) checks it. The
CID of the file is recomputed unless this process hashed it less than
``reverify_seconds`` ago and its inode, size, mtime and ctime are
unchanged since. ctime cannot be set from user space and moves on any write,
even one that restores size and mtime. File timestamps are coarse (a kernel
tick), so, as git does with its index, a signature whose ctime was less than
``RACY_NS`` old when recorded is not trusted: a write in the same tick would
look unchanged. The interval bounds how long anything that escapes a stat (a
flip on the disk itself) can go unnoticed. Before this, every use re-hashed:
~10 ms per use of a 12 MB dataset, paid once per verified result. A
mismatching entry is deleted and the caller refetches.

LRU order is kept in memory, and starts from the files' mtimes (their
download time) when the cache opens. Files are never touched on use: a
``utime`` would move ctime and make every entry racy again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path

from p2pml.ipfs.cid import cid_of_file, is_cidv0

REVERIFY_SECONDS = 60.0
RACY_NS = 2_000_000_000  # above any file system's timestamp granularity

_Signature = tuple[int, int, int, int]


def _signature(path: Path) -> _Signature:
    st = path.stat()
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class DatasetCache:
    """Thread-safe bookkeeping; the hashing runs in a worker thread."""

    def __init__(
        self,
        root: Path,
        max_bytes: int,
        reverify_seconds: float = REVERIFY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.blobs = root / "blobs"
        self.tmp = root / "tmp"
        self.reverify_seconds = reverify_seconds
        self._clock = clock
        self._wall_ns = wall_ns
        self._lock = threading.Lock()
        self._sizes: OrderedDict[str, int] = OrderedDict()  # least recently used first
        # cid -> (stat signature, when its content was last hashed); only
        # signatures that were not racy when recorded
        self._verified: dict[str, tuple[_Signature, float]] = {}
        self.hashes = 0  # full re-hashes done by get_verified (for tests and metrics)

    def open(self) -> None:
        self.blobs.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)  # leftovers of a crash: never trusted
        self.tmp.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._sizes.clear()
            self._verified.clear()
            found = []
            for entry in self.blobs.iterdir():
                if entry.is_file() and is_cidv0(entry.name):
                    st = entry.stat()
                    found.append((st.st_mtime_ns, entry.name, st.st_size))
                else:
                    entry.unlink(missing_ok=True)
            for _, cid, size in sorted(found):
                self._sizes[cid] = size
        self._evict()

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    def path_of(self, cid: str) -> Path:
        if not is_cidv0(cid):
            raise ValueError(f"not a CIDv0: {cid!r}")
        return self.blobs / cid

    def contains(self, cid: str) -> bool:
        """Cheap presence check (no hashing): for ``has``."""
        with self._lock:
            return cid in self._sizes

    def get_verified(self, cid: str) -> Path | None:
        """Path of a verified entry, or None (missing, or tampered and dropped). Blocking."""
        path = self.path_of(cid)
        if not self.contains(cid):
            return None
        try:
            before = _signature(path)
            seen_ns = self._wall_ns()  # when ``before`` was taken: the racy test's "now"
            with self._lock:
                memo = self._verified.get(cid)
            if (
                memo is not None
                and memo[0] == before
                and self._clock() - memo[1] < self.reverify_seconds
            ):
                hashed_at = memo[1]  # unchanged since hashed, recently: skip the re-hash
            else:
                hashed_at = self._clock()
                with self._lock:
                    self.hashes += 1
                if cid_of_file(path) != cid:
                    self.discard(cid)
                    return None
            # Remember only a file that did not change while we hashed it.
            unchanged = _signature(path) == before
        except FileNotFoundError:
            self.discard(cid)
            return None
        if unchanged:
            self._remember(cid, before, seen_ns, hashed_at)
        else:
            with self._lock:
                self._verified.pop(cid, None)
        with self._lock:
            if cid in self._sizes:
                self._sizes.move_to_end(cid)
        return path

    def _remember(self, cid: str, signature: _Signature, seen_ns: int, hashed_at: float) -> None:
        racy = seen_ns - signature[3] < RACY_NS
        with self._lock:
            if racy or cid not in self._sizes:
                self._verified.pop(cid, None)
            else:
                self._verified[cid] = (signature, hashed_at)

    async def aget_verified(self, cid: str) -> Path | None:
        if not self.contains(cid):  # miss: no thread hop needed
            return None
        return await asyncio.to_thread(self.get_verified, cid)

    def discard(self, cid: str) -> None:
        with self._lock:
            self._sizes.pop(cid, None)
            self._verified.pop(cid, None)
        self.path_of(cid).unlink(missing_ok=True)

    @contextlib.contextmanager
    def temp_file(self) -> Iterator[Path]:
        """A fresh path in ``tmp/``; removed on exit unless committed (renamed away)."""
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="dl-")
        os.close(fd)
        path = Path(name)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    def commit(self, cid: str, verified: Path) -> Path:
        """Move a file already verified to hash to ``cid`` into the cache."""
        dest = self.path_of(cid)
        size = verified.stat().st_size
        os.replace(verified, dest)
        with self._lock:
            self._sizes[cid] = size
            self._sizes.move_to_end(cid)
            # Not remembered as verified: the rename just moved its ctime, so
            # the signature is racy; the first use hashes it.
            self._verified.pop(cid, None)
        self._evict(keep=cid)
        return dest

    def _evict(self, keep: str | None = None) -> None:
        """Drop least recently used entries until under ``max_bytes``.

        ``keep`` (the entry just fetched) is never evicted, even if it alone is
        over the limit: the caller needs it now.
        """
        with self._lock:
            total = sum(self._sizes.values())
            for cid in [c for c in self._sizes if c != keep]:
                if total <= self.max_bytes:
                    break
                total -= self._sizes.pop(cid)
                self._verified.pop(cid, None)
                (self.blobs / cid).unlink(missing_ok=True)
