"""Our embedded-Kubo GC (p2pml.ipfs.repogc) over a hand-made flatfs repo.

The integration test (tests/integration/ipfs/test_ipfs_disk_cap.py) runs it on
real Kubo repos; here the DAG walk, what may be deleted and the LRU order are
checked block by block.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from p2pml.cidv0 import b58encode
from p2pml.ipfs.netconfig import embedded_kubo_config
from p2pml.ipfs.repogc import Flatfs, Roots, collect, dag_pb_links, disk_usage, rotate_logs


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        if n < 0x80:
            return bytes(out + bytes([n]))
        out.append(n & 0x7F | 0x80)
        n >>= 7


def _field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _mh(block: bytes) -> bytes:
    return b"\x12\x20" + hashlib.sha256(block).digest()


def leaf(payload: bytes) -> bytes:
    return _field(1, b"\x08\x02" + _field(2, payload))  # Data only: no links


def parent(*children: bytes, v1: bool = False) -> bytes:
    links = b""
    for child in children:
        ref = b"\x01\x70" + _mh(child) if v1 else _mh(child)  # CIDv1 dag-pb, or v0
        links += _field(2, _field(1, ref) + _field(2, b"") + _varint(3 << 3) + _varint(len(child)))
    return links + _field(1, b"\x08\x02")


def make_repo(tmp_path: Path) -> tuple[Path, Flatfs]:
    (tmp_path / "blocks").mkdir()
    (tmp_path / "blocks" / "SHARDING").write_text("/repo/flatfs/shard/v1/next-to-last/2\n")
    return tmp_path, Flatfs(tmp_path / "blocks")


def put(fs: Flatfs, block: bytes) -> str:
    path = fs.path_of(_mh(block))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(block)
    return b58encode(_mh(block))


def test_flatfs_path_matches_kubo_layout(tmp_path: Path) -> None:
    _, fs = make_repo(tmp_path)
    key = "CIQG4MXKDFE5CKX3B6XC4FTBINYVLRQBYSTC7SY6X4V24FDX4RWJ27Q"  # from a real repo
    mh = base64.b32decode(key + "=" * (-len(key) % 8))
    assert fs.path_of(mh) == tmp_path / "blocks" / "27" / f"{key}.data"


def test_links_of_v0_and_v1_references_and_garbage() -> None:
    a, b = leaf(b"a"), leaf(b"b")
    assert dag_pb_links(parent(a, b)) == [_mh(a), _mh(b)]
    assert dag_pb_links(parent(a, v1=True)) == [_mh(a)]
    assert dag_pb_links(leaf(b"x")) == []
    assert dag_pb_links(b"\x12\xff\xff\xff") == []  # truncated: no links, no crash


def test_collect_keeps_pins_shared_and_untracked_blocks(tmp_path: Path) -> None:
    repo, fs = make_repo(tmp_path)
    shared, own_a, own_b, own_c = (leaf(bytes([i]) * 3000) for i in range(4))
    for blk in (shared, own_a, own_b, own_c):
        put(fs, blk)
    pinned = put(fs, parent(shared, own_a))
    unpinned_b = put(fs, parent(shared, own_b))
    unpinned_c = put(fs, parent(own_c))
    untracked = leaf(b"kubo's own block (e.g. its MFS root)")
    put(fs, untracked)
    roots = Roots(repo)
    for cid in (pinned, unpinned_b, unpinned_c):
        roots.touch(cid)

    report = collect(repo, roots, {pinned}, low_water=0)

    def present(block: bytes) -> bool:
        return fs.path_of(_mh(block)).exists()

    assert present(shared) and present(own_a) and fs.dag(_mh(parent(shared, own_a)))
    assert not present(own_b) and not present(own_c)
    assert not fs.path_of(_mh(parent(shared, own_b))).exists()
    assert present(untracked)
    assert report.removed == [unpinned_b, unpinned_c]
    assert report.blocks_removed == 4
    assert Roots(repo).snapshot() == [pinned]  # the file was rewritten


def test_collect_goes_least_recently_used_first_and_stops_at_low_water(tmp_path: Path) -> None:
    repo, fs = make_repo(tmp_path)
    cids = []
    for i in range(3):
        blk = leaf(bytes([i]) * 20_000)
        put(fs, blk)
        cids.append(put(fs, parent(blk)))
    roots = Roots(repo)
    for cid in cids:
        roots.touch(cid)
    roots.touch(cids[0])  # used again: now the most recent
    # Just over the low watermark: removing the least recently used root suffices.
    report = collect(repo, roots, set(), low_water=disk_usage(repo) - 1)
    assert report.removed == [cids[1]]
    assert Roots(repo).snapshot() == [cids[2], cids[0]]


def test_roots_touched_during_a_collection_are_not_forgotten(tmp_path: Path) -> None:
    roots = Roots(tmp_path)
    a, b = b58encode(_mh(b"a")), b58encode(_mh(b"b"))
    roots.touch(a)
    assert roots.snapshot() == [a]
    roots.touch(b)  # a fetch finishing while the collector runs
    roots.touch(a)
    roots.drop([a])
    assert roots.snapshot() == [b, a]


def test_logs_rotate_past_their_limit(tmp_path: Path) -> None:
    (tmp_path / "kubo.log").write_bytes(b"x" * 2000)
    (tmp_path / "worker-stderr.log").write_bytes(b"y" * 10)
    rotate_logs(tmp_path, keep=1000)
    assert not (tmp_path / "kubo.log").exists()
    assert (tmp_path / "kubo.log.1").stat().st_size == 2000
    assert (tmp_path / "worker-stderr.log").stat().st_size == 10


def test_storage_cap_written_to_kubo_config() -> None:
    cfg = embedded_kubo_config({"Datastore": {"StorageMax": "10GB"}}, ["/ip4/127.0.0.1/tcp/0"], 8)
    assert cfg["Datastore"]["StorageMax"] == "8MB"
    assert cfg["Datastore"]["StorageGCWatermark"] == 90
    untouched = embedded_kubo_config({"Datastore": {"StorageMax": "10GB"}}, [])
    assert untouched["Datastore"]["StorageMax"] == "10GB"
