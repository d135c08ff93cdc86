"""Canonical msgpack encoding of transactions and blocks.

Wire layout (msgpack arrays, never maps, smallest integer encodings):

* transaction: ``[tag, field...]`` as each type's ``to_wire`` in
  :mod:`p2pml.chain.types` writes it: coinbase ``[0, height, miner(bin32),
  amount, extra(bin<=64)]``; task ``[1, spec, bounty, fee, deadline,
  result_reward, max_results, publisher, nonce, signature]``; result ``[2,
  task_id, seed, round, trainer, metric(float64), model_cid, train_rows,
  train_ms, signature]``; allocation (genesis only) ``[3, pubkey, amount]``;
  transfer ``[4, sender(bin32), recipient(bin32), amount, fee, nonce,
  signature(bin64)]``; bond ``[5, trainer, amount, fee, nonce, signature]``;
  unbond ``[6, trainer, fee, nonce, signature]``; attest ``[7,
  attester(bin32), result_id(bin32), passed(bool), fee, signature(bin64)]``;
  challenge ``[8, challenger(bin32), result_id(bin32), fee, nonce,
  signature(bin64)]``.
* block: ``[header(bin 92), [transaction...]]``.

A transaction id is ``sha256d`` of its canonical bytes. Decoding re-encodes
and demands byte equality, so every object has exactly one encoding (no
malleability), and it raises only :class:`~p2pml.errors.DecodeError`. Size
limits are checked before parsing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from p2pml.chain.hashing import HASH_SIZE, sha256d
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.types import (
    HEADER_SIZE,
    MAX_GAIN,
    MAX_GAINS,
    TAG_ALLOCATION,
    TAG_ATTEST,
    TAG_BOND,
    TAG_CHALLENGE,
    TAG_COINBASE,
    TAG_RESULT,
    TAG_ROUND_CLOSE,
    TAG_TASK,
    TAG_TRANSFER,
    TAG_UNBOND,
    TAG_UPDATE,
    Allocation,
    AttestTx,
    Block,
    BlockHeader,
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
    packb,
)
from p2pml.crypto import SIGNATURE_SIZE
from p2pml.errors import DecodeError

MAX_EXTRA = 64
PUBKEY_SIZE = 32
# Generous absolute ceiling; networks set a lower max block size in params.
MAX_BLOCK_BYTES_HARD = 4 * 1024 * 1024
MAX_TXS_HARD = 20_000
MAX_TX_BYTES = 64 * 1024
MAX_CID = 128

U32 = 2**32 - 1
U64 = 2**64 - 1


def unpackb(data: bytes, max_bytes: int) -> Any:
    """Parse msgpack with every container bounded; only DecodeError escapes."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError("expected bytes")
    if len(data) > max_bytes:
        raise DecodeError(f"message of {len(data)} bytes is over the {max_bytes} byte limit")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_bin_len=max_bytes,
            max_str_len=max_bytes,
            max_array_len=min(max_bytes, MAX_TXS_HARD + 16),
            max_map_len=1024,
            max_ext_len=0,
        )
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises many types; none may escape
        raise DecodeError(f"malformed msgpack: {type(exc).__name__}") from None


def expect_int(v: Any, name: str, lo: int = 0, hi: int = U64) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise DecodeError(f"{name}: expected integer in [{lo}, {hi}]")
    return v


def expect_bytes(v: Any, name: str, size: int | None = None, max_size: int = 1 << 20) -> bytes:
    if type(v) is not bytes:
        raise DecodeError(f"{name}: expected bytes")
    if size is not None and len(v) != size:
        raise DecodeError(f"{name}: expected {size} bytes, got {len(v)}")
    if len(v) > max_size:
        raise DecodeError(f"{name}: over {max_size} bytes")
    return v


def expect_list(v: Any, name: str, length: int | None = None) -> list[Any]:
    if type(v) is not list:
        raise DecodeError(f"{name}: expected array")
    if length is not None and len(v) != length:
        raise DecodeError(f"{name}: expected {length} items, got {len(v)}")
    return v


# -- transactions -----------------------------------------------------------


def _coinbase_from_wire(f: list[Any]) -> Coinbase:
    expect_list(f, "coinbase", 5)
    return Coinbase(
        height=expect_int(f[1], "coinbase.height", hi=U32),
        miner=expect_bytes(f[2], "coinbase.miner", PUBKEY_SIZE),
        amount=expect_int(f[3], "coinbase.amount"),
        extra=expect_bytes(f[4], "coinbase.extra", max_size=MAX_EXTRA),
    )


def _alloc_from_wire(f: list[Any]) -> Allocation:
    expect_list(f, "allocation", 4)
    return Allocation(
        pubkey=expect_bytes(f[1], "allocation.pubkey", PUBKEY_SIZE),
        amount=expect_int(f[2], "allocation.amount"),
        bond=expect_int(f[3], "allocation.bond"),
    )


