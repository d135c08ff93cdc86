"""The signed-peer-record memo (p2pml/net/records.py) skips only what it verified."""

from __future__ import annotations

from typing import Any

from libp2p.peer.id import ID
from libp2p.pubsub.pb.rpc_pb2 import RPC

from p2pml.net import records


def test_a_changed_or_bad_record_is_still_verified() -> None:
    """The memo skips only bytes it verified for that host and peer."""
    calls: list[bytes] = []
    verdict = {b"good": True, b"bad": False, b"new": True}

    def fake_verify(msg: RPC, host: Any, peer: ID) -> bool:
        calls.append(msg.senderRecord)
        return verdict[msg.senderRecord]

    class Host:
        pass

    host: Any = Host()
    other: Any = Host()
    peer = ID(b"\x00\x01peer")
    t = [0.0]
    memo = records.RecordMemo(clock=lambda: t[0])
    orig = records._verify
    records._verify = fake_verify
    try:

        def rpc(rec: bytes) -> RPC:
            m = RPC()
            m.senderRecord = rec
            return m

        assert memo.consume(RPC(), host, peer)  # no record: nothing to check
        assert memo.consume(rpc(b"good"), host, peer) and memo.consume(rpc(b"good"), host, peer)
        assert calls == [b"good"]
        assert not memo.consume(rpc(b"bad"), host, peer)
        assert not memo.consume(rpc(b"bad"), host, peer)
        assert memo.consume(rpc(b"good"), host, peer)  # forgotten after the bad one
        assert memo.consume(rpc(b"good"), other, peer)  # another host's peerstore
        assert memo.consume(rpc(b"new"), host, peer)
        t[0] = records.REFRESH_SECONDS + 1
        assert memo.consume(rpc(b"new"), host, peer)
        assert calls == [b"good", b"bad", b"bad", b"good", b"good", b"new", b"new"]
    finally:
        records._verify = orig
