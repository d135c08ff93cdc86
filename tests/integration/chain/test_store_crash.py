"""The store survives SIGKILL at random moments and refuses foreign data."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from p2pml.chain.bonds import BONDED_KEY, bond_key
from p2pml.chain.ledger import balance_key
from p2pml.chain.params import DEVNET, REGTEST
from p2pml.errors import StoreError
from p2pml.store import BlockStore
from tests.framework.chainbuilder import NOW, Builder

CHILD = Path(__file__).with_name("crash_child.py")
ROOT = Path(__file__).resolve().parents[3]


def assert_consistent(path: Path) -> int:
    store = BlockStore.open(path, REGTEST)
    try:
        chain = store.load_chain()
        expected: dict[bytes, Any] = {balance_key(k): a for k, a, _ in REGTEST.allocations}
        expected.update(  # dev keys are bonded in genesis
            (bond_key(k), {"amount": bond, "height": 0, "unbond_at": None})
            for k, _, bond in REGTEST.allocations
            if bond
        )
        expected[BONDED_KEY] = sorted(k for k, _, bond in REGTEST.allocations if bond)
        for h in range(1, chain.height + 1):
            e = chain.at_height(h)
            assert e is not None and e.parent is chain.at_height(h - 1)
            blk = store.get_block(e.hash)
            assert blk is not None, f"body missing at height {h}"
            assert store.get_undo(e.hash) is not None, f"undo missing at height {h}"
            cb = blk.txs[0]
            expected[balance_key(cb.miner)] = expected.get(balance_key(cb.miner), 0) + cb.amount
        assert chain.state == expected, "chain state differs from a replay of the chain"
        return chain.height
    finally:
        store.close()


def test_sigkill_at_random_moments_leaves_a_consistent_store(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"
    rng = random.Random(1234)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    last_height = 0
    for _ in range(24):
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()  # the child opened the store
        assert line.startswith("ready"), proc.stderr.read().decode() if proc.stderr else line
        # Every round commits a higher tip before the kill, so every kill lands
        # while blocks are being written, however slow the machine.
        line = proc.stdout.readline().decode()
        assert line.startswith("committed"), proc.stderr.read().decode() if proc.stderr else line
        committed = int(line.split()[1])
        # Then a random extra time (this is the "random moment", not a sync).
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        height = assert_consistent(path)
        assert height >= committed > last_height  # committed blocks are never lost
        last_height = height


def test_store_from_another_network_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"
    BlockStore.open(path, REGTEST).close()
    with pytest.raises(StoreError, match="belongs to network 'regtest', not 'devnet'"):
        BlockStore.open(path, DEVNET)


def test_corrupt_file_gives_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="corrupt or unreadable"):
        BlockStore.open(path, REGTEST)


def test_restart_resumes_at_the_same_tip_with_forks_and_state(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"
    b = Builder()
    a = b.chain(b.genesis, 5)
    side = b.chain(a[1].hash, 2, miner=b"\x33" * 32)
    store = BlockStore.open(path, REGTEST)
    chain = store.load_chain()
    for blk in [*a, *side]:
        up = chain.accept_block(blk, NOW)
        up.raise_error()
        store.apply(up, chain.tip.hash)
    tips = {e.hash: chain.branch_status(e) for e in chain.tips()}
    store.close()

    store = BlockStore.open(path, REGTEST)
    again = store.load_chain()
    assert again.tip.hash == a[-1].hash
    assert again.state == chain.state
    assert {e.hash: again.branch_status(e) for e in again.tips()} == tips
    # The side branch can still win after the restart: its bodies were kept.
    more = b.chain(side[-1].hash, 2, miner=b"\x33" * 32)
    for blk in more:
        up = again.accept_block(blk, NOW)
        up.raise_error()
        store.apply(up, again.tip.hash)
    assert again.tip.hash == more[-1].hash
    store.close()
