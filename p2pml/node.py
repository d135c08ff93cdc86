"""Node: wires store, chain, miner, network, IPFS, training and the admin API.

One supervisor (an ``asyncio.TaskGroup`` in :meth:`Node.run`) owns every
background task. Shutdown runs in order: admin API, gossip, jobs, worker
pools, store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from p2pml import __version__
from p2pml.api.render import block_json, entry_json
from p2pml.chain.encoding import parse_hash
from p2pml.chain.params import NetworkParams, params_for
from p2pml.chain.state import ChainUpdate
from p2pml.chain.txrules import balance_key
from p2pml.chain.types import Block
from p2pml.chainmgr import ChainManager
from p2pml.config import Settings
from p2pml.crypto import Identity, load_or_create_identity
from p2pml.errors import ConfigError, DecodeError, NetworkError
from p2pml.mining.miner import Miner
from p2pml.store import BlockStore

log = logging.getLogger("p2pml.node")


def load_or_create_token(path: Path) -> str:
    """The admin bearer token, created 0600 at first start (like a cookie file)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        return token
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read admin token file: {exc.strerror}") from None
    if len(token) < 16:
        raise ConfigError(f"{path}: admin token file holds no usable token")
    return token


class Node:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.params: NetworkParams = params_for(settings.node.network)
        self.data_dir = settings.node.data_dir
        self.started = time.time()
        assert settings.node.key_file is not None and settings.admin.token_file is not None
        self.identity: Identity = load_or_create_identity(settings.node.key_file)
        self.admin_token = load_or_create_token(settings.admin.token_file)
        self.store = BlockStore.open(self.data_dir / "chain.sqlite", self.params)
        offset = settings.node.clock_offset_seconds
        self.chain_mgr = ChainManager(self.params, self.store, clock=lambda: time.time() + offset)
        self.miner = Miner(
            self._template,
            self._submit_mined,
            workers=settings.mining.workers,
            nonce_range=settings.mining.nonce_range,
        )
        self.chain_mgr.on_tip_changed(self._tip_changed)
        self._stop = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.api_url = ""

    @property
    def chain(self) -> Any:
        return self.chain_mgr.chain

    # -- lifecycle ---------------------------------------------------------------

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Run until :meth:`stop`; every background task lives in this group."""
        try:
            await self._start_api()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.miner.run(), name="miner")
                if self.settings.mining.enabled:
                    self.miner.set_enabled(True)
                log.info(
                    "node %s up: network %s, height %d, admin API %s",
                    self.identity.public_key.hex()[:16],
                    self.params.name,
                    self.chain.height,
                    self.api_url,
                )
                if ready is not None:
                    ready.set()
                await self._stop.wait()
                raise _Shutdown
        except* _Shutdown:
            pass
        finally:
            await self._shutdown()

    def stop(self) -> None:
        self._stop.set()

    async def _start_api(self) -> None:
        from p2pml.api.server import make_app

        host, _, port = self.settings.admin.listen.rpartition(":")
        self._runner = web.AppRunner(make_app(self), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, int(port))
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            why = (exc.strerror or str(exc)).rsplit(": ", 1)[-1]
            raise NetworkError(
                f"admin API cannot listen on {self.settings.admin.listen}: {why}"
            ) from None
        bound = self._runner.addresses[0]
        self.api_url = f"http://{bound[0]}:{bound[1]}"
        (self.data_dir / "api.url").write_text(self.api_url + "\n")

    async def _shutdown(self) -> None:
        t0 = time.monotonic()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.miner.close()
        self.store.close()
        if self.api_url:
            log.info("node stopped in %.2fs", time.monotonic() - t0)

    # -- chain wiring --------------------------------------------------------------

    def _template(self) -> Block:
        return self.chain_mgr.template(self.identity.public_key)

    async def _submit_mined(self, block: Block) -> None:
        update = await self.chain_mgr.submit_block(block, source="miner")
        if update.error is not None:
            log.warning("own block %s refused: %s", block.hash.hex()[:16], update.error)

    def _tip_changed(self, _update: ChainUpdate) -> None:
        self.miner.notify()

    async def mine(self, n: int) -> list[str]:
        return [h.hex() for h in await self.miner.mine_blocks(n)]

    # -- views for the admin API -----------------------------------------------------

    def status(self) -> dict[str, Any]:
        tip = self.chain.tip
        return {
            "version": __version__,
            "network": self.params.name,
            "peer_id": "",
            "public_key": self.identity.public_key.hex(),
            "height": tip.height,
            "tip": tip.hash.hex(),
            "chain_work": hex(tip.chain_work),
            "peers": 0,
            "mempool": 0,
            "mining": {
                "enabled": self.miner.enabled,
                "workers": self.miner.workers,
                "hash_rate": round(self.miner.stats.hash_rate),
                "blocks_found": self.miner.stats.blocks_found,
            },
            "uptime": round(time.time() - self.started, 1),
        }

    def peers(self) -> list[dict[str, Any]]:
        return []

    async def connect_peer(self, addr: str) -> dict[str, Any]:
        raise NetworkError("networking is not wired into the node yet")

    async def disconnect_peer(self, peer_id: str, ban_seconds: int) -> dict[str, Any]:
        raise NetworkError("networking is not wired into the node yet")

    def chain_headers(self, start: int, limit: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        h = min(start, self.chain.height)
        while h >= 0 and len(out) < limit:
            e = self.chain.at_height(h)
            out.append(entry_json(self.chain, e))
            h -= 1
        return out

    def chain_tips(self) -> list[dict[str, Any]]:
        tips = sorted(self.chain.tips(), key=lambda e: -e.chain_work)
        return [entry_json(self.chain, e) for e in tips]

    def block(self, ident: str) -> dict[str, Any] | None:
        if ident.isdigit() and len(ident) < 20:
            e = self.chain.at_height(int(ident))
            if e is None:
                return None
            h = e.hash
        else:
            try:
                h = parse_hash(ident)
            except DecodeError:
                return None
        blk = self.chain.get_block(h)
        return None if blk is None else block_json(self.chain, blk)

    def mempool(self) -> list[dict[str, Any]]:
        return []

    def balance(self, pubkey_hex: str) -> dict[str, Any]:
        try:
            key = bytes.fromhex(pubkey_hex)
        except ValueError:
            raise DecodeError("public key must be hex") from None
        if len(key) != 32:
            raise DecodeError("public key must be 32 bytes")
        return {"public_key": pubkey_hex, "balance": int(self.chain.state.get(balance_key(key), 0))}

    def metrics_text(self) -> str:
        m = self.chain_mgr.metrics
        lines = [
            "# TYPE p2pml_height gauge",
            f"p2pml_height {self.chain.height}",
            "# TYPE p2pml_blocks_accepted_total counter",
            f"p2pml_blocks_accepted_total {m.accepted}",
            "# TYPE p2pml_blocks_rejected_total counter",
        ]
        lines += [
            f'p2pml_blocks_rejected_total{{reason="{r}"}} {n}'
            for r, n in sorted(m.rejected.items())
        ]
        lines += [
            "# TYPE p2pml_reorgs_total counter",
            f"p2pml_reorgs_total {m.reorgs}",
            "# TYPE p2pml_hash_rate gauge",
            f"p2pml_hash_rate {self.miner.stats.hash_rate:.0f}",
        ]
        return "\n".join(lines) + "\n"


class _Shutdown(Exception):
    """Raised inside the supervisor to cancel every task in it."""


async def run_node(settings: Settings) -> None:
    """Run one node until SIGINT/SIGTERM."""
    import signal

    node = Node(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, node.stop)
    await node.run()
