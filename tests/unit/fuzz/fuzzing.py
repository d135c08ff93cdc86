"""Shared pieces of the fuzz targets: example budget, strategies, mutations.

CI runs every target for ``P2PML_FUZZ_EXAMPLES`` examples (default 200);
``scripts/fuzz`` sets it high and runs only these tests.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from p2pml.chain.allowlist import ESTIMATORS
from p2pml.chain.encoding import encode_tx
from p2pml.chain.hashing import merkle_root, sha256d
from p2pml.chain.metrics import METRICS
from p2pml.chain.params import REGTEST, dev_identity
from p2pml.chain.pow import check_pow
from p2pml.chain.tasks import ResultTx, TaskTx
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.types import Allocation, Block, BlockHeader, Coinbase, Transaction, TransferTx

EXAMPLES = int(os.environ.get("P2PML_FUZZ_EXAMPLES", "200"))


def fuzz(scale: float = 1.0) -> settings:
    """Hypothesis settings of one target: ``scale`` x the example budget."""
    return settings(
        max_examples=max(1, int(EXAMPLES * scale)),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
b32 = st.binary(min_size=32, max_size=32)
# Everything msgpack can carry, in the ranges it can carry them.
msgpack_int = st.integers(-(2**63), 2**64 - 1)
scalars = st.none() | st.booleans() | msgpack_int | st.floats() | st.text(max_size=20)
CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
SIGNER = dev_identity(0)

headers = st.builds(BlockHeader, u32, u32, b32, b32, u64, u32, u64)
coinbases = st.builds(Coinbase, u32, b32, u64, st.binary(max_size=64))
allocations = st.builds(Allocation, b32, u64)


@st.composite
def param_lists(draw: st.DrawFn, model: str) -> list[tuple[str, Any]]:
    """Parameters that are mostly the estimator's own names, with any values."""
    known = sorted(ESTIMATORS[model].params) if model in ESTIMATORS else []
    names = st.sampled_from(known) | st.text(max_size=12) if known else st.text(max_size=12)
    values = scalars | st.lists(msgpack_int, max_size=4) | st.lists(st.integers(1, 64), min_size=1)
    items = draw(st.dictionaries(names, values, max_size=5))
    return sorted(items.items())


@st.composite
def spec_wires(draw: st.DrawFn) -> dict[str, Any]:
    """A task spec wire map of the documented shape, with any values."""
    model = draw(st.sampled_from(sorted(ESTIMATORS)) | st.text(max_size=10))
    kind = draw(st.sampled_from(["regression", "classification"]) | st.text(max_size=10))
    fraction = st.floats(0.0, 1.0) | st.floats()
    return {
        "dataset_cid": draw(st.just(CID) | st.text(max_size=50)),
        "features": draw(st.lists(st.text(max_size=8), max_size=4)),
        "format": draw(st.just("csv") | st.text(max_size=5)),
        "holdout_fraction": draw(fraction),
        "kind": kind,
        "metric": draw(st.sampled_from(sorted(METRICS)) | st.text(max_size=8)),
        "model": model,
        "params": [list(p) for p in draw(param_lists(model))],
        "partition_fraction": draw(fraction),
        "rounds": draw(msgpack_int),
        "target": draw(st.text(max_size=10)),
        "v": 1,
    }


@st.composite
def tasks(draw: st.DrawFn) -> TaskTx:
    tx = TaskTx(
        spec=TaskSpec.from_wire(draw(spec_wires())),
        bounty=draw(u64),
        fee=draw(u64),
        deadline=draw(u32),
        result_reward=draw(u64),
        max_results=draw(u32),
        publisher=SIGNER.public_key,
        nonce=draw(u64),
        signature=bytes(64),
    )
    # Mostly signed, so the checks behind the signature are reached too.
    return tx.signed_by(SIGNER, REGTEST.genesis_hash) if draw(st.booleans()) else tx


@st.composite
def results(draw: st.DrawFn) -> ResultTx:
    tx = ResultTx(
        task_id=draw(b32),
        seed=draw(b32),
        round=draw(u32),
        trainer=SIGNER.public_key,
        metric=draw(st.floats()),
        model_cid=draw(st.just(CID) | st.text(max_size=50)),
        train_rows=draw(u32),
        train_ms=draw(st.integers(0, 2**40)),
        fee=1_000,
        signature=bytes(64),
    )
    return tx.signed_by(SIGNER, REGTEST.genesis_hash) if draw(st.booleans()) else tx


@st.composite
def transfers(draw: st.DrawFn) -> TransferTx:
    tx = TransferTx(
        sender=SIGNER.public_key,
        recipient=draw(b32),
        amount=draw(u64),
        fee=draw(u64),
        nonce=draw(u64),
        signature=bytes(64),
    )
    return tx.signed_by(SIGNER, REGTEST.genesis_hash) if draw(st.booleans()) else tx


transactions: st.SearchStrategy[Transaction] = st.one_of(
    coinbases, allocations, tasks(), results(), transfers()
)


@st.composite
def blocks(draw: st.DrawFn, valid_root: bool = True) -> Block:
    """Blocks whose header commits to their body and, mostly, meets regtest PoW."""
    txs = tuple(draw(st.lists(transactions, max_size=4)))
    if draw(st.booleans()):
        txs = (draw(coinbases), *txs)
    h = draw(headers)
    root = merkle_root([sha256d(encode_tx(t)) for t in txs]) if valid_root else h.tx_root
    header = BlockHeader(1, h.height, h.prev_hash, root, h.time, REGTEST.pow_limit_bits, h.nonce)
    for nonce in range(h.nonce, h.nonce + 8):  # half of all hashes meet regtest's target
        cand = BlockHeader(*[*_fields(header)[:-1], nonce % 2**64])
        if check_pow(cand.hash, REGTEST.pow_limit):
            header = cand
            break
    return Block(header, txs)


def _fields(h: BlockHeader) -> list[Any]:
    return [h.version, h.height, h.prev_hash, h.tx_root, h.time, h.bits, h.nonce]


@st.composite
def mutated(draw: st.DrawFn, raw: bytes) -> bytes:
    """``raw`` with a few byte flips, insertions, deletions or a truncation."""
    out = bytearray(raw)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(0, len(out) - 1)))
        if op == "flip" and out:
            out[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and out:
            out[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and out:
            del out[pos : pos + draw(st.integers(1, 4))]
        elif op == "truncate":
            del out[pos:]
    return bytes(out)


def any_msgpack() -> st.SearchStrategy[Any]:
    """Objects of any msgpack shape (arrays, maps, bin, str, numbers)."""
    leaves = scalars | st.binary(max_size=100) | b32
    return st.recursive(
        leaves,
        lambda kids: (
            st.lists(kids, max_size=6) | st.dictionaries(st.text(max_size=6), kids, max_size=4)
        ),
        max_leaves=24,
    )
