"""Node: builds the services, runs them under one supervisor, stops them in order.

Every service takes its dependencies by constructor (see
:mod:`p2pml.node.ports`); the node only wires them. One ``asyncio.TaskGroup``
owns every background task. Stopping runs in order: admin API, block
production and gossip out, background jobs, the network, worker pools,
IPFS, store. Work in flight during a stop (a block just found, a round just
trained) is stored or dropped, never an error: a stop exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Any

from p2pml import __version__
from p2pml.api.ports import AdminContext
from p2pml.api.server import AdminServer
from p2pml.chain.params import NetworkParams, dev_identity, params_for
from p2pml.chain.types import ResultTx
from p2pml.config import Settings
from p2pml.crypto import Identity, load_or_create_identity
from p2pml.errors import P2PMLError
from p2pml.ipfs import open_dataset_store
from p2pml.ml.dask_pool import DaskPool
from p2pml.ml.executor import make_pool
from p2pml.ml.trainer import Trainer
from p2pml.net import P2PService
from p2pml.node import runtime
from p2pml.node.admin_token import load_or_create_token
from p2pml.node.audits import AuditService
from p2pml.node.bonds import BondService
from p2pml.node.chain_manager import ChainManager
from p2pml.node.challenges import ChallengeService
from p2pml.node.federated import FederatedService
from p2pml.node.federated_verifier import FederatedVerifier
from p2pml.node.gossip import GossipHandler
from p2pml.node.mempool import Mempool
from p2pml.node.mining import MiningService
from p2pml.node.pins import PinService
from p2pml.node.relay import Relay
from p2pml.node.tasks import TaskService
from p2pml.node.training import TrainingService
from p2pml.node.transfers import TransferService
from p2pml.node.tx_topics import register_tx_topics
from p2pml.node.verification import VerificationService
from p2pml.node.verifier import Verifier
from p2pml.store import BlockStore
from p2pml.supervisor import Supervisor

STOP_STEP_TIMEOUT = 2.0

log = logging.getLogger(__name__)


class Node:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.params: NetworkParams = runtime.with_regtest_runtime(
            params_for(settings.node.network), settings.node.regtest_runtime
        )
        # First: a node that may not judge results stops before touching anything.
        self.validation = runtime.validation_mode(self.params, settings.node.validate_results)
        follower = self.validation == runtime.FOLLOWER
        self.data_dir = settings.node.data_dir
        assert settings.node.key_file is not None and settings.admin.token_file is not None
        self.identity: Identity = (
            dev_identity(settings.node.dev_key)
            if settings.node.dev_key >= 0
            else load_or_create_identity(settings.node.key_file)
        )
        token = load_or_create_token(settings.admin.token_file)
        offset = settings.node.clock_offset_seconds
        self.fatal_error: BaseException | None = None
        self._stop = asyncio.Event()
        self._jobs = Supervisor(log)

        self.store = BlockStore.open(self.data_dir / "chain.sqlite", self.params)
        self.ipfs = open_dataset_store(settings.ipfs, self.data_dir)
        self.pool = make_pool(settings.training)
        trainer = Trainer(self.ipfs, self.pool, settings.training, self.data_dir / "parsed")
        self.verifier = Verifier(self.ipfs, trainer, parallel=settings.training.workers)
        # Updates and round closes of federated tasks; results pass through.
        self.fed_verifier = FederatedVerifier(
            self.verifier, self.ipfs, self.pool, settings.training, self.data_dir / "parsed"
        )
        self.chain = ChainManager(
            self.params,
            self.store,
            clock=lambda: time.time() + offset,
            # A follower takes results in blocks on the chain's work.
            verdicts=_on_the_chains_work if follower else self.fed_verifier.verdict,
            on_fatal=self._fatal,
        )
        self.p2p = P2PService(
            self.identity,
            self.params,
            settings.p2p,
            bans=self.data_dir / "bans.sqlite",
            clock=self.chain.clock,
        )
        register_tx_topics(self.p2p.topics, self.params)
        self.mempool = Mempool(self.params)
        self.relay = Relay(self.chain, self.p2p)
        self.mining = MiningService(
            self.identity,
            self.chain,
            self.mempool,
            self.fed_verifier.peek,
            self.relay,
            settings.mining,
            worker_memory_mb=settings.training.worker_memory_mb,
            extra_txs=lambda txs: self.federated.closes(txs),
        )
        self.federated = FederatedService(
            self.identity,
            self.chain,
            self.mempool,
            self.fed_verifier,
            self.relay,
            self.pool,
            settings.training,
            self._jobs.spawn,
            self.mining.notify,
            settings.federated,
            gossip=self.p2p,
        )
        self.tasks = TaskService(
            self.identity,
            self.chain,
            self.mempool,
            self.fed_verifier,
            self.relay,
            self.mining.notify,
        )
        self.training = TrainingService(
            self.identity,
            self.chain,
            trainer,
            self.tasks,
            self.relay,
            self._jobs.spawn,
            settings.training,
        )
        self.verification = VerificationService(
            self.chain, self.fed_verifier, self.tasks, self.relay, self.p2p, self._jobs.spawn
        )
        self.pins = PinService(
            self.chain, self.ipfs, self.identity.public_key, settings.ipfs.pin_retention_blocks
        )
        self.transfers = TransferService(
            self.identity,
            self.chain,
            self.mempool,
            self.fed_verifier,
            self.relay,
            self.mining.notify,
        )
        self.bonds = BondService(
            self.identity,
            self.chain,
            self.mempool,
            self.fed_verifier,
            self.relay,
            self.mining.notify,
            self._jobs.spawn,
            auto_bond=settings.training.enabled and settings.training.auto_bond,
        )
        self.challenges = ChallengeService(
            self.identity,
            self.chain,
            self.mempool,
            self.verifier,
            self.relay,
            self.mining.notify,
            self._jobs.spawn,
            # A follower judges no result: it cannot watch them either.
            watchtower=settings.verification.challenge_bad and not follower,
        )
        self.audits = AuditService(
            self.identity,
            self.chain,
            self.mempool,
            self.verifier,
            self.relay,
            self.mining.notify,
            self._jobs.spawn,
            enabled=settings.node.attest and not follower,
        )
        self.gossip = GossipHandler(
            self.chain,
            self.tasks,
            self.verification,
            self.relay,
            self.p2p,
            self.transfers,
            judge_results=not follower,
            bonds=self.bonds,
            challenges=self.challenges,
            audits=self.audits,
            federated=self.federated,
        )
        self.api = AdminServer(
            AdminContext(
                settings=settings,
                version=__version__,
                public_key=self.identity.public_key,
                started=time.time(),
                token=token,
                data_dir=self.data_dir,
                chain=self.chain,
                peers=self.p2p,
                mempool=self.mempool,
                tasks=self.tasks,
                transfers=self.transfers,
                training=self.training,
                verification=self.verifier.stats,
                mining=self.mining,
                datasets=self.ipfs,
                result_checks=self.verification.counts,
                executor=self.pool,
                pins=self.pins.stats,
                validation=runtime.status(self.params, self.validation),
                bonds=self.bonds,
                challenges=self.challenges,
                audits=self.audits.counts,
                federated=self.federated,
            )
        )

    @property
    def api_url(self) -> str:
        return self.api.url

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Run until :meth:`stop`; every background task lives in this group."""
        try:
            await self.api.start()  # first: a busy port fails before anything starts
            async with asyncio.TaskGroup() as tg:
                self._jobs.attach(tg)
                await self.p2p.start(self.gossip, supervisor=tg)
                await self.ipfs.start()
                # The training pool starts its workers at the first job: an
                # idle node does not carry scikit-learn processes around.
                tg.create_task(self.mining.run(), name="miner")
                tg.create_task(self.verification.run(), name="verifier")
                tg.create_task(self.relay.run(), name="announce")
                if isinstance(self.pool, DaskPool):  # a scheduler down now is not fatal
                    tg.create_task(self.pool.keep_connected(), name="dask")
                tg.create_task(self.pins.run(), name="pins")
                self.training.schedule_open_tasks()
                self.federated.start()
                self.bonds.start()
                self.audits.start()
                # Written last: tools that wait for this file find a ready node.
                (self.data_dir / "api.url").write_text(self.api.url + "\n")
                log.info(
                    "node %s up: network %s, height %d, admin API %s, %s",
                    self.identity.public_key.hex()[:16],
                    self.params.name,
                    self.chain.chain.height,
                    self.api.url,
                    self.validation,
                )
                if self.validation == runtime.FOLLOWER:
                    log.warning(
                        "follower: results in blocks are taken on the chain's work, not re-run"
                    )
                if ready is not None:
                    ready.set()
                await self._stop.wait()
                # Ordered: no new requests, no new blocks or gossip out, no
                # jobs, then the network; the group's loops are cancelled last.
                await self._step("admin API", self.api.stop())
                self.mining.stop()
                self.relay.stop()
                self._jobs.close()
                self.verifier.close()
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

    async def _step(self, what: str, aw: Awaitable[None]) -> None:
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
        t0 = time.monotonic()
        (self.data_dir / "api.url").unlink(missing_ok=True)
        self._jobs.close()
        self.verifier.close()
        self.relay.stop()
        await self._step("admin API", self.api.stop())
        await self._step("gossip", self.p2p.stop())
        await self._step("miner", self.mining.close())
        await self._step("worker pool", self.pool.close())
        await self._step("ipfs", self.ipfs.close())
        self.store.close()
        if self.api.url:
            log.info("node stopped in %.2fs", time.monotonic() - t0)


def _on_the_chains_work(_tx: ResultTx, _task: dict[str, Any], _audit: bool) -> str:
    """A follower's verdict on every result in a block: valid."""
    return ""


class _Shutdown(Exception):
    """Raised inside the supervisor to cancel every task in it."""


async def run_node(settings: Settings) -> None:
    """Run one node until SIGINT/SIGTERM."""
    import signal

    # A parent may hand us SIGINT blocked (seen from a test runner's worker:
    # the node then ignored Ctrl-C); unblock before any thread inherits the mask.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    node = Node(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, node.stop)
    await node.run()
