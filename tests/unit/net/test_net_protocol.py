"""Sync message codec, topic names, registry, bans, memory backend outcomes."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pml.chain.encoding import packb
from p2pml.chain.params import REGTEST
from p2pml.errors import DecodeError
from p2pml.net import protocol as P
from p2pml.net.backend import BlockStatus, Verdict
from p2pml.net.bans import Ban, MemoryBanStore, SqliteBanStore
from p2pml.net.memory_backend import MemoryChainBackend
from p2pml.net.topics import TopicRegistry, TopicSpec
from tests.framework.chainbuilder import Builder

H = bytes(range(32))


def test_names() -> None:
    assert P.topic_name("regtest", "blocks") == "/p2pml/regtest/blocks/7"
    assert P.sync_protocol("main") == "/p2pml/main/sync/7"


@pytest.mark.parametrize(
    "req",
    [None, P.HeadersReq((H, H), None), P.HeadersReq((H,), H), P.BlocksReq((H,) * 128)],
)
def test_request_roundtrip(req: P.Request) -> None:
    assert P.decode_request(P.encode_request(req)) == req


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        packb([]),
        packb([9]),
        packb([1, [], b""]),  # empty locator
        packb([1, [H] * 102, b""]),  # locator too long
        packb([1, [b"short"], b""]),
        packb([1, [H], b"x"]),  # bad stop
        packb([2, []]),
        packb([2, [H] * 129]),
        packb([True]),  # bool is not the status kind
        packb([0, 1]),
        b"\x00" * (P.MAX_REQUEST_BYTES + 1),
    ],
)
def test_bad_requests_raise_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        P.decode_request(data)


def test_status_roundtrip_with_big_work() -> None:
    s = P.StatusMsg(H, H[::-1], 7, 2**300 + 5)
    assert P.decode_status(P.encode_status(s)) == s
    with pytest.raises(DecodeError):
        P.decode_status(packb([0, H, H, 1, b"\1" * 65]))
    with pytest.raises(DecodeError):
        P.decode_status(packb([1, H, H, 1, b"\1"]))


def test_headers_and_blocks_limits() -> None:
    hdr = b"\0" * 92
    assert P.decode_headers(P.encode_headers([hdr] * 2000)) == [hdr] * 2000
    with pytest.raises(DecodeError):
        P.decode_headers(P.encode_headers([hdr] * 2001))
    with pytest.raises(DecodeError):
        P.decode_headers(P.encode_headers([b"\0" * 91]))
    assert P.decode_blocks(P.encode_blocks([b"ab"]), 10) == [b"ab"]
    with pytest.raises(DecodeError):
        P.decode_blocks(P.encode_blocks([b"a" * 11]), 10)


def test_registry() -> None:
    r = TopicRegistry("devnet")
    spec = TopicSpec("tasks", 10, bytes, lambda o: None)
    r.register(spec)
    assert r.by_topic("/p2pml/devnet/tasks/7") is spec
    assert r.by_kind("tasks") is spec
    with pytest.raises(ValueError):
        r.register(spec)
    r.frozen = True
    with pytest.raises(RuntimeError):
        r.register(TopicSpec("results", 10, bytes, lambda o: None))


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_ban_stores(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    store = MemoryBanStore() if kind == "memory" else SqliteBanStore(path)
    store.add(Ban("p1", 100.0, "bad-pow"))
    store.add(Ban("p1", 50.0, "later but shorter"))  # never shortens a ban
    store.add(Ban("p2", 10.0, "x"))
    got = store.get("p1", 20.0)
    assert got is not None and got.until == 100.0
    assert store.get("p2", 20.0) is None  # expired
    assert [b.peer_id for b in store.active(20.0)] == ["p1"]
    store.remove("p1")
    assert store.get("p1", 20.0) is None
    store.add(Ban("p3", 1e12, "garbage"))
    store.close()
    if kind == "sqlite":
        again = SqliteBanStore(path)
        assert again.get("p3", 0.0) == Ban("p3", 1e12, "garbage")
        again.close()


async def test_memory_backend_outcomes() -> None:
    b = Builder(REGTEST)
    blocks = b.chain(b.genesis, 3)
    be = MemoryChainBackend(REGTEST)
    assert (await be.submit_block(blocks[1], "p")).status is BlockStatus.ORPHAN
    out = await be.submit_block(blocks[0], "p")
    assert out.status is BlockStatus.ACCEPTED and out.tip_changed
    assert be.chain.height == 2  # the orphan was adopted
    assert (await be.submit_block(blocks[0], "p")).status is BlockStatus.DUPLICATE
    bad = b.make(blocks[2].prev_hash, reward_delta=1, register=False, dt=5)
    out = await be.submit_block(bad, "p")
    assert out.status is BlockStatus.INVALID and out.reason
    h = await be.submit_headers([blocks[2].header], "p")
    assert h.accepted == 1 and h.error is None
    assert not be.has_block(blocks[2].hash)
    other = Builder(REGTEST).chain(REGTEST.genesis_hash, 3, extra=b"o")
    h = await be.submit_headers([other[2].header], "p")
    assert h.accepted == 0 and h.error == "prev-unknown"
    assert await be.on_gossip("tasks", 1, "p") is Verdict.ACCEPT
    st = be.status()
    assert st.genesis_hash == REGTEST.genesis_hash and st.height == 2