def _task_from_wire(f: list[Any]) -> TaskTx:
    expect_list(f, "task", 10)
    return TaskTx(
        spec=TaskSpec.from_wire(f[1]),
        bounty=expect_int(f[2], "task.bounty"),
        fee=expect_int(f[3], "task.fee"),
        deadline=expect_int(f[4], "task.deadline", hi=U32),
        result_reward=expect_int(f[5], "task.result_reward"),
        max_results=expect_int(f[6], "task.max_results", hi=U32),
        publisher=expect_bytes(f[7], "task.publisher", PUBKEY_SIZE),
        nonce=expect_int(f[8], "task.nonce"),
        signature=expect_bytes(f[9], "task.signature", SIGNATURE_SIZE),
    )


def _result_from_wire(f: list[Any]) -> ResultTx:
    expect_list(f, "result", 11)
    if type(f[5]) is not float:
        raise DecodeError("result.metric: expected a float")
    if type(f[6]) is not str or len(f[6]) > MAX_CID:
        raise DecodeError("result.model_cid: expected a short string")
    return ResultTx(
        task_id=expect_bytes(f[1], "result.task_id", 32),
        seed=expect_bytes(f[2], "result.seed", 32),
        round=expect_int(f[3], "result.round", hi=U32),
        trainer=expect_bytes(f[4], "result.trainer", PUBKEY_SIZE),
        metric=f[5],
        model_cid=f[6],
        train_rows=expect_int(f[7], "result.train_rows", hi=U32),
        train_ms=expect_int(f[8], "result.train_ms", hi=2**40),
        fee=expect_int(f[9], "result.fee"),
        signature=expect_bytes(f[10], "result.signature", SIGNATURE_SIZE),
    )


def _transfer_from_wire(f: list[Any]) -> TransferTx:
    expect_list(f, "transfer", 7)
    return TransferTx(
        sender=expect_bytes(f[1], "transfer.sender", PUBKEY_SIZE),
        recipient=expect_bytes(f[2], "transfer.recipient", PUBKEY_SIZE),
        amount=expect_int(f[3], "transfer.amount"),
        fee=expect_int(f[4], "transfer.fee"),
        nonce=expect_int(f[5], "transfer.nonce"),
        signature=expect_bytes(f[6], "transfer.signature", SIGNATURE_SIZE),
    )


def _bond_from_wire(f: list[Any]) -> BondTx:
    expect_list(f, "bond", 6)
    return BondTx(
        trainer=expect_bytes(f[1], "bond.trainer", PUBKEY_SIZE),
        amount=expect_int(f[2], "bond.amount"),
        fee=expect_int(f[3], "bond.fee"),
        nonce=expect_int(f[4], "bond.nonce"),
        signature=expect_bytes(f[5], "bond.signature", SIGNATURE_SIZE),
    )


def _unbond_from_wire(f: list[Any]) -> UnbondTx:
    expect_list(f, "unbond", 5)
    return UnbondTx(
        trainer=expect_bytes(f[1], "unbond.trainer", PUBKEY_SIZE),
        fee=expect_int(f[2], "unbond.fee"),
        nonce=expect_int(f[3], "unbond.nonce"),
        signature=expect_bytes(f[4], "unbond.signature", SIGNATURE_SIZE),
    )


def _challenge_from_wire(f: list[Any]) -> ChallengeTx:
    expect_list(f, "challenge", 6)
    return ChallengeTx(
        challenger=expect_bytes(f[1], "challenge.challenger", PUBKEY_SIZE),
        result_id=expect_bytes(f[2], "challenge.result_id", HASH_SIZE),
        fee=expect_int(f[3], "challenge.fee"),
        nonce=expect_int(f[4], "challenge.nonce"),
        signature=expect_bytes(f[5], "challenge.signature", SIGNATURE_SIZE),
    )


def _attest_from_wire(f: list[Any]) -> AttestTx:
    expect_list(f, "attest", 6)
    if type(f[3]) is not bool:
        raise DecodeError("attest.passed: expected a boolean")
    return AttestTx(
        attester=expect_bytes(f[1], "attest.attester", PUBKEY_SIZE),
        result_id=expect_bytes(f[2], "attest.result_id", HASH_SIZE),
        passed=f[3],
        fee=expect_int(f[4], "attest.fee"),
        signature=expect_bytes(f[5], "attest.signature", SIGNATURE_SIZE),
    )


def _update_from_wire(f: list[Any]) -> UpdateTx:
    expect_list(f, "update", 10)
    if type(f[6]) is not str or len(f[6]) > MAX_CID:
        raise DecodeError("update.update_cid: expected a short string")
    return UpdateTx(
        task_id=expect_bytes(f[1], "update.task_id", 32),
        seed=expect_bytes(f[2], "update.seed", 32),
        round=expect_int(f[3], "update.round", hi=U32),
        base=expect_bytes(f[4], "update.base", 32),
        participant=expect_bytes(f[5], "update.participant", PUBKEY_SIZE),
        update_cid=f[6],
        n_samples=expect_int(f[7], "update.n_samples"),
        fee=expect_int(f[8], "update.fee"),
        signature=expect_bytes(f[9], "update.signature", SIGNATURE_SIZE),
    )


