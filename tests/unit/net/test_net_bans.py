"""The SQLite ban store under a flood of bans (one per fresh attacker key).

Before: every ban committed in rollback-journal mode with fsyncs, on the
event loop (py-spy: 37 % of the node's main thread in SqliteBanStore.add
during scripts/bench_attack.py on a busy disk), and every read of the active
bans (each ``GET /status``) ran a DELETE in a write transaction.
"""

from __future__ import annotations

from pathlib import Path

from p2pml.net.bans import Ban, SqliteBanStore


def test_reading_bans_runs_no_statement(tmp_path: Path) -> None:
    store = SqliteBanStore(tmp_path / "bans.sqlite")
    try:
        for i in range(100):
            store.add(Ban(f"p{i}", 1000.0 + i, "invalid-result"))
        statements: list[str] = []
        store._db.set_trace_callback(statements.append)
        for i in range(100):
            assert len(store.active(500.0)) == 100
            assert store.get(f"p{i}", 500.0) is not None
            assert store.get("stranger", 500.0) is None
        assert statements == []
        # Expiry still reaches the disk, in one transaction.
        assert [b.peer_id for b in store.active(1050.5)] == [f"p{i}" for i in range(51, 100)]
        assert sum(s.startswith("BEGIN") for s in statements) == 1
        assert sum(s.startswith("DELETE") for s in statements) == 51
        statements.clear()
        store.active(1050.5)
        assert statements == []
    finally:
        store.close()
    again = SqliteBanStore(tmp_path / "bans.sqlite")
    try:
        assert len(again.active(1050.5)) == 49
        assert again.get("p99", 1050.5) == Ban("p99", 1099.0, "invalid-result")
    finally:
        again.close()


def test_a_ban_commits_in_wal_mode_without_an_fsync(tmp_path: Path) -> None:
    store = SqliteBanStore(tmp_path / "bans.sqlite")
    try:
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    finally:
        store.close()


def test_a_later_shorter_ban_keeps_the_longer_one_with_the_new_reason(tmp_path: Path) -> None:
    store = SqliteBanStore(tmp_path / "bans.sqlite")
    store.add(Ban("p", 100.0, "bad-pow"))
    store.add(Ban("p", 50.0, "manual"))
    assert store.get("p", 0.0) == Ban("p", 100.0, "manual")
    store.close()
    again = SqliteBanStore(tmp_path / "bans.sqlite")
    assert again.get("p", 0.0) == Ban("p", 100.0, "manual")
    again.close()
