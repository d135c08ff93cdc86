"""Fuzz what peers send: sync protocol messages and gossip payloads/topics.

* Sync decoders (request, status, headers, blocks): round trip to the same
  bytes (the encoding is canonical, docs/protocol.md section 3) or
  ``DecodeError``, nothing else.
* Gossip: each topic's validation before relay (size limit, decode, every
  stateless rule) raises only ``DecodeError`` or ``ValidationError``, which
  the host turns into a penalty; anything else would escape into libp2p's
  validator and kill the pubsub task. The topic registry maps only its own
  topic names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
from hypothesis import example, given
from hypothesis import strategies as st

from p2pml.chain import rules
from p2pml.chain.encoding import decode_block, encode_block, encode_tx
from p2pml.chain.params import REGTEST
from p2pml.chain.tasks import ResultTx, TaskTx
from p2pml.chain.types import Block
from p2pml.errors import DecodeError, ValidationError
from p2pml.net import protocol as P
from p2pml.net.topics import TopicRegistry, TopicSpec
from p2pml.node.tx_topics import register_tx_topics
from tests.unit.fuzz.fuzzing import (
    any_msgpack,
    b32,
    blocks,
    fuzz,
    mutated,
    results,
    tasks,
    transactions,
    u32,
)

# -- sync messages ----------------------------------------------------------------

Codec = tuple[Callable[[bytes], Any], Callable[[Any], bytes]]
SYNC: dict[str, Codec] = {
    "request": (P.decode_request, P.encode_request),
    "status": (P.decode_status, P.encode_status),
    "headers": (P.decode_headers, P.encode_headers),
    "blocks": (lambda d: P.decode_blocks(d, REGTEST.max_block_bytes), P.encode_blocks),
}

requests = st.one_of(
    st.none(),
    st.builds(
        P.HeadersReq,
        st.lists(b32, min_size=1, max_size=P.MAX_LOCATOR).map(tuple),
        st.none() | b32,
    ),
    st.builds(P.BlocksReq, st.lists(b32, min_size=1, max_size=20).map(tuple)),
)
statuses = st.builds(P.StatusMsg, b32, b32, u32, st.integers(0, 2**512 - 1))
header_lists = st.lists(st.binary(min_size=92, max_size=92), max_size=5)
block_lists = st.lists(st.binary(max_size=200), max_size=5)


def _round_trip_or_decode_error(kind: str, data: bytes) -> None:
    decode, encode = SYNC[kind]
    try:
        msg = decode(data)
    except DecodeError:
        return
    assert encode(msg) == data, kind


@st.composite
def sync_messages(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(sorted(SYNC)))
    strategy = {"request": requests, "status": statuses, "headers": header_lists}.get(
        kind, block_lists
    )
    return kind, SYNC[kind][1](draw(strategy))


@fuzz()
@given(sync_messages())
def test_sync_messages_round_trip(km: tuple[str, bytes]) -> None:
    kind, raw = km
    decode, encode = SYNC[kind]
    assert encode(decode(raw)) == raw


# Non-minimal encodings of valid messages: an int as uint16, a short bin as
# bin16, a status work with a leading zero byte. Each decoded before the fix.
@example(("request", b"\x91\xcd\x00\x00"))
@example(("request", b"\x92\x02\x91\xc5\x00\x20" + bytes(32)))
@example(("status", msgpack.packb([0, bytes(32), bytes(32), 1, b"\x00\x01"])))
@example(("status", msgpack.packb([0, bytes(32), bytes(32), 1, b""])))
@example(("headers", b"\x92\x01\xdc\x00\x00"))
@fuzz()
@given(sync_messages().flatmap(lambda km: st.tuples(st.just(km[0]), mutated(km[1]))))
def test_mutated_sync_messages_round_trip_or_decode_error(km: tuple[str, bytes]) -> None:
    kind, data = km
    _round_trip_or_decode_error(kind, data)


@fuzz()
@given(st.sampled_from(sorted(SYNC)), any_msgpack())
def test_any_msgpack_as_sync_message(kind: str, obj: Any) -> None:
    data = msgpack.packb(obj, use_bin_type=True)
    _round_trip_or_decode_error(kind, data)
    if isinstance(obj, list):  # behind every known message kind
        for tag in range(3):
            _round_trip_or_decode_error(kind, msgpack.packb([tag, *obj], use_bin_type=True))


# -- gossip ---------------------------------------------------------------------------


def _check_block(block: Block) -> None:
    # The block topic's stateless checks, as p2pml.net.service registers them.
    rules.check_header(block.header, REGTEST)
    rules.check_block_body(block, rules.check_tx_root(block), REGTEST)


TOPICS = TopicRegistry(REGTEST.name)
TOPICS.register(
    TopicSpec(
        "blocks",
        REGTEST.max_block_bytes,
        lambda d: decode_block(d, REGTEST.max_block_bytes),
        _check_block,
    )
)
register_tx_topics(TOPICS, REGTEST)  # the node's own tx topics: tasks, results, transfers


def _validate(topic: str, data: bytes) -> None:
    """The host's validation before relay, minus the penalty bookkeeping."""
    spec = TOPICS.by_topic(topic)
    assert spec is not None
    if len(data) > spec.max_bytes:
        return
    try:
        spec.check(spec.decode(data))
    except (DecodeError, ValidationError):
        pass


@st.composite
def gossip(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["blocks", "tasks", "results"]))
    if kind == "blocks":
        raw = encode_block(draw(blocks()))
    else:
        tx: TaskTx | ResultTx = draw(tasks()) if kind == "tasks" else draw(results())
        raw = encode_tx(tx)
    if draw(st.booleans()):
        raw = draw(mutated(raw))
    return TOPICS.topic(kind), raw


@fuzz(2)
@given(gossip())
def test_gossip_validation_raises_only_documented_errors(tm: tuple[str, bytes]) -> None:
    _validate(*tm)


@fuzz()
@given(st.sampled_from(["blocks", "tasks", "results"]), transactions)
def test_any_transaction_on_any_topic(kind: str, tx: Any) -> None:
    _validate(TOPICS.topic(kind), encode_tx(tx))


@fuzz()
@given(st.text(max_size=40) | st.sampled_from(TOPICS.topics()).map(lambda t: t + "x"))
def test_only_registered_topic_names_map_to_a_topic(topic: str) -> None:
    spec = TOPICS.by_topic(topic)
    assert (spec is not None) == (topic in TOPICS.topics())
    if spec is not None:
        assert TOPICS.topic(spec.kind) == topic
