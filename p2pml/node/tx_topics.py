"""The gossip topics of pool transactions: tasks, results and transfers.

Each topic decodes only its own transaction type and runs the stateless
rules before relay (in the libp2p thread, so only pure checks).
"""

from __future__ import annotations

from collections.abc import Callable

from p2pml.chain.encoding import MAX_TX_BYTES, decode_tx, encode_tx
from p2pml.chain.params import NetworkParams
from p2pml.chain.txrules import handler_for
from p2pml.chain.types import PoolTx, ResultTx, TaskTx, TransferTx
from p2pml.errors import DecodeError
from p2pml.net import TopicRegistry, TopicSpec

#: Gossip topic kind -> the pool transaction type it carries.
TX_KINDS: dict[str, type] = {"tasks": TaskTx, "results": ResultTx, "transfers": TransferTx}


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
    cls = TX_KINDS[kind]

    def decode(data: bytes) -> PoolTx:
        tx = decode_tx(data)
        if not isinstance(tx, cls) or not isinstance(tx, PoolTx):
            raise DecodeError(f"expected a {cls.__name__}")
        return tx

    return decode


def _check_tx(params: NetworkParams) -> Callable[[PoolTx], None]:
    def check(tx: PoolTx) -> None:
        handler_for(tx).check(tx, params)

    return check
