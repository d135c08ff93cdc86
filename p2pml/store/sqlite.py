"""SQLite (WAL) store for the block index, bodies, undo logs and chain state.

Every :class:`~p2pml.chain.state.ChainUpdate` (or a batch of them) is written
in one transaction together with the new tip, so a process killed at any
moment leaves a store whose tip, all its ancestors and the matching chain
state are present: SQLite's journal makes the last transaction all or
nothing. ``synchronous=NORMAL`` in WAL mode survives a killed process; only
an OS crash or power cut can roll back the newest blocks, still consistently.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgpack

from p2pml.chain.encoding import decode_block, encode_block
from p2pml.chain.index import ChainUpdate, IndexEntry, Status, StoredEntry
from p2pml.chain.ledger import UndoLog
from p2pml.chain.params import NetworkParams
from p2pml.chain.state import ChainState
from p2pml.chain.types import Block, BlockHeader
from p2pml.errors import DecodeError, StoreError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS headers (
    hash BLOB PRIMARY KEY,
    height INTEGER NOT NULL,
    header BLOB NOT NULL,
    status INTEGER NOT NULL,
    has_data INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    invalid_reason TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bodies (hash BLOB PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS undo (hash BLOB PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
"""


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False)


class BlockStore:
    """Implements :class:`~p2pml.chain.state.BlockSource` over SQLite.

    One connection, guarded by a lock so the node may use it from a worker
    thread while the API reads from another.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, params: NetworkParams) -> None:
        self._conn = conn
        self._lock = threading.RLock()
        self.path = path
        self.params = params

    # -- opening -------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, params: NetworkParams) -> BlockStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=OFF")
            conn.executescript(_SCHEMA)
            store = cls(conn, path, params)
            store._check_meta()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: block store is corrupt or unreadable ({exc})") from None
        return store

    def _check_meta(self) -> None:
        meta = dict(self._conn.execute("SELECT key, value FROM meta"))
        if not meta:
            with self._tx():
                self._conn.executemany(
                    "INSERT INTO meta(key, value) VALUES (?, ?)",
                    [
                        ("schema", _pack(SCHEMA_VERSION)),
                        ("network", self.params.name.encode()),
                        ("genesis", self.params.genesis_hash),
                    ],
                )
            return
        network = bytes(meta.get("network", b"")).decode(errors="replace")
        if network != self.params.name or meta.get("genesis") != self.params.genesis_hash:
            raise StoreError(
                f"{self.path}: store belongs to network {network!r}, not {self.params.name!r}"
            )
        if _unpack(meta["schema"]) != SCHEMA_VERSION:
            raise StoreError(f"{self.path}: unsupported store schema {_unpack(meta['schema'])}")

    def load_chain(self) -> ChainState:
        """The chain as stored; a fresh store gets genesis written first."""
        try:
            with self._lock:
                row = self._conn.execute("SELECT value FROM meta WHERE key='tip'").fetchone()
                if row is None:
                    chain, update = ChainState.create(self.params, self)
                    self.apply(update, chain.tip.hash)
                    return chain
                chain = ChainState.load(
                    self.params, self, self._entries(), bytes(row[0]), dict(self._state())
                )
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: block store is corrupt ({exc})") from None
        except DecodeError as exc:
            raise StoreError(f"{self.path}: block store holds undecodable data ({exc})") from None
        tip = chain.tip
        if self.get_block(tip.hash) is None:
            raise StoreError(f"{self.path}: body of the tip block is missing")
        return chain

    def _entries(self) -> Iterator[StoredEntry]:
        rows = self._conn.execute(
            "SELECT header, status, has_data, seq, invalid_reason FROM headers"
        )
        for header, status, has_data, seq, reason in rows:
            if len(header) != 92:
                raise StoreError(f"{self.path}: a stored header has the wrong size")
            yield StoredEntry(
                BlockHeader.deserialize(bytes(header)), Status(status), bool(has_data), seq, reason
            )

    def _state(self) -> Iterator[tuple[bytes, Any]]:
        for key, value in self._conn.execute("SELECT key, value FROM state"):
            yield bytes(key), _unpack(value)

    # -- BlockSource -----------------------------------------------------------

    def get_block(self, block_hash: bytes) -> Block | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT data FROM bodies WHERE hash=?", (block_hash,)
            ).fetchone()
        return None if row is None else decode_block(bytes(row[0]))

    def get_block_bytes(self, block_hash: bytes) -> bytes | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT data FROM bodies WHERE hash=?", (block_hash,)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def get_undo(self, block_hash: bytes) -> UndoLog | None:
        with self._lock:
            row = self._conn.execute("SELECT data FROM undo WHERE hash=?", (block_hash,)).fetchone()
        if row is None:
            return None
        return [(bytes(k), v) for k, v in _unpack(row[0])]

    # -- writing ---------------------------------------------------------------

    def _tx(self) -> _Transaction:
        return _Transaction(self._conn, self._lock)

    def apply(self, update: ChainUpdate, tip_hash: bytes) -> None:
        self.apply_many([update], tip_hash)

    def apply_many(self, updates: Iterable[ChainUpdate], tip_hash: bytes) -> None:
        """Write several updates and the tip as one transaction."""
        entries: dict[bytes, IndexEntry] = {}
        bodies: dict[bytes, Block] = {}
        undo: dict[bytes, UndoLog] = {}
        state: dict[bytes, Any] = {}
        for u in updates:
            for e in u.new_entries:
                entries[e.hash] = e
            for e in u.status_changed:
                entries[e.hash] = e
            for b in u.new_blocks:
                bodies[b.hash] = b
            for h, log in u.connected:
                undo[h] = log
            state.update(u.state_changes)
        c = self._conn
        try:
            with self._tx():
                c.executemany(
                    "INSERT OR REPLACE INTO headers"
                    "(hash, height, header, status, has_data, seq, invalid_reason)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            e.hash,
                            e.height,
                            e.header.serialize(),
                            int(e.status),
                            int(e.has_data),
                            e.seq,
                            e.invalid_reason,
                        )
                        for e in entries.values()
                    ],
                )
                c.executemany(
                    "INSERT OR IGNORE INTO bodies(hash, data) VALUES (?, ?)",
                    [(h, encode_block(b)) for h, b in bodies.items()],
                )
                c.executemany(
                    "INSERT OR REPLACE INTO undo(hash, data) VALUES (?, ?)",
                    [(h, _pack([list(x) for x in log])) for h, log in undo.items()],
                )
                dels = [(k,) for k, v in state.items() if v is None]
                puts = [(k, _pack(v)) for k, v in state.items() if v is not None]
                c.executemany("DELETE FROM state WHERE key=?", dels)
                c.executemany("INSERT OR REPLACE INTO state(key, value) VALUES (?, ?)", puts)
                c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('tip', ?)", (tip_hash,))
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: write failed ({exc})") from None

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class _Transaction:
    def __init__(self, conn: sqlite3.Connection, lock: threading.RLock) -> None:
        self._conn = conn
        self._lock = lock

    def __enter__(self) -> None:
        self._lock.acquire()
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self._conn.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self._lock.release()
