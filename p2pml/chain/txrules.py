"""Per-transaction-type consensus rules and state changes.

Chain state is a key-value map (``bytes -> msgpack-able value``). A handler
reads and writes it only through a :class:`StateView`, which records the old
value of every key it touches; disconnecting a block replays that undo log
backwards. A new transaction type therefore brings its own checks and state
changes and gets undo for free.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from p2pml.chain.params import NetworkParams
from p2pml.chain.types import Allocation, Coinbase, Transaction
from p2pml.errors import ValidationError

_MISSING = object()

# Undo log: (key, value before the block; None means "was absent").
UndoLog = list[tuple[bytes, Any]]


def balance_key(pubkey: bytes) -> bytes:
    return b"bal:" + pubkey


class StateView:
    """A write overlay on the chain state that records what it changed."""

    def __init__(self, base: Mapping[bytes, Any]) -> None:
        self._base = base
        self.writes: dict[bytes, Any] = {}  # None = delete
        self._old: dict[bytes, Any] = {}

    def get(self, key: bytes, default: Any = None) -> Any:
        if key in self.writes:
            v = self.writes[key]
            return default if v is None else v
        return self._base.get(key, default)

    def put(self, key: bytes, value: Any) -> None:
        if key not in self._old:
            self._old[key] = self._base.get(key)
        self.writes[key] = value

    def delete(self, key: bytes) -> None:
        self.put(key, None)

    def undo_log(self) -> UndoLog:
        return list(self._old.items())

    def child(self) -> StateView:
        """A view over this one, for a change that may have to be thrown away."""
        return StateView(self)  # type: ignore[arg-type]

    def merge(self, child: StateView) -> None:
        for k, v in child.writes.items():
            self.put(k, v)

    # -- helpers shared by transaction types --------------------------------

    def balance(self, pubkey: bytes) -> int:
        return int(self.get(balance_key(pubkey), 0))

    def credit(self, pubkey: bytes, amount: int) -> None:
        if amount:
            self.put(balance_key(pubkey), self.balance(pubkey) + amount)

    def debit(self, pubkey: bytes, amount: int) -> None:
        bal = self.balance(pubkey)
        if bal < amount:
            raise ValidationError("insufficient-funds", f"balance {bal} < {amount}")
        self.put(balance_key(pubkey), (bal - amount) or None)


# (result tx, task record, audited?) -> "" valid, a reason if not, None if unknown
VerdictOracle = Callable[[Any, dict[str, Any], bool], str | None]


def no_verdicts(_tx: Any, _task: dict[str, Any], _audit: bool) -> str | None:
    return None


@dataclass
class BlockContext:
    """What a transaction may know about the block connecting it."""

    params: NetworkParams
    height: int
    block_hash: bytes
    time: int
    fees: int = 0
    verdict: VerdictOracle = no_verdicts


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


HANDLERS: dict[type, TxHandler] = {Coinbase: CoinbaseHandler(), Allocation: AllocationHandler()}

# Run after a block's transactions, before its coinbase (e.g. closing tasks).
BlockHook = Callable[[StateView, BlockContext], None]
BLOCK_HOOKS: list[BlockHook] = []


def register_block_hook(fn: BlockHook) -> None:
    if fn not in BLOCK_HOOKS:
        BLOCK_HOOKS.append(fn)


def handler_for(tx: Transaction) -> TxHandler:
    return HANDLERS[type(tx)]


def register_handler(cls: type, handler: TxHandler) -> None:
    HANDLERS[cls] = handler
