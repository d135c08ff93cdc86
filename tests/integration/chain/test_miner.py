"""The miner with its real worker processes and a real store."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from p2pml.chain.params import REGTEST
from p2pml.chain.pow import target_to_bits
from p2pml.mining.miner import Miner
from p2pml.node.chain_manager import ChainManager
from p2pml.store import BlockStore
from tests.framework.waiting import wait_until

KEY = b"\x44" * 32


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[ChainManager, Miner]]:
    store = BlockStore.open(tmp_path / "chain.sqlite", REGTEST)
    mgr = ChainManager(REGTEST, store)

    async def submit(block):  # type: ignore[no-untyped-def]
        (await mgr.submit_block(block)).raise_error()

    miner = Miner(lambda: mgr.template(KEY), submit, workers=2, nonce_range=20_000)
    mgr.on_tip_changed(lambda _u: miner.notify())
    yield mgr, miner
    await miner.close()
    store.close()


async def test_mine_blocks_now(setup: tuple[ChainManager, Miner]) -> None:
    mgr, miner = setup
    hashes = await miner.mine_blocks(5)
    assert mgr.chain.height == 5
    assert [mgr.chain.at_height(h).hash for h in range(1, 6)] == hashes  # type: ignore[union-attr]
    assert mgr.chain.state[b"bal:" + KEY] == 5 * REGTEST.coinbase_reward


async def test_background_mining_and_restart_resumes(
    setup: tuple[ChainManager, Miner], tmp_path: Path
) -> None:
    mgr, miner = setup
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(miner.run())
        miner.set_enabled(True)
        await wait_until(lambda: mgr.chain.height >= 3, timeout=30, what="3 mined blocks")
        miner.set_enabled(False)
        task.cancel()
    tip = mgr.chain.tip.hash
    mgr.store.close()
    again = BlockStore.open(tmp_path / "chain.sqlite", REGTEST)
    assert again.load_chain().tip.hash == tip
    again.close()
    mgr.store = BlockStore.open(tmp_path / "chain.sqlite", REGTEST)  # for teardown


async def test_new_tip_interrupts_the_search(setup: tuple[ChainManager, Miner]) -> None:
    mgr, miner = setup
    # A target nobody will meet: the search only ends when told to.
    hard = mgr.template(KEY)
    hard = dataclasses.replace(
        hard, header=dataclasses.replace(hard.header, bits=target_to_bits(1))
    )
    search = asyncio.ensure_future(miner._search(hard, stop_when_disabled=False))
    await wait_until(lambda: miner.stats.hashes > 0, what="first range done")
    assert not search.done()
    miner.notify()
    assert await asyncio.wait_for(search, timeout=5) is None
