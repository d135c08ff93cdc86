"""Issue 14, attack 6, against the real SQLite store: side branches forked
where work is cheap leave nothing on disk.

Before the fix, 3,000 blocks forked at genesis, gossiped to a node whose
chain was ahead, each left its header in the index (~1.5 KB, persisted), and
a lighter 2,000-header batch over sync was stored as well.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from p2pml.chain.params import REGTEST
from p2pml.chain.types import Block
from p2pml.store import BlockStore
from tests.framework.chainbuilder import NOW, Builder


def stored_headers(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM headers").fetchone()[0])


def open_store(tmp_path: Path) -> tuple[BlockStore, Path]:
    path = tmp_path / "chain.sqlite"
    return BlockStore.open(path, REGTEST), path


def feed(store: BlockStore, chain_blocks: list[Block]) -> None:
    chain = store.load_chain()
    for b in chain_blocks:
        up = chain.accept_block(b, NOW)
        store.apply(up, chain.tip.hash)
        assert up.error is None


def test_3000_genesis_forked_blocks_over_gossip_leave_no_header(tmp_path: Path) -> None:
    b = Builder()
    ours = b.chain(b.genesis, 3)
    forks = [b.make(b.genesis, extra=i.to_bytes(2, "big")) for i in range(3_000)]
    store, path = open_store(tmp_path)
    try:
        feed(store, ours)
        chain = store.load_chain()
        before = stored_headers(path)
        low = 0
        for blk in forks:
            up = chain.accept_block(blk, NOW, requested=False)
            store.apply(up, chain.tip.hash)
            assert up.error is None
            low += up.low_work
        assert low == 3_000
        assert stored_headers(path) == before == 4  # genesis and our three
        assert all(chain.entry(x.hash) is None for x in forks)
        assert len(chain.index) == 4
    finally:
        store.close()


def test_lighter_2000_header_batch_over_sync_is_held_not_stored(tmp_path: Path) -> None:
    b = Builder()
    ours = b.chain(b.genesis, 2_010)
    lighter = b.chain(b.genesis, 2_000, miner=b"\x44" * 32)
    store, path = open_store(tmp_path)
    try:
        feed(store, ours)
        chain = store.load_chain()
        up = chain.accept_headers([x.header for x in lighter], NOW, session="peer-x")
        store.apply(up, chain.tip.hash)
        assert up.error is None and up.headers_ok == 2_000
        assert up.headers_new_held == 2_000 and up.new_entries == []
        assert stored_headers(path) == 2_011
        assert all(chain.entry(x.hash) is None for x in lighter)
    finally:
        store.close()
