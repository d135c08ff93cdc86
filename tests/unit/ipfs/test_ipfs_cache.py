"""The local cache: verified entries only, LRU eviction, tamper detection."""

from __future__ import annotations

import os
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
    os.utime(cache.path_of(a), (1, 1))  # a: least recent
    os.utime(cache.path_of(b), (2, 2))
    assert cache.get_verified(a) is not None  # use bumps a to most recent
    c = _put(cache, b"c" * 100)  # over 250: b goes
    assert cache.contains(a) and cache.contains(c)
    assert not cache.contains(b) and not cache.path_of(b).exists()
    assert cache.total_bytes == 200


def test_entry_larger_than_limit_is_kept_alone(tmp_path: Path) -> None:
    cache = DatasetCache(tmp_path, 50)
    cache.open()
    small = _put(cache, b"s" * 10)
    big = _put(cache, b"B" * 100)
    assert cache.contains(big)
    assert not cache.contains(small)
