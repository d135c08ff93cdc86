"""The local cache: verified entries only, LRU eviction, tamper detection."""

from __future__ import annotations

import os
import time
from pathlib import Path

from p2pml.ipfs.cache import DatasetCache
from p2pml.ipfs.cid import cid_of_bytes


def _put(cache: DatasetCache, data: bytes) -> str:
    cid = cid_of_bytes(data)
    with cache.temp_file() as tmp:
        tmp.write_bytes(data)
        cache.commit(cid, tmp)
    return cid


def test_commit_and_get(tmp_path: Path) -> None:
    cache = DatasetCache(tmp_path, 10_000)
    cache.open()
    cid = _put(cache, b"abc")
    path = cache.get_verified(cid)
    assert path is not None and path.read_bytes() == b"abc"
    assert list(cache.tmp.iterdir()) == []


def test_temp_file_removed_when_not_committed(tmp_path: Path) -> None:
    cache = DatasetCache(tmp_path, 10_000)
    cache.open()
    with cache.temp_file() as tmp:
        tmp.write_bytes(b"partial")
    assert list(cache.tmp.iterdir()) == []


def test_open_wipes_partial_downloads_and_junk(tmp_path: Path) -> None:
    cache = DatasetCache(tmp_path, 10_000)
    cache.open()
    cid = _put(cache, b"keep")
    (cache.tmp / "dl-crashed").write_bytes(b"half")
    (cache.blobs / "not-a-cid").write_bytes(b"junk")
    reopened = DatasetCache(tmp_path, 10_000)
    reopened.open()
    assert list(reopened.tmp.iterdir()) == []
    assert sorted(p.name for p in reopened.blobs.iterdir()) == [cid]
    assert reopened.contains(cid)


def test_tampered_entry_is_dropped(tmp_path: Path) -> None:
    cache = DatasetCache(tmp_path, 10_000)
    cache.open()
    cid = _put(cache, b"original bytes")
    path = cache.path_of(cid)
    st = path.stat()
    path.write_bytes(b"tampered bytes")  # same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # and same mtime
    assert cache.get_verified(cid) is None
    assert not path.exists()
    assert not cache.contains(cid)


def test_lru_eviction(tmp_path: Path) -> None:
    cache = DatasetCache(tmp_path, 250)
    cache.open()
    a = _put(cache, b"a" * 100)
    b = _put(cache, b"b" * 100)
    mtime_a = cache.path_of(a).stat().st_mtime_ns
    assert cache.get_verified(a) is not None  # use makes a the most recent
    assert cache.path_of(a).stat().st_mtime_ns == mtime_a  # without touching the file
    c = _put(cache, b"c" * 100)  # over 250: b goes
    assert cache.contains(a) and cache.contains(c)
    assert not cache.contains(b) and not cache.path_of(b).exists()
    assert cache.total_bytes == 200


def test_lru_order_after_restart_follows_mtime(tmp_path: Path) -> None:
    cache = DatasetCache(tmp_path, 250)
    cache.open()
    a = _put(cache, b"a" * 100)
    b = _put(cache, b"b" * 100)
    os.utime(cache.path_of(a), (2, 2))
    os.utime(cache.path_of(b), (1, 1))  # b: downloaded earlier
    reopened = DatasetCache(tmp_path, 250)
    reopened.open()
    c = _put(reopened, b"c" * 100)
    assert reopened.contains(a) and reopened.contains(c) and not reopened.contains(b)


def test_entry_larger_than_limit_is_kept_alone(tmp_path: Path) -> None:
    cache = DatasetCache(tmp_path, 50)
    cache.open()
    small = _put(cache, b"s" * 10)
    big = _put(cache, b"B" * 100)
    assert cache.contains(big)
    assert not cache.contains(small)


def test_tamper_right_after_a_verified_use_is_caught(tmp_path: Path) -> None:
    # Same size, same mtime, and within one timestamp tick of the last check:
    # the racy-signature rule makes the next use re-hash.
    cache = DatasetCache(tmp_path, 10_000)
    cache.open()
    cid = _put(cache, b"original bytes")
    path = cache.get_verified(cid)
    assert path is not None
    st = path.stat()
    path.write_bytes(b"tampered bytes")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache.get_verified(cid) is None
    assert not path.exists()


def _aged(tmp_path: Path, now: list[float]) -> DatasetCache:
    """A cache whose wall clock runs 5 s ahead: files it sees are past the racy window."""
    return DatasetCache(
        tmp_path,
        10_000,
        reverify_seconds=60.0,
        clock=lambda: now[0],
        wall_ns=lambda: time.time_ns() + 5_000_000_000,
    )


def test_unchanged_entry_is_rehashed_only_after_the_interval(tmp_path: Path) -> None:
    now = [1000.0]
    cache = _aged(tmp_path, now)
    cache.open()
    cid = _put(cache, b"dataset bytes")
    for _ in range(3):
        assert cache.get_verified(cid) is not None
    assert cache.hashes == 1  # the first use only
    now[0] += 61.0
    assert cache.get_verified(cid) is not None
    assert cache.hashes == 2
    assert cache.get_verified(cid) is not None
    assert cache.hashes == 2


def test_replaced_entry_is_rehashed(tmp_path: Path) -> None:
    cache = _aged(tmp_path, [0.0])
    cache.open()
    cid = _put(cache, b"original bytes")
    path = cache.get_verified(cid)  # hashed and remembered
    assert path is not None and cache.hashes == 1
    st = path.stat()
    forged = tmp_path / "forged"
    forged.write_bytes(b"tampered bytes")
    os.utime(forged, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(forged, path)  # same size and mtime, another inode
    assert cache.get_verified(cid) is None
    assert cache.hashes == 2


def test_recently_written_entry_is_rehashed_on_every_use(tmp_path: Path) -> None:
    # A wall clock just past the file's ctime: every check falls in the racy window.
    blobs = tmp_path / "blobs"
    cache = DatasetCache(
        tmp_path, 10_000, wall_ns=lambda: max(p.stat().st_ctime_ns for p in blobs.iterdir()) + 1
    )
    cache.open()
    cid = _put(cache, b"dataset bytes")
    for _ in range(3):
        assert cache.get_verified(cid) is not None
    assert cache.hashes == 3


def test_reopened_cache_rehashes_on_first_use(tmp_path: Path) -> None:
    now = [0.0]
    cid = _put(_opened(_aged(tmp_path, now)), b"dataset bytes")
    reopened = _opened(_aged(tmp_path, now))
    assert reopened.get_verified(cid) is not None
    assert reopened.get_verified(cid) is not None
    assert reopened.hashes == 1


def _opened(cache: DatasetCache) -> DatasetCache:
    cache.open()
    return cache
