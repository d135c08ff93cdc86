"""Peer bans that survive a restart: a BanStore protocol and a SQLite store."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Ban:
    peer_id: str
    until: float  # unix time
    reason: str


class BanStore(Protocol):
    def add(self, ban: Ban) -> None: ...

    def get(self, peer_id: str, now: float) -> Ban | None:
        """The active ban of ``peer_id`` (expired bans are forgotten)."""
        ...

    def remove(self, peer_id: str) -> None: ...

    def active(self, now: float) -> list[Ban]: ...

    def close(self) -> None: ...


class MemoryBanStore:
    def __init__(self) -> None:
        self._bans: dict[str, Ban] = {}

    def add(self, ban: Ban) -> None:
        old = self._bans.get(ban.peer_id)
        if old is None or old.until < ban.until:
            self._bans[ban.peer_id] = ban

    def get(self, peer_id: str, now: float) -> Ban | None:
        b = self._bans.get(peer_id)
        if b is not None and b.until <= now:
            del self._bans[peer_id]
            return None
        return b

    def remove(self, peer_id: str) -> None:
        self._bans.pop(peer_id, None)

    def active(self, now: float) -> list[Ban]:
        return [b for b in list(self._bans.values()) if self.get(b.peer_id, now) is not None]

    def close(self) -> None:
        pass


class SqliteBanStore:
    """One small table, mirrored in memory: reads never touch the database,
    and a write commits in WAL mode without an fsync (``synchronous=NORMAL``,
    as the block store: it survives a killed process; a power cut may forget
    the last bans).

    Peer ids are free, so an attack mix gets one ban per fresh key: each ban
    used to commit with fsyncs on the event loop (~0.3 s on a busy disk), and
    every ``active()`` (each ``GET /status``) ran a write transaction.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Only the asyncio thread uses it; the lock guards against misuse.
        self._db = sqlite3.connect(str(self.path), check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self._db:
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS bans ("
                    "peer_id TEXT PRIMARY KEY, until REAL NOT NULL, reason TEXT NOT NULL)"
                )
            rows = self._db.execute("SELECT peer_id, until, reason FROM bans").fetchall()
        self._bans: dict[str, Ban] = {r[0]: Ban(*r) for r in rows}

    def add(self, ban: Ban) -> None:
        with self._lock:
            old = self._bans.get(ban.peer_id)
            until = ban.until if old is None else max(old.until, ban.until)
            self._bans[ban.peer_id] = Ban(ban.peer_id, until, ban.reason)
            with self._db:
                self._db.execute(
                    "INSERT INTO bans(peer_id, until, reason) VALUES (?, ?, ?) "
                    "ON CONFLICT(peer_id) DO UPDATE SET until = max(until, excluded.until), "
                    "reason = excluded.reason",
                    (ban.peer_id, ban.until, ban.reason),
                )

    def get(self, peer_id: str, now: float) -> Ban | None:
        with self._lock:
            b = self._bans.get(peer_id)
        if b is not None and b.until <= now:
            self.remove(peer_id)
            return None
        return b

    def remove(self, peer_id: str) -> None:
        with self._lock:
            if self._bans.pop(peer_id, None) is None:
                return
            with self._db:
                self._db.execute("DELETE FROM bans WHERE peer_id = ?", (peer_id,))

    def active(self, now: float) -> list[Ban]:
        with self._lock:
            expired = [(p,) for p, b in self._bans.items() if b.until <= now]
            if expired:
                for (p,) in expired:
                    del self._bans[p]
                with self._db:
                    self._db.executemany("DELETE FROM bans WHERE peer_id = ?", expired)
            return list(self._bans.values())

    def close(self) -> None:
        with self._lock:
            self._db.close()
