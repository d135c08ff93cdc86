"""The ledger: chain state views with undo, balances, and the block context.

Chain state is a key-value map (``bytes -> msgpack-able value``). A handler
reads and writes it only through a :class:`StateView`, which records the old
value of every key it touches; disconnecting a block replays that undo log
backwards. A new transaction type therefore brings its own checks and state
changes and gets undo for free.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from p2pml.chain.params import NetworkParams
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
    # Disputes resolving in this block ask this oracle (always the node's own:
    # unlike an inclusion verdict, either answer is valid, so a block connected
    # before cannot answer for it).
    dispute_verdict: VerdictOracle = no_verdicts
    challenges: int = 0  # challenges applied so far in this block
