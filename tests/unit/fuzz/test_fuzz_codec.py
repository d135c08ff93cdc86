"""Fuzz the consensus decoders: blocks, transactions, task specs, headers.

Two properties for every decoder, since the encoding is canonical:

* round trip: whatever decodes re-encodes to exactly the bytes it came from;
* only the documented error escapes: ``DecodeError`` from decoders,
  ``ValidationError`` from the stateless rules (``TaskSpec.validate``).
"""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from p2pml.chain.encoding import (
    decode_block,
    decode_header,
    decode_tx,
    encode_block,
    encode_tx,
    packb,
    tx_to_wire,
)
from p2pml.chain.taskspec import WIRE_KEYS, TaskSpec
from p2pml.chain.types import Block, BlockHeader
from p2pml.errors import DecodeError, ValidationError
from tests.unit.fuzz.fuzzing import (
    any_msgpack,
    blocks,
    fuzz,
    headers,
    mutated,
    spec_wires,
    transactions,
)


def _reencode_block(block: Block) -> bytes:
    # Built again from its parts: the decoder's cached bytes prove nothing.
    return encode_block(Block(block.header, block.txs))


def _assert_block_round_trip(data: bytes) -> None:
    try:
        block = decode_block(data)
    except DecodeError:
        return
    assert _reencode_block(block) == data


def _assert_tx_round_trip(data: bytes) -> None:
    try:
        tx = decode_tx(data)
    except DecodeError:
        return
    assert encode_tx(tx) == data
    assert packb(tx_to_wire(tx)) == data


@fuzz()
@given(blocks())
def test_encoded_blocks_decode_to_the_same_bytes(block: Block) -> None:
    raw = _reencode_block(block)
    assert _reencode_block(decode_block(raw)) == raw
    assert decode_block(raw).hash == block.hash


@fuzz()
@given(transactions)
def test_encoded_transactions_decode_to_the_same_bytes(tx: Any) -> None:
    raw = encode_tx(tx)
    assert encode_tx(decode_tx(raw)) == raw


@fuzz()
@given(headers)
def test_headers_round_trip(h: BlockHeader) -> None:
    assert decode_header(h.serialize()).serialize() == h.serialize()


@fuzz()
@given(st.data())
def test_mutated_blocks_round_trip_or_decode_error(data: st.DataObject) -> None:
    raw = _reencode_block(data.draw(blocks()))
    _assert_block_round_trip(data.draw(mutated(raw)))


@fuzz()
@given(st.data())
def test_mutated_transactions_round_trip_or_decode_error(data: st.DataObject) -> None:
    raw = encode_tx(data.draw(transactions))
    _assert_tx_round_trip(data.draw(mutated(raw)))


@fuzz()
@given(any_msgpack())
def test_any_msgpack_round_trips_or_decode_error(obj: Any) -> None:
    raw = msgpack.packb(obj, use_bin_type=True)
    _assert_block_round_trip(raw)
    _assert_tx_round_trip(raw)
    # Also as the fields of a transaction of every tag, and as a block body.
    if isinstance(obj, list):
        for tag in range(4):
            _assert_tx_round_trip(msgpack.packb([tag, *obj], use_bin_type=True))
        _assert_block_round_trip(msgpack.packb([bytes(92), [obj]], use_bin_type=True))


@fuzz()
@given(st.binary(max_size=300))
def test_random_bytes_round_trip_or_decode_error(raw: bytes) -> None:
    _assert_block_round_trip(raw)
    _assert_tx_round_trip(raw)
    try:
        h = decode_header(raw)
    except DecodeError:
        return
    assert h.serialize() == raw


# -- task specs ------------------------------------------------------------------


def _spec_wire_variants() -> st.SearchStrategy[Any]:
    """The documented shape with one key dropped, added or given any value."""

    @st.composite
    def variant(draw: st.DrawFn) -> Any:
        wire: dict[Any, Any] = draw(spec_wires())
        op = draw(st.sampled_from(["none", "drop", "add", "retype"]))
        key = draw(st.sampled_from(WIRE_KEYS))
        if op == "drop":
            del wire[key]
        elif op == "add":
            wire[draw(st.text(max_size=8))] = draw(any_msgpack())
        elif op == "retype":
            wire[key] = draw(any_msgpack())
        return wire

    return variant() | any_msgpack()


@fuzz()
@given(_spec_wire_variants())
def test_task_spec_decode_validate_and_round_trip(wire: Any) -> None:
    try:
        spec = TaskSpec.from_wire(wire)
    except DecodeError:
        return
    # What decodes, re-encodes to the same canonical bytes ...
    assert packb(spec.to_wire()) == packb(_canonical(wire))
    # ... and the rules say yes or give a reason; nothing else escapes.
    try:
        spec.validate()
    except ValidationError as err:
        assert err.reason.startswith("bad-task-"), err.reason


def _canonical(wire: dict[str, Any]) -> dict[str, Any]:
    # msgpack writes a dict in insertion order; the canonical form sorts keys.
    return {k: wire[k] for k in sorted(wire)}
