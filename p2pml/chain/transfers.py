"""The consensus rules of transfers: coins that move between keys.

* ``TransferTx`` (tag 4): ``sender`` pays ``amount`` to ``recipient`` and
  ``fee`` to the miner, signed by ``sender`` for this network.
* Replay: the chain records every transfer id it connects (``xfer:<id>``)
  and refuses one it has seen, as it does a task id; ``nonce`` lets a
  sender make the same payment twice on purpose. Reorgs undo the record
  with the balances (undo-logged ``StateView``).
* A transfer to oneself is refused: it moves nothing, and would only let a
  key pay fees to fill blocks with no-ops.
"""

from __future__ import annotations

from p2pml.chain.ledger import BlockContext, StateView
from p2pml.chain.params import NetworkParams
from p2pml.chain.types import DOMAIN_TRANSFER, TransferTx, signed_payload
from p2pml.crypto import verify
from p2pml.errors import ValidationError


def transfer_key(transfer_id: bytes) -> bytes:
    return b"xfer:" + transfer_id


class TransferHandler:
    def check(self, tx: TransferTx, params: NetworkParams) -> None:
        payload = signed_payload(params.genesis_hash, tx.unsigned_wire())
        if not verify(tx.sender, DOMAIN_TRANSFER, payload, tx.signature):
            raise ValidationError("bad-transfer-sig", "signature does not match the sender")
        if tx.amount < 1:
            raise ValidationError("bad-transfer-amount", "amount must be at least 1")
        if tx.fee < params.min_transfer_fee:
            raise ValidationError("bad-transfer-fee", f"fee {tx.fee} < {params.min_transfer_fee}")
        if tx.recipient == tx.sender:
            raise ValidationError("bad-transfer-self", "sender and recipient are the same key")

    def apply(self, tx: TransferTx, view: StateView, ctx: BlockContext) -> None:
        key = transfer_key(tx.id)
        if view.get(key) is not None:
            raise ValidationError("duplicate-transfer", "transfer already in the chain")
        view.debit(tx.sender, tx.amount + tx.fee)  # insufficient-funds
        view.credit(tx.recipient, tx.amount)
        ctx.fees += tx.fee
        view.put(key, ctx.height)
