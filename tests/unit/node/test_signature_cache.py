"""Each signature is verified once per node (p2pml.crypto's signature cache).

Before: an unfunded task from a fresh key (the mempool spam of
scripts/bench_attack.py) had its Ed25519 signature verified before relay in
the libp2p thread and again when the mempool tried it on the event loop; a
mined transaction was verified a third time in its block.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import nacl.signing
import pytest

from p2pml import crypto
from p2pml.chain.encoding import encode_tx
from p2pml.chain.params import REGTEST
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.txrules import handler_for
from p2pml.chain.types import ResultTx, TaskTx
from p2pml.crypto import Identity, verify
from p2pml.errors import ValidationError
from p2pml.ipfs.cid import cid_of_bytes
from p2pml.net import TopicRegistry
from p2pml.node.mempool import Mempool
from p2pml.node.tx_topics import register_tx_topics
from tests.unit.node.fakes import FakeChain

SPEC = TaskSpec(
    dataset_cid=cid_of_bytes(b"dataset"), target="y", model="ridge", kind="regression", metric="r2"
)


def task(pub: Identity, nonce: int) -> TaskTx:
    return TaskTx(
        spec=SPEC,
        bounty=1000,
        fee=1000,
        deadline=5,
        result_reward=0,
        max_results=3,
        publisher=pub.public_key,
        nonce=nonce,
    ).signed_by(pub, REGTEST.genesis_hash)


def no_verdict(_tx: ResultTx, _task: dict[str, Any], _audit: bool) -> str | None:
    return None


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    seen: list[bytes] = []
    real = nacl.signing.VerifyKey.verify

    def counting(self: Any, smessage: bytes, signature: bytes | None = None, **kw: Any) -> Any:
        seen.append(bytes(self))
        return real(self, smessage, signature, **kw)

    monkeypatch.setattr(nacl.signing.VerifyKey, "verify", counting)
    return seen


def test_gossip_check_then_mempool_admission_verify_once(verifications: list[bytes]) -> None:
    topics = TopicRegistry(REGTEST.name)
    register_tx_topics(topics, REGTEST)
    spec = topics.by_kind("tasks")
    assert spec is not None
    fresh = Identity.generate()
    tx = task(pub=fresh, nonce=7)
    spec.check(spec.decode(encode_tx(tx)))  # before relay, in the libp2p thread
    with pytest.raises(ValidationError) as exc:  # unfunded: refused by the pool
        Mempool(REGTEST).admit(tx, FakeChain().chain, no_verdict)
    assert exc.value.reason == "insufficient-funds"
    assert verifications == [fresh.public_key]


def test_a_bad_signature_is_never_remembered(verifications: list[bytes]) -> None:
    fresh = Identity.generate()
    tx = task(pub=fresh, nonce=8)
    forged = dataclasses.replace(tx, signature=bytes(64))
    for _ in range(3):
        with pytest.raises(ValidationError):
            handler_for(forged).check(forged, REGTEST)
    assert len(verifications) == 3
    handler_for(tx).check(tx, REGTEST)
    handler_for(tx).check(tx, REGTEST)
    assert len(verifications) == 4
    # The same signature over another message, or under another key, is checked.
    sig = fresh.sign(b"d", b"payload")
    assert verify(fresh.public_key, b"d", b"payload", sig)
    assert not verify(fresh.public_key, b"d", b"payloaD", sig)
    assert not verify(Identity.generate().public_key, b"d", b"payload", sig)
    assert len(verifications) == 7


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crypto, "SIG_CACHE_MAX", 5)
    ident = Identity.generate()
    for i in range(20):
        p = i.to_bytes(2, "big")
        assert verify(ident.public_key, b"d", p, ident.sign(b"d", p))
    assert len(crypto._sig_cache) <= 5
