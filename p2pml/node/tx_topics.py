"""The gossip topics of pool transactions: tasks, results, transfers, bonds,
attestations, challenges.

Each topic decodes only its own transaction type and runs the stateless
rules before relay (in the libp2p thread, so only pure checks).
"""

from __future__ import annotations

from collections.abc import Callable

from p2pml.chain.encoding import MAX_TX_BYTES, decode_tx, encode_tx
from p2pml.chain.params import NetworkParams
from p2pml.chain.txrules import handler_for
from p2pml.chain.types import (
    AttestTx,
    BondTx,
    ChallengeTx,
    PoolTx,
    ResultTx,
    TaskTx,
    TransferTx,
    UnbondTx,
    UpdateTx,
)
from p2pml.errors import DecodeError
from p2pml.net import TopicRegistry, TopicSpec

#: Gossip topic kind -> the pool transaction types it carries.
TX_KINDS: dict[str, tuple[type, ...]] = {
    "tasks": (TaskTx,),
    "results": (ResultTx,),
    "transfers": (TransferTx,),
    "bonds": (BondTx, UnbondTx),
    "challenges": (ChallengeTx,),
    "attests": (AttestTx,),
    "updates": (UpdateTx,),
}


def register_tx_topics(topics: TopicRegistry, params: NetworkParams) -> None:
    for kind in TX_KINDS:
        topics.register(
            TopicSpec(
                kind=kind,
                max_bytes=MAX_TX_BYTES,
                decode=_tx_decoder(kind),
                check=_check_tx(params),
                encode=encode_tx,
            )
        )


def _tx_decoder(kind: str) -> Callable[[bytes], PoolTx]:
    types = TX_KINDS[kind]

    def decode(data: bytes) -> PoolTx:
        tx = decode_tx(data)
        if not isinstance(tx, types) or not isinstance(tx, PoolTx):
            raise DecodeError(f"expected a {' or '.join(t.__name__ for t in types)}")
        return tx

    return decode


def _check_tx(params: NetworkParams) -> Callable[[PoolTx], None]:
    def check(tx: PoolTx) -> None:
        handler_for(tx).check(tx, params)

    return check