def _round_close_from_wire(f: list[Any]) -> RoundCloseTx:
    expect_list(f, "round_close", 5)
    gains = expect_list(f[4], "round_close.gains")
    if len(gains) > MAX_GAINS:
        raise DecodeError(f"round_close.gains: more than {MAX_GAINS}")
    return RoundCloseTx(
        task_id=expect_bytes(f[1], "round_close.task_id", 32),
        round=expect_int(f[2], "round_close.round", hi=U32),
        model_hash=expect_bytes(f[3], "round_close.model_hash", 32),
        gains=tuple(expect_int(g, "round_close.gains", hi=MAX_GAIN) for g in gains),
    )


_FROM_WIRE: dict[int, Callable[[list[Any]], Transaction]] = {
    TAG_COINBASE: _coinbase_from_wire,
    TAG_TASK: _task_from_wire,
    TAG_RESULT: _result_from_wire,
    TAG_ALLOCATION: _alloc_from_wire,
    TAG_TRANSFER: _transfer_from_wire,
    TAG_BOND: _bond_from_wire,
    TAG_UNBOND: _unbond_from_wire,
    TAG_CHALLENGE: _challenge_from_wire,
    TAG_ATTEST: _attest_from_wire,
    TAG_UPDATE: _update_from_wire,
    TAG_ROUND_CLOSE: _round_close_from_wire,
}


def tx_to_wire(tx: Transaction) -> list[Any]:
    return tx.to_wire()


def tx_from_wire(obj: Any) -> Transaction:
    f = expect_list(obj, "transaction")
    if not f:
        raise DecodeError("transaction: empty")
    tag = f[0]
    if type(tag) is not int or tag not in _FROM_WIRE:
        raise DecodeError(f"transaction: unknown type tag {tag!r}")
    return _FROM_WIRE[tag](f)


def encode_tx(tx: Transaction) -> bytes:
    return packb(tx_to_wire(tx))


def decode_tx(data: bytes) -> Transaction:
    tx = tx_from_wire(unpackb(data, MAX_TX_BYTES))
    if encode_tx(tx) != bytes(data):
        raise DecodeError("transaction: non-canonical encoding")
    return tx


def tx_id(tx: Transaction) -> bytes:
    return sha256d(encode_tx(tx))


# -- headers and blocks -----------------------------------------------------


def decode_header(data: bytes) -> BlockHeader:
    if type(data) is not bytes or len(data) != HEADER_SIZE:
        raise DecodeError(f"header: expected {HEADER_SIZE} bytes")
    return BlockHeader.deserialize(data)


def block_to_wire(block: Block) -> list[Any]:
    return [block.header.serialize(), [tx_to_wire(tx) for tx in block.txs]]


def encode_block(block: Block) -> bytes:
    if block._raw is not None:
        return block._raw
    return packb(block_to_wire(block))


def decode_block(data: bytes, max_bytes: int = MAX_BLOCK_BYTES_HARD) -> Block:
    obj = unpackb(data, max_bytes)
    f = expect_list(obj, "block", 2)
    header = decode_header(expect_bytes(f[0], "block.header", HEADER_SIZE))
    txs = tuple(tx_from_wire(t) for t in expect_list(f[1], "block.txs"))
    raw = bytes(data)
    block = Block(header, txs, _raw=raw)
    if packb(block_to_wire(block)) != raw:
        raise DecodeError("block: non-canonical encoding")
    return block


# Canonical msgpack of [header(92 bytes), txs]: fixarray(2), bin8(92).
_BLOCK_PREFIX = bytes((0x92, 0xC4, HEADER_SIZE))


def peek_block_header(data: bytes) -> BlockHeader:
    """The header of an encoded block without decoding its transactions.

    Cheap (92 bytes), so a block can be judged by its header (PoW, is its
    branch worth it?) before its body is decoded and its signatures checked.
    Any block :func:`decode_block` accepts starts so; others are malformed.
    """
    if len(data) < len(_BLOCK_PREFIX) + HEADER_SIZE or not data.startswith(_BLOCK_PREFIX):
        raise DecodeError("block: not a canonical [header, txs] array")
    start = len(_BLOCK_PREFIX)
    return decode_header(bytes(data[start : start + HEADER_SIZE]))


def with_raw(block: Block) -> Block:
    """The same block with its canonical encoding cached."""
    if block._raw is not None:
        return block
    return Block(block.header, block.txs, _raw=packb(block_to_wire(block)))


def parse_hash(text: str) -> bytes:
    try:
        h = bytes.fromhex(text)
    except ValueError:
        raise DecodeError("hash: not hex") from None
    if len(h) != HASH_SIZE:
        raise DecodeError("hash: expected 32 bytes")
    return h
