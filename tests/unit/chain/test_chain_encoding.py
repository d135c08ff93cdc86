"""Codec round trips, canonical form, and fuzzing of every decoder."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pml.chain.encoding import (
    decode_block,
    decode_header,
    decode_tx,
    encode_block,
    encode_tx,
    parse_hash,
    unpackb,
)
from p2pml.chain.types import Block, Coinbase
from p2pml.errors import DecodeError
from tests.framework.chainbuilder import Builder

_b = Builder()
BLOCK = _b.make(_b.genesis, extra=b"fuzz seed")
RAW = encode_block(BLOCK)
DECODERS = [decode_block, decode_tx, decode_header, lambda d: unpackb(d, 1 << 16)]


def test_block_round_trip() -> None:
    blk = decode_block(RAW)
    assert blk == BLOCK
    assert blk.hash == BLOCK.hash
    assert encode_block(Block(blk.header, blk.txs)) == RAW


def test_tx_round_trip_and_id_is_stable() -> None:
    cb = Coinbase(height=3, miner=b"\x01" * 32, amount=5, extra=b"x")
    assert decode_tx(encode_tx(cb)) == cb


def test_non_canonical_integer_encoding_is_refused() -> None:
    # 5 as a uint32 (0xce) instead of a fixint: same value, different bytes.
    canonical = encode_tx(Coinbase(height=3, miner=b"\x01" * 32, amount=5))
    padded = canonical.replace(b"\x05\xc4", b"\xce\x00\x00\x00\x05\xc4")
    assert padded != canonical
    assert msgpack.unpackb(padded) == msgpack.unpackb(canonical)
    with pytest.raises(DecodeError, match="non-canonical"):
        decode_tx(padded)


def test_size_limit_is_checked_before_parsing() -> None:
    with pytest.raises(DecodeError, match="over the"):
        decode_block(b"\x00" * 100, max_bytes=50)


def test_unknown_tx_tag() -> None:
    with pytest.raises(DecodeError, match="unknown type"):
        decode_tx(msgpack.packb([99, 1, 2]))


def test_wrong_field_types() -> None:
    bad = [0, 1, b"short", 5, b""]
    with pytest.raises(DecodeError, match="miner"):
        decode_tx(msgpack.packb(bad))
    with pytest.raises(DecodeError):
        decode_tx(msgpack.packb([0, True, b"\x01" * 32, 5, b""]))  # bool is not an int


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_only_raise_decode_error(data: bytes) -> None:
    for decode in DECODERS:
        try:
            decode(data)  # type: ignore[operator]
        except DecodeError:
            pass


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_mutated_blocks_only_raise_decode_error(data: st.DataObject) -> None:
    raw = bytearray(RAW)
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "insert":
            raw.insert(pos, data.draw(st.integers(0, 255)))
        elif op == "delete" and raw:
            del raw[pos]
        elif op == "truncate":
            del raw[pos:]
    for decode in DECODERS:
        try:
            decode(bytes(raw))  # type: ignore[operator]
        except DecodeError:
            pass


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.binary() | st.text(),
        lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(), kids, max_size=5),
        max_leaves=20,
    )
)
def test_wellformed_msgpack_of_any_shape_only_raises_decode_error(obj: object) -> None:
    try:
        raw = msgpack.packb(obj)
    except (OverflowError, ValueError):
        return
    for decode in DECODERS:
        try:
            decode(raw)  # type: ignore[operator]
        except DecodeError:
            pass


def test_header_fields_survive_round_trip() -> None:
    h = dataclasses.replace(BLOCK.header, nonce=2**64 - 1, time=2**40)
    assert decode_header(h.serialize()) == h


@given(st.text(max_size=80))
def test_parse_hash_only_raises_decode_error(text: str) -> None:
    try:
        assert len(parse_hash(text)) == 32
    except DecodeError:
        pass


def test_peek_block_header_reads_the_header_without_the_body() -> None:
    from p2pml.chain.encoding import decode_block, encode_block, peek_block_header
    from p2pml.chain.params import REGTEST

    raw = encode_block(REGTEST.genesis)
    assert peek_block_header(raw) == decode_block(raw).header
    for bad in (b"", raw[:50], b"\x93" + raw[1:], b"\x92\xc4\x5b" + raw[3:]):
        with pytest.raises(DecodeError):
            peek_block_header(bad)
