"""Node: wires store, chain, miner, network, IPFS, training and the admin API.

One supervisor (an ``asyncio.TaskGroup`` in :meth:`Node.run`) owns every
background task. Shutdown runs in order: admin API, gossip, jobs, worker
pools, store.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from p2pml import __version__
from p2pml.api.render import block_json, entry_json
from p2pml.chain.encoding import MAX_TX_BYTES, decode_tx, encode_tx, parse_hash
from p2pml.chain.params import NetworkParams, dev_identity, params_for
from p2pml.chain.state import ChainUpdate
from p2pml.chain.tasks import ResultTx, TaskTx
from p2pml.chain.txrules import balance_key, handler_for
from p2pml.chain.types import Block
from p2pml.chainmgr import ChainManager
from p2pml.config import Settings, _check_multiaddr
from p2pml.crypto import Identity, load_or_create_identity
from p2pml.errors import (
    ConfigError,
    DatasetError,
    DecodeError,
    MissingDataError,
    NetworkError,
    P2PMLError,
    ValidationError,
)
from p2pml.ipfs import embedded_swarm_addrs, open_dataset_store
from p2pml.mempool import Mempool, PoolTx
from p2pml.mining.miner import Miner
from p2pml.ml.pool import TrainingPool
from p2pml.ml.trainer import Trainer
from p2pml.net import P2PService, TopicSpec
from p2pml.netbackend import HARMLESS, NodeBackend
from p2pml.store import BlockStore
from p2pml.verifier import Verifier
from p2pml.work import TaskService

# How long a block may wait for result data before it is dropped from memory.
MAX_WAIT_SECONDS = 600.0
RETRY_MIN, RETRY_MAX = 1.0, 30.0
STOP_STEP_TIMEOUT = 2.0
ANNOUNCE_INTERVAL = 0.1
MAX_RESULT_CHECKS = 256  # gossiped results being re-run at once (more are dropped)

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
        self.identity: Identity = (
            dev_identity(settings.node.dev_key)
            if settings.node.dev_key >= 0
            else load_or_create_identity(settings.node.key_file)
        )
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
        self.ipfs = open_dataset_store(settings.ipfs, self.data_dir)
        self.pool = TrainingPool(settings.training.workers)
        self.trainer = Trainer(
            self.ipfs, self.pool, settings.training, cache_dir=self.data_dir / "parsed"
        )
        self.verifier = Verifier(self.ipfs, self.trainer, parallel=settings.training.workers)
        self.chain.verdicts = self.verifier.verdict
        self.mempool = Mempool(self.params)
        self.tasks = TaskService(
            self.identity,
            self.chain_mgr,
            self.mempool,
            self.verifier,
            self.trainer,
            settings.training.enabled,
        )
        self.tasks.on_mempool_change = self.miner.notify
        self.tasks.publish = self._publish_tx
        self.backend = NodeBackend(self)
        self.p2p = P2PService(
            self.identity,
            self.params,
            self.backend,
            settings.p2p,
            bans=self.data_dir / "bans.sqlite",
            clock=self.chain_mgr.clock,
        )
        for kind, cls in (("tasks", TaskTx), ("results", ResultTx)):
            self.p2p.topics.register(
                TopicSpec(
                    kind=kind,
                    max_bytes=MAX_TX_BYTES,
                    decode=_tx_decoder(cls),
                    check=self._check_tx,
                    encode=encode_tx,
                )
            )
        self._announce = asyncio.Event()
        self._announced = b""
        self._result_checks: set[bytes] = set()
        self._result_check_slots = asyncio.Semaphore(2)
        self._stop_started = 0.0
        self._bulk_mining = False
        self.chain_mgr.on_tip_changed(self._tip_changed)
        self.chain_mgr.on_fatal = self._fatal
        self.fatal_error: BaseException | None = None
        self._stop = asyncio.Event()
        self._verify_wake = asyncio.Event()
        self._waiting_since: dict[bytes, float] = {}
        self._runner: web.AppRunner | None = None
        self._tg: asyncio.TaskGroup | None = None
        self.api_url = ""

    @property
    def chain(self) -> Any:
        return self.chain_mgr.chain

    # -- lifecycle ---------------------------------------------------------------

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Run until :meth:`stop`; every background task lives in this group."""
        try:
            await self._start_api()  # first: a busy port fails before anything starts
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                await self.p2p.start(supervisor=tg)
                await self.ipfs.start()
                # The training pool starts its workers at the first job: an
                # idle node does not carry scikit-learn processes around.
                # Written last: tools that wait for this file find a ready node.
                (self.data_dir / "api.url").write_text(self.api_url + "\n")
                self.tasks.spawn = self._spawn
                tg.create_task(self.miner.run(), name="miner")
                tg.create_task(self._verify_loop(), name="verifier")
                tg.create_task(self._announce_loop(), name="announce")
                if self.settings.mining.enabled:
                    self.miner.set_enabled(True)
                self.tasks.schedule_open_tasks()
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
                # Ordered: no new API requests, no gossip, then the jobs below.
                self._stop_started = time.monotonic()
                await self._step("admin API", self._stop_api())
                await self._step("gossip", self.p2p.stop())
                raise _Shutdown
        except* _Shutdown:
            pass
        except* P2PMLError as group:
            # A start-up failure inside the group: surface the first as itself.
            raise group.exceptions[0] from None
        finally:
            await self._shutdown()
        if self.fatal_error is not None:
            raise self.fatal_error

    def stop(self) -> None:
        self._stop.set()

    def _fatal(self, exc: BaseException) -> None:
        self.fatal_error = exc
        self.stop()

    async def _start_api(self) -> None:
        from p2pml.api.server import make_app

        host, _, port = self.settings.admin.listen.rpartition(":")
        self._runner = web.AppRunner(
            make_app(self), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
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

    def _spawn(self, coro: Any, name: str) -> None:
        """Start a job under the supervisor (its failure is logged, not fatal)."""
        if self._tg is None:
            coro.close()
            return

        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background job %s failed", name)

        self._tg.create_task(guarded(), name=name)

    async def _stop_api(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _step(self, what: str, aw: Any) -> None:
        """One shutdown step, bounded so one stuck part cannot hold the rest."""
        t0 = time.monotonic()
        try:
            await asyncio.wait_for(aw, STOP_STEP_TIMEOUT)
        except TimeoutError:
            log.warning("stopping %s took over %.0fs; going on", what, STOP_STEP_TIMEOUT)
        except Exception as exc:
            log.warning("stopping %s failed: %s", what, exc)
        log.debug("stopped %s in %.2fs", what, time.monotonic() - t0)

    async def _shutdown(self) -> None:
        t0 = self._stop_started or time.monotonic()
        (self.data_dir / "api.url").unlink(missing_ok=True)
        self._tg = None
        log.debug("background jobs stopped after %.2fs", time.monotonic() - t0)
        await self._step("admin API", self._stop_api())
        await self._step("gossip", self.p2p.stop())
        await self._step("miner", self.miner.close())
        await self._step("worker pool", self.pool.close())
        await self._step("ipfs", self.ipfs.close())
        self.store.close()
        if self.api_url:
            log.info("node stopped in %.2fs", time.monotonic() - t0)

    # -- chain wiring --------------------------------------------------------------

    def _template(self) -> Block:
        max_bytes = self.params.max_block_bytes - 4096  # room for header and coinbase
        txs, fees = self.mempool.select(self.chain, self.verifier.peek, max_bytes)
        return self.chain_mgr.template(self.identity.public_key, tuple(txs), fees)

    async def _submit_mined(self, block: Block) -> None:
        update = await self.chain_mgr.submit_block(block, source="miner")
        if update.error is not None:
            log.warning("own block %s refused: %s", block.hash.hex()[:16], update.error)
        self._after_update(update)
        if update.tip_changed and self.chain.tip.hash == block.hash and not self._bulk_mining:
            self._announced = block.hash
            try:
                await self.p2p.publish_block(block)
            except NetworkError as exc:  # gossip stops before the miner at shutdown
                log.debug("announcing own block %s failed: %s", block.hash.hex()[:16], exc)

    def _check_tx(self, tx: PoolTx) -> None:
        """Stateless checks before relay (runs in the libp2p thread: pure)."""
        handler_for(tx).check(tx, self.params)

    async def _publish_tx(self, kind: str, tx: PoolTx) -> None:
        try:
            await self.p2p.publish(kind, encode_tx(tx))
        except NetworkError as exc:
            log.warning("could not gossip %s %s: %s", kind, tx.id.hex()[:16], exc)

    def verify_gossiped_result(self, tx: ResultTx, peer_id: str) -> None:
        """Re-run a gossiped result in the background (bounded), then pool and
        gossip it; a false one costs its sender (honest nodes only gossip
        results they verified)."""
        if len(self._result_checks) >= MAX_RESULT_CHECKS or tx.id in self._result_checks:
            return  # overloaded or already at it: it can be sent again
        self._result_checks.add(tx.id)
        self._spawn(self._verify_result(tx, peer_id), "verify-result")

    async def _verify_result(self, tx: ResultTx, peer_id: str) -> None:
        try:
            async with self._result_check_slots:
                await self.tasks.submit_result(tx, peer_id)
        except MissingDataError:
            return
        except ValidationError as exc:
            if exc.reason not in HARMLESS:
                self.p2p.penalise(peer_id, f"invalid-result:{exc.reason}", 100)
            return
        finally:
            self._result_checks.discard(tx.id)
        await self._publish_tx("results", tx)

    async def submit_block(self, block: Block, source: str, requested: bool = True) -> ChainUpdate:
        update = await self.chain_mgr.submit_block(block, source=source, requested=requested)
        self._after_update(update)
        return update

    def _after_update(self, update: ChainUpdate, wake: bool = True) -> None:
        if update.waiting or self.verifier.wanted:
            now = time.monotonic()
            for h, _cid in update.waiting:
                self._waiting_since.setdefault(h, now)
            if wake:
                self._verify_wake.set()

    def _tip_changed(self, update: ChainUpdate) -> None:
        self.tasks.tip_changed(update)
        self.miner.notify()
        self._announce.set()

    def relayed(self, block_hash: bytes) -> None:
        """Gossip is relaying this block already: no need to announce it."""
        self._announced = block_hash

    async def _announce_loop(self) -> None:
        """Announce every new tip we connect (a supervisor task).

        Gossip relays only blocks its validator accepted; a tip reached by
        sync, or after a reorg, would otherwise reach our other peers only at
        their next status poll. Coalesced: only the latest tip is sent.
        """
        while True:
            await self._announce.wait()
            self._announce.clear()
            tip = self.chain.tip
            if tip.hash == self._announced or self._bulk_mining:
                continue
            block = self.chain.get_block(tip.hash)
            if block is None:
                continue
            self._announced = tip.hash
            try:
                await self.p2p.publish_block(block)
            except Exception as exc:  # a failed announce must not stop the node
                log.debug("announcing tip %s failed: %s", tip.hash.hex()[:16], exc)
            await asyncio.sleep(ANNOUNCE_INTERVAL)  # pacing, not synchronisation

    async def _verify_loop(self) -> None:
        """Verify what waiting blocks need, then let them connect (a supervisor task).

        New blocks wake it; while data is missing it retries with backoff
        (its own retries never wake it, so a block that cannot be verified
        does not spin it).
        """
        backoff = RETRY_MIN
        while True:
            timeout = backoff if self.chain.waiting else None
            try:
                await asyncio.wait_for(self._verify_wake.wait(), timeout)
            except TimeoutError:
                pass
            self._verify_wake.clear()
            try:
                backoff = await self._verify_pass(backoff)
            except Exception:  # a bug must not take the node down: log, back off
                log.exception("verification pass failed")
                backoff = RETRY_MAX

    async def _verify_pass(self, backoff: float) -> float:
        reqs = self.verifier.take_wanted()
        missing = await self.verifier.resolve(reqs) if reqs else 0
        if not self.chain.waiting:
            return RETRY_MIN
        before = self.chain.tip.hash
        update = await self.chain_mgr.retry_waiting()
        self._after_update(update, wake=False)
        progressed = self.chain.tip.hash != before or bool(update.rejected)
        if missing and not self.verifier.wanted:
            # Keep asking for what is missing, on the next (backed-off) pass.
            for r in reqs:
                if self.verifier.cached(r.tx.id, r.seed, r.audit) is None:
                    self.verifier.wanted[(r.tx.id, r.seed, r.audit)] = r
        self._expire_waiting()
        return RETRY_MIN if progressed else min(backoff * 2, RETRY_MAX)

    def _expire_waiting(self) -> None:
        now = time.monotonic()
        waiting = {e.hash for e in self.chain.waiting}
        for h in [h for h in self._waiting_since if h not in waiting]:
            del self._waiting_since[h]
        for e in list(self.chain.waiting):
            since = self._waiting_since.setdefault(e.hash, now)
            if now - since > MAX_WAIT_SECONDS:
                self.chain.waiting.discard(e)
                self._waiting_since.pop(e.hash, None)
                log.warning(
                    "block %s waited %.0fs for data: dropped from memory",
                    e.hash.hex()[:16],
                    now - since,
                )

    async def mine(self, n: int) -> list[str]:
        """Regtest: mine ``n`` blocks now. Only the last is gossiped (own
        publishes are paced); peers fetch its ancestors like any orphan's."""
        self._bulk_mining = True
        try:
            hashes = await self.miner.mine_blocks(n)
        finally:
            self._bulk_mining = False
        tip = self.chain.get_block(self.chain.tip.hash)
        if tip is not None and tip.hash in hashes:
            self._announced = tip.hash
            await self.p2p.publish_block(tip)
        return [h.hex() for h in hashes]

    # -- views for the admin API -----------------------------------------------------

    def status(self) -> dict[str, Any]:
        tip = self.chain.tip
        return {
            "version": __version__,
            "network": self.params.name,
            "peer_id": self.p2p.peer_id,
            "listen": self.p2p.listen_addrs(),
            "public_key": self.identity.public_key.hex(),
            "height": tip.height,
            "tip": tip.hash.hex(),
            "chain_work": hex(tip.chain_work),
            "peers": len(self.p2p.peers()),
            "banned": [b.peer_id for b in self.p2p.banned()],
            "mempool": len(self.mempool),
            "mining": {
                "enabled": self.miner.enabled,
                "workers": self.miner.workers,
                "hash_rate": round(self.miner.stats.hash_rate),
                "blocks_found": self.miner.stats.blocks_found,
            },
            "training": {
                "enabled": self.settings.training.enabled,
                "workers": self.settings.training.workers,
                "running_jobs": self.trainer.running_jobs,
                "jobs_done": self.tasks.jobs_done,
                "jobs_failed": self.tasks.jobs_failed,
            },
            "verification": {
                "verified": self.verifier.stats.verified,
                "failed": self.verifier.stats.failed,
                "blocks_waiting_for_data": len(self.chain.waiting),
            },
            "ipfs": {
                "mode": self.settings.ipfs.mode,
                "state": self.ipfs.state,
                "swarm": embedded_swarm_addrs(self.ipfs),
            },
            "uptime": round(time.time() - self.started, 1),
        }

    def peers(self) -> list[dict[str, Any]]:
        return [dataclasses.asdict(p) for p in self.p2p.peers()]

    async def connect_peer(self, addr: str) -> dict[str, Any]:
        problem = _check_multiaddr(addr)
        if problem or "/p2p/" not in addr:
            raise ValidationError("bad-multiaddr", problem or "address must end in /p2p/<peer id>")
        peer_id = await self.p2p.connect(addr)
        return {"peer_id": peer_id, "addr": addr}

    async def disconnect_peer(self, peer_id: str, ban_seconds: int) -> dict[str, Any]:
        if not is_peer_id(peer_id):
            raise ValidationError("bad-peer-id", f"{peer_id[:80]!r} is not a libp2p peer id")
        if not any(p.peer_id == peer_id for p in self.p2p.peers()) and not ban_seconds:
            raise LookupError(peer_id)
        await self.p2p.disconnect(peer_id, ban_seconds)
        return {"peer_id": peer_id, "banned_seconds": ban_seconds}

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
        if ident.isascii() and ident.isdigit() and len(ident) < 20:
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

    def mempool_view(self) -> list[dict[str, Any]]:
        return self.tasks.mempool_view()

    async def publish_task(self, body: dict[str, Any]) -> dict[str, Any]:
        tx = self.tasks.make_task(body)
        await self.tasks.submit_task(tx, "api")
        await self.tasks.publish("tasks", tx)
        return {"id": tx.id.hex()}

    async def add_dataset_file(self, path: Path) -> dict[str, Any]:
        try:
            cid = await self.ipfs.add(path)
        except DatasetError as exc:
            raise ValidationError("dataset-add-failed", str(exc)) from None
        return {"cid": cid, "size": path.stat().st_size}

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
            "# TYPE p2pml_max_reorg_depth gauge",
            f"p2pml_max_reorg_depth {m.max_reorg_depth}",
            "# TYPE p2pml_hash_rate gauge",
            f"p2pml_hash_rate {self.miner.stats.hash_rate:.0f}",
            "# TYPE p2pml_peers gauge",
            f"p2pml_peers {len(self.p2p.peers())}",
            "# TYPE p2pml_mempool_size gauge",
            f"p2pml_mempool_size {len(self.mempool)}",
            "# TYPE p2pml_training_jobs_total counter",
            f'p2pml_training_jobs_total{{outcome="done"}} {self.tasks.jobs_done}',
            f'p2pml_training_jobs_total{{outcome="failed"}} {self.tasks.jobs_failed}',
            "# TYPE p2pml_training_jobs_running gauge",
            f"p2pml_training_jobs_running {self.trainer.running_jobs}",
            "# TYPE p2pml_results_verified_total counter",
            f'p2pml_results_verified_total{{verdict="valid"}} {self.verifier.stats.verified}',
            f'p2pml_results_verified_total{{verdict="false"}} {self.verifier.stats.failed}',
            "# TYPE p2pml_blocks_waiting_for_data gauge",
            f"p2pml_blocks_waiting_for_data {len(self.chain.waiting)}",
        ]
        for name, value in sorted(getattr(self.ipfs, "stats", {}).items()):
            lines += [f"# TYPE p2pml_ipfs_{name}_total counter", f"p2pml_ipfs_{name}_total {value}"]
        for name, value in sorted(self.p2p.metrics().items()):
            metric = "p2pml_p2p_" + "".join(c if c.isalnum() else "_" for c in name)
            lines += [f"# TYPE {metric} counter", f"{metric} {value}"]
        return "\n".join(lines) + "\n"


def is_peer_id(text: str) -> bool:
    from libp2p.peer.id import ID

    try:
        return 32 <= len(text) < 128 and bool(ID.from_base58(text).to_bytes())
    except Exception:  # base58 and multihash raise several types
        return False


def _tx_decoder(cls: type) -> Any:
    def decode(data: bytes) -> Any:
        tx = decode_tx(data)
        if not isinstance(tx, cls):
            raise DecodeError(f"expected a {cls.__name__}")
        return tx

    return decode


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
