"""Which handler checks and applies each transaction type.

A handler's ``check`` is stateless (signatures, ranges: safe to run before
relaying gossip); ``apply`` runs in a block's context against a
:class:`~p2pml.chain.ledger.StateView`. The table is static: every
transaction type of the protocol is listed here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from p2pml.chain.audits import AttestHandler, draw_due_audits
from p2pml.chain.bonds import BondHandler, UnbondHandler, register_bond, release_due_bonds
from p2pml.chain.disputes import ChallengeHandler, open_dispute, resolve_due_disputes
from p2pml.chain.federated_rounds import RoundCloseHandler, UpdateHandler
from p2pml.chain.ledger import BlockContext, StateView
from p2pml.chain.params import NetworkParams
from p2pml.chain.payouts import pay_due_tasks
from p2pml.chain.tasks import ResultHandler, TaskHandler, close_due_tasks
from p2pml.chain.transfers import TransferHandler
from p2pml.chain.types import (
    Allocation,
    AttestTx,
    BondTx,
    ChallengeTx,
    Coinbase,
    ResultTx,
    RoundCloseTx,
    TaskTx,
    Transaction,
    TransferTx,
    UnbondTx,
    UpdateTx,
)
from p2pml.errors import ValidationError


class TxHandler(Protocol):
    def check(self, tx: Any, params: NetworkParams) -> None:
        """Stateless checks (schema ranges, signatures); raise ValidationError."""

    def apply(self, tx: Any, view: StateView, ctx: BlockContext) -> None:
        """Contextual checks and state changes; raise ValidationError."""


class CoinbaseHandler:
    def check(self, tx: Coinbase, params: NetworkParams) -> None:
        pass  # structure is checked by the block rules (first, only one, height)

    def apply(self, tx: Coinbase, view: StateView, ctx: BlockContext) -> None:
        expected = ctx.params.coinbase_reward + ctx.fees
        if tx.amount != expected:
            raise ValidationError(
                "bad-coinbase-amount", f"pays {tx.amount}, reward plus fees is {expected}"
            )
        view.credit(tx.miner, tx.amount)


class AllocationHandler:
    def check(self, tx: Allocation, params: NetworkParams) -> None:
        pass  # the block rules refuse allocations outside genesis

    def apply(self, tx: Allocation, view: StateView, ctx: BlockContext) -> None:
        if ctx.height != 0:
            raise ValidationError("bad-allocation", "allocations exist only in genesis")
        view.credit(tx.pubkey, tx.amount)
        if tx.bond:
            register_bond(view, tx.pubkey, tx.bond, 0)


HANDLERS: dict[type, TxHandler] = {
    Coinbase: CoinbaseHandler(),
    Allocation: AllocationHandler(),
    TaskTx: TaskHandler(),
    ResultTx: ResultHandler(),
    TransferTx: TransferHandler(),
    BondTx: BondHandler(),
    UnbondTx: UnbondHandler(),
    ChallengeTx: ChallengeHandler(),
    AttestTx: AttestHandler(on_fail=open_dispute),
    UpdateTx: UpdateHandler(),
    RoundCloseTx: RoundCloseHandler(),
}

# Run after a block's transactions, before its coinbase, in this order:
# resolve the disputes due (so what follows sees their outcome), draw the
# audits this block is the beacon of (a voided winner is no longer drawn as
# one), close the tasks due, pay those whose window ends, release bonds.
BlockHook = Callable[[StateView, BlockContext], None]
BLOCK_HOOKS: tuple[BlockHook, ...] = (
    resolve_due_disputes,
    draw_due_audits,
    close_due_tasks,
    pay_due_tasks,
    release_due_bonds,
)


def handler_for(tx: Transaction) -> TxHandler:
    return HANDLERS[type(tx)]
