"""TaskService: admits tasks and results into the mempool.

Tasks and results come from the admin API, from gossip and from this node's
own trainer; each must pass the consensus rules against the tip (see
:class:`~p2pml.node.mempool.Mempool`). A result whose verdict is unknown
passes the cheap checks (metric recomputed on the holdout, no re-training)
before it may enter: inclusion is optimistic; re-training is for audit
committees (:mod:`p2pml.node.audits`) and disputes
(:mod:`p2pml.node.challenges`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from p2pml.chain.index import ChainUpdate
from p2pml.chain.tasks import task_key
from p2pml.chain.types import ResultTx, TaskTx
from p2pml.crypto import Identity
from p2pml.errors import MissingDataError, ValidationError
from p2pml.node.mempool import Mempool
from p2pml.node.pool_entry import PoolEntry
from p2pml.node.ports import ChainAccess, ResultVerifier, TxRelay
from p2pml.node.verifier import Request


class TaskService:
    def __init__(
        self,
        identity: Identity,
        chain: ChainAccess,
        mempool: Mempool,
        verifier: ResultVerifier,
        relay: TxRelay,
        on_pool_change: Callable[[], None],
    ) -> None:
        self._chain = chain
        self._mempool = mempool
        self._verifier = verifier
        self._on_pool_change = on_pool_change
        self._entry = PoolEntry(identity, chain, mempool, verifier, relay, on_pool_change)
        chain.on_tip_changed(self._reconcile)

    def _reconcile(self, update: ChainUpdate) -> None:
        """After a tip change: the pool drops what blocks included or made
        invalid, and takes back what a reorg disconnected."""
        chain = self._chain.chain
        connected = [b for h, _ in update.connected if (b := chain.get_block(h)) is not None]
        disconnected = [b for h in update.disconnected if (b := chain.get_block(h)) is not None]
        self._mempool.reconcile(chain, self._verifier.peek, connected, disconnected)
        self._on_pool_change()

    async def publish(self, order: TaskTx) -> TaskTx:
        """Sign ``order`` as its publisher (with a fresh nonce), pool it and
        gossip it (ValidationError if it may not enter the pool)."""

        def unsigned(publisher: bytes, nonce: int) -> TaskTx:
            return dataclasses.replace(order, publisher=publisher, nonce=nonce, signature=b"")

        return await self._entry.publish_own(unsigned, self.submit_task)

    async def submit_task(self, tx: TaskTx, source: str) -> None:
        """Pool a task (ValidationError with the reason if it may not enter)."""
        self._entry.admit(tx)
        self._entry.entered(f"task {tx.id.hex()[:16]}", source)

    async def submit_result(
        self, tx: ResultTx, source: str, verify: bool = True, background: bool = False
    ) -> None:
        """Check (the cheap checks) and pool a result; ValidationError if false.

        MissingDataError means the model or dataset cannot be fetched now,
        or (``verify=False``) that the result still needs re-running.
        ``background``: a gossiped result, checked behind block verification.
        """
        try:
            self._entry.admit(tx)
        except MissingDataError:
            if not verify:
                raise
            task = self._chain.chain.state.get(task_key(tx.task_id))
            assert task is not None  # the handler checks the task before asking
            req = Request(tx, task["spec"], task["seed"], False)  # the cheap checks
            verdict = await self._verifier.check(req, background)
            if verdict is None:
                raise
            if verdict:
                raise ValidationError(verdict, "result failed verification") from None
            self._entry.admit(tx)
        self._entry.entered(f"result {tx.id.hex()[:16]} for task {tx.task_id.hex()[:16]}", source)
