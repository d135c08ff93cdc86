"""Local content-addressed cache of verified datasets, with a byte limit and LRU eviction.

Layout under ``root``::

    blobs/<CID>     verified content, named by its CIDv0
    tmp/            downloads in progress (wiped on open)

A download is written into ``tmp/`` and renamed into ``blobs/`` only after
its bytes hashed to the CID, so a partial or corrupt download never enters.
The rename is atomic on one filesystem.

Every *use* of an entry (:meth:`DatasetCache.get_verified`) recomputes the
CID of the file. A cheaper size/mtime check would miss a same-size tamper
done with a preserved mtime, and the full recompute costs ~0.3 s per 100 MB,
small next to training on that data; a mismatching entry is deleted and the
caller refetches.

LRU order is the file mtime, bumped on every use, so it survives restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from p2pml.ipfs.cid import cid_of_file, is_cidv0


class DatasetCache:
    """Thread-safe bookkeeping; the hashing runs in a worker thread."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.blobs = root / "blobs"
        self.tmp = root / "tmp"
        self._lock = threading.Lock()
        self._sizes: dict[str, int] = {}

    def open(self) -> None:
        self.blobs.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)  # leftovers of a crash: never trusted
        self.tmp.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._sizes.clear()
            for entry in self.blobs.iterdir():
                if entry.is_file() and is_cidv0(entry.name):
                    self._sizes[entry.name] = entry.stat().st_size
                else:
                    entry.unlink(missing_ok=True)
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
            actual = cid_of_file(path)
        except FileNotFoundError:
            actual = None
        if actual != cid:
            self.discard(cid)
            return None
        with contextlib.suppress(FileNotFoundError):
            os.utime(path)  # LRU bump
        return path

    async def aget_verified(self, cid: str) -> Path | None:
        if not self.contains(cid):  # miss: no thread hop needed
            return None
        return await asyncio.to_thread(self.get_verified, cid)

    def discard(self, cid: str) -> None:
        with self._lock:
            self._sizes.pop(cid, None)
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
        self._evict(keep=cid)
        return dest

    def _evict(self, keep: str | None = None) -> None:
        """Drop least recently used entries until under ``max_bytes``.

        ``keep`` (the entry just fetched) is never evicted, even if it alone is
        over the limit: the caller needs it now.
        """
        with self._lock:
            total = sum(self._sizes.values())
            if total <= self.max_bytes:
                return
            by_age = sorted(
                (c for c in self._sizes if c != keep),
                key=lambda c: self._mtime(c),
            )
            for cid in by_age:
                if total <= self.max_bytes:
                    break
                total -= self._sizes.pop(cid)
                (self.blobs / cid).unlink(missing_ok=True)

    def _mtime(self, cid: str) -> float:
        try:
            return (self.blobs / cid).stat().st_mtime
        except FileNotFoundError:
            return 0.0
