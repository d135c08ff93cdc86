"""JSON views of chain objects for the admin API (plain dicts, hex for bytes)."""

from __future__ import annotations

from typing import Any

from p2pml.chain.encoding import encode_block, tx_id
from p2pml.chain.index import IndexEntry
from p2pml.chain.state import ChainState
from p2pml.chain.types import (
    AttestTx,
    Block,
    BlockHeader,
    BondTx,
    Coinbase,
    ResultTx,
    RoundCloseTx,
    Transaction,
    TransferTx,
    UnbondTx,
    UpdateTx,
)


def header_json(h: BlockHeader) -> dict[str, Any]:
    return {
        "hash": h.hash.hex(),
        "version": h.version,
        "height": h.height,
        "prev_hash": h.prev_hash.hex(),
        "tx_root": h.tx_root.hex(),
        "time": h.time,
        "bits": f"{h.bits:08x}",
        "nonce": h.nonce,
    }


def entry_json(chain: ChainState, e: IndexEntry) -> dict[str, Any]:
    out = header_json(e.header)
    out["chain_work"] = hex(e.chain_work)
    out["status"] = chain.branch_status(e)
    return out


def tx_json(tx: Transaction) -> dict[str, Any]:
    out: dict[str, Any] = {"id": tx_id(tx).hex()}
    if isinstance(tx, Coinbase):
        out.update(
            type="coinbase",
            height=tx.height,
            miner=tx.miner.hex(),
            amount=tx.amount,
            extra=tx.extra.hex(),
        )
    elif isinstance(tx, TransferTx):
        out.update(
            type="transfertx",
            sender=tx.sender.hex(),
            recipient=tx.recipient.hex(),
            amount=tx.amount,
            fee=tx.fee,
        )
    elif isinstance(tx, BondTx):
        out.update(type="bondtx", trainer=tx.trainer.hex(), amount=tx.amount, fee=tx.fee)
    elif isinstance(tx, UnbondTx):
        out.update(type="unbondtx", trainer=tx.trainer.hex(), fee=tx.fee)
    elif isinstance(tx, ResultTx):
        out.update(type="resulttx", trainer=tx.trainer.hex(), task=tx.task_id.hex(), fee=tx.fee)
    elif isinstance(tx, AttestTx):
        out.update(
            type="attesttx",
            attester=tx.attester.hex(),
            result=tx.result_id.hex(),
            passed=tx.passed,
            fee=tx.fee,
        )
    elif isinstance(tx, UpdateTx):
        out.update(
            type="updatetx",
            participant=tx.participant.hex(),
            task=tx.task_id.hex(),
            round=tx.round,
            n_samples=tx.n_samples,
            update_cid=tx.update_cid,
            fee=tx.fee,
        )
    elif isinstance(tx, RoundCloseTx):
        out.update(
            type="roundclosetx",
            task=tx.task_id.hex(),
            round=tx.round,
            model_hash=tx.model_hash.hex(),
            gains=list(tx.gains),
        )
    else:  # pragma: no cover - every type renders itself once it exists
        out["type"] = type(tx).__name__.lower()
    return out


def block_json(chain: ChainState, block: Block) -> dict[str, Any]:
    e = chain.entry(block.hash)
    out: dict[str, Any] = {
        "header": header_json(block.header),
        "size": len(encode_block(block)),
        "txs": [tx_json(t) for t in block.txs],
    }
    if e is not None:
        out["status"] = chain.branch_status(e)
        out["chain_work"] = hex(e.chain_work)
        tip = chain.tip
        out["confirmations"] = tip.height - e.height + 1 if chain.in_active_chain(e) else 0
    return out
