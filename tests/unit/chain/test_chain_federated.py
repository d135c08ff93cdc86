"""Federated rounds as consensus rules: updates (tag 9), round closes (tag 10),
the federated task spec and its payout. The oracle is pure but real: it
decodes the artifacts and recomputes every aggregate with the federated core,
as the node does (only the fetching from IPFS is replaced by a dict)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from p2pml.chain.encoding import decode_tx, encode_tx
from p2pml.chain.federated_rounds import fed_key
from p2pml.chain.fedspec import FederatedSpec
from p2pml.chain.ledger import balance_key
from p2pml.chain.params import REGTEST, dev_identity
from p2pml.chain.tasks import task_key
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.txrules import handler_for
from p2pml.chain.types import Block, ResultTx, RoundCloseTx, TaskTx, UpdateTx
from p2pml.crypto import Identity
from p2pml.errors import DecodeError, ValidationError
from p2pml.federated import rounds
from p2pml.federated.encoding import encode
from p2pml.ipfs.cid import cid_of_bytes
from tests.framework.chainbuilder import Builder, Node

PUB = dev_identity(0)
P1, P2, P3 = dev_identity(1), dev_identity(2), dev_identity(3)
POOR = Identity.from_seed(b"\x78" * 32)
FEE = REGTEST.min_result_fee
W = REGTEST.payout_window
ALLOC = {k: a for k, a, _bond in REGTEST.allocations}
FED = FederatedSpec("fedavg", participants=2, local_epochs=1, round_blocks=3, classes=(0, 1, 2))
SPEC = TaskSpec(
    dataset_cid=cid_of_bytes(b"digits"),
    target="y",
    model="sgd_classifier",
    kind="classification",
    metric="accuracy",
    features=("a", "b", "c"),
    rounds=2,
    federated=FED,
)
WIRE = SPEC.to_wire()
LAYOUT = rounds.layout_of(WIRE)


def fed_task(bounty: int = 1000, deadline: int = 30, spec: TaskSpec = SPEC) -> TaskTx:
    return TaskTx(
        spec=spec,
        bounty=bounty,
        fee=1000,
        deadline=deadline,
        result_reward=0,
        max_results=1,
        publisher=PUB.public_key,
        nonce=7,
    ).signed_by(PUB, REGTEST.genesis_hash)


class Oracle:
    """The node's answers from artifacts it holds (unknown CID: no answer)."""

    def __init__(self) -> None:
        self.artifacts: dict[str, bytes] = {}
        self.globals: dict[bytes, Any] = {}  # hash -> G, every one computed

    def add(self, data: bytes) -> str:
        cid = cid_of_bytes(data)
        self.artifacts[cid] = data
        return cid

    def __call__(self, tx: Any, task: dict[str, Any], audit: bool) -> str | None:
        spec = task["spec"]
        if isinstance(tx, UpdateTx):
            data = self.artifacts.get(tx.update_cid)
            if data is None:
                return None
            # Round 0's base is checked by the oracle (G_0 needs numpy).
            if tx.round == 0 and tx.base != g0_hash(task["seed"], spec):
                return "update-wrong-base"
            return rounds.check_update(spec, data)
        assert isinstance(tx, RoundCloseTx)
        fed = task["fed"]
        current = rounds.initial(spec, task["seed"])
        for _height, updates in [*fed["closed"], [None, fed["updates"]]]:
            if any(cid not in self.artifacts for _p, cid, _n in updates):
                return None
            current = rounds.next_global(
                spec, current, [(p, self.artifacts[cid], n) for p, cid, n in updates]
            )
        digest = rounds.round_hash(spec, current)
        self.globals[digest] = current
        return "" if digest == tx.model_hash else "bad-round-hash"


def setup() -> tuple[Builder, Node, Oracle]:
    b, n, o = Builder(), Node(), Oracle()
    n.chain.verdicts = o
    b.ref.verdicts = o
    return b, n, o


def mine(b: Builder, n: Node, parent: bytes, *txs: Any, miner: bytes = b"\x11" * 32) -> Block:
    blk = b.make(parent, txs=tuple(txs), miner=miner)
    n.feed(blk).raise_error()
    assert n.tip == blk.hash
    return blk


def vector(scale: float) -> Any:
    return np.linspace(-1.0, 1.0, LAYOUT.size) * scale


def g0_hash(seed: bytes, wire: dict[str, Any] = WIRE) -> bytes:
    return rounds.round_hash(wire, rounds.initial(wire, seed))


def update(
    o: Oracle,
    t: TaskTx,
    seed: bytes,
    who: Identity,
    rnd: int,
    scale: float,
    n: int = 10,
    base: bytes | None = None,
) -> UpdateTx:
    """Trained from ``base`` (default: hash(G_0), right for round 0)."""
    cid = o.add(encode(LAYOUT, vector(scale)))
    return UpdateTx(
        task_id=t.id,
        seed=seed,
        round=rnd,
        base=g0_hash(seed, t.spec.to_wire() if t.spec.federated else WIRE)
        if base is None
        else base,
        participant=who.public_key,
        update_cid=cid,
        n_samples=n,
        fee=FEE,
    ).signed_by(who, REGTEST.genesis_hash)


def expected_hash(current: Any, *updates: tuple[Identity, float, int]) -> tuple[bytes, Any]:
    data = [(who.public_key, encode(LAYOUT, vector(s)), n) for who, s, n in updates]
    g = rounds.next_global(WIRE, current, data)
    return rounds.round_hash(WIRE, g), g


def bal(n: Node, ident: Identity) -> int:
    return int(n.chain.state.get(balance_key(ident.public_key), 0))


def started() -> tuple[Builder, Node, Oracle, TaskTx, Block]:
    b, n, o = setup()
    t = fed_task()
    return b, n, o, t, mine(b, n, b.genesis, t)


# -- the task spec ---------------------------------------------------------------------


def test_a_federated_spec_round_trips_and_plain_specs_keep_their_encoding() -> None:
    assert TaskSpec.from_wire(WIRE) == SPEC
    plain = dataclasses.replace(SPEC, federated=None)
    assert "federated" not in plain.to_wire()
    assert list(WIRE) == sorted(WIRE)
    SPEC.validate()
    with pytest.raises(DecodeError):
        TaskSpec.from_wire({**WIRE, "federated": {**FED.to_wire(), "extra": 1}})


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (dict(model="random_forest_classifier"), "federated-estimator"),
        (dict(federated=dataclasses.replace(FED, aggregation="median")), "federated-aggregation"),
        (dict(federated=dataclasses.replace(FED, participants=0)), "bad-task-param"),
        (dict(federated=dataclasses.replace(FED, round_blocks=0)), "bad-task-param"),
        (dict(federated=dataclasses.replace(FED, local_epochs=1001)), "bad-task-param"),
        (dict(federated=dataclasses.replace(FED, classes=(1, 0, 2))), "federated-labels"),
        (dict(federated=dataclasses.replace(FED, classes=(0,))), "federated-labels"),
        (dict(features=()), "bad-task-features"),
    ],
)
def test_bad_federated_specs_are_refused(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError) as err:
        dataclasses.replace(SPEC, **change).validate()
    assert err.value.reason == reason


def test_a_statistics_model_merges_by_sum() -> None:
    spec = dataclasses.replace(SPEC, model="ridge", kind="regression", metric="r2", federated=FED)
    with pytest.raises(ValidationError, match="federated-aggregation"):
        spec.validate()
    dataclasses.replace(
        spec, federated=dataclasses.replace(FED, aggregation="sum", classes=())
    ).validate()


# -- wire ------------------------------------------------------------------------------


def test_update_and_round_close_round_trip_on_the_wire() -> None:
    o = Oracle()
    t = fed_task()
    u = update(o, t, b"\x01" * 32, P1, 0, 1.0)
    c = RoundCloseTx(task_id=t.id, round=3, model_hash=b"\x02" * 32)
    back = decode_tx(encode_tx(u))
    assert isinstance(back, UpdateTx) and back == u and back.id == u.id
    assert decode_tx(encode_tx(c)) == c
    assert encode_tx(u)[1] == 9 and encode_tx(c)[1] == 10  # fixarray header, then the tag
    with pytest.raises(DecodeError):
        decode_tx(encode_tx(c)[:-1] + b"\xc4\x01\x00")  # a 1-byte hash


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda u: dataclasses.replace(u, n_samples=11), "bad-update-sig"),
        (lambda u: _resign(u, update_cid="not-a-cid"), "bad-update-cid"),
        (lambda u: _resign(u, n_samples=0), "bad-update-value"),
        (lambda u: _resign(u, fee=FEE - 1), "bad-update-fee"),
    ],
)
def test_stateless_update_checks(mangle: Any, reason: str) -> None:
    u = mangle(update(Oracle(), fed_task(), b"\x01" * 32, P1, 0, 1.0))
    with pytest.raises(ValidationError) as err:
        handler_for(u).check(u, REGTEST)
    assert err.value.reason == reason


def _resign(u: UpdateTx, **kw: Any) -> UpdateTx:
    return dataclasses.replace(u, **kw).signed_by(P1, REGTEST.genesis_hash)


# -- rounds ----------------------------------------------------------------------------


def test_two_rounds_commit_the_recomputed_models_and_pay_by_samples() -> None:
    b, n, o, t, b1 = started()
    g0 = rounds.initial(WIRE, b1.hash)
    u1, u2 = update(o, t, b1.hash, P1, 0, 1.0, n=30), update(o, t, b1.hash, P2, 0, 2.0, n=10)
    h1, g1 = expected_hash(g0, (P1, 1.0, 30), (P2, 2.0, 10))
    b2 = mine(b, n, b1.hash, u1, u2, RoundCloseTx(t.id, 0, h1))  # full: closes at once
    fed = n.chain.state[fed_key(t.id)]
    assert fed["round"] == 1 and fed["models"] == [h1] and fed["opened_at"] == b2.height + 1
    in_order = [[P1.public_key, u1.update_cid, 30], [P2.public_key, u2.update_cid, 10]]
    assert fed["closed"] == [[b2.height, in_order]]
    # Round 1: one update, then the window (3 blocks) runs out.
    u3 = update(o, t, b1.hash, P3, 1, -0.5, n=20, base=h1)
    b3 = mine(b, n, b2.hash, u3)
    h2, _ = expected_hash(g1, (P3, -0.5, 20))
    early = b.make(b3.hash, txs=(RoundCloseTx(t.id, 1, h2),), register=False)
    assert n.feed(early).rejected == [(early.hash, "round-not-due")]
    b4 = mine(b, n, b3.hash)
    b5 = mine(b, n, b4.hash)
    b6 = mine(b, n, b5.hash, RoundCloseTx(t.id, 1, h2))  # height 6 = opened_at 3 + 3
    rec = n.chain.state[task_key(t.id)]
    assert not rec["open"] and rec["closed_at"] == b6.height
    # 500 per round: round 0 by 30:10, round 1 all to P3; nothing left over.
    assert rec["payout"] == [[P1.public_key, 375], [P2.public_key, 125], [P3.public_key, 500]]
    tip = b6
    for _ in range(W):
        tip = mine(b, n, tip.hash)
    assert bal(n, P1) == ALLOC[P1.public_key] - FEE + 375
    assert bal(n, P3) == ALLOC[P3.public_key] - FEE + 500
    assert n.chain.state[task_key(t.id)]["paid"]


def test_a_wrong_global_hash_makes_the_block_invalid() -> None:
    b, n, o, t, b1 = started()
    u1, u2 = update(o, t, b1.hash, P1, 0, 1.0), update(o, t, b1.hash, P2, 0, 2.0)
    # A miner that commits G_0 (as if nobody had sent anything).
    bad = RoundCloseTx(t.id, 0, rounds.round_hash(WIRE, rounds.initial(WIRE, b1.hash)))
    blk = b.make(b1.hash, txs=(u1, u2, bad), register=False)
    assert n.feed(blk).rejected == [(blk.hash, "bad-round-hash")]
    assert n.tip == b1.hash


def test_an_empty_round_closes_with_the_same_model() -> None:
    b, n, _o, t, b1 = started()
    tip = b1
    for _ in range(3):
        tip = mine(b, n, tip.hash)
    same = rounds.round_hash(WIRE, rounds.initial(WIRE, b1.hash))
    mine(b, n, tip.hash, RoundCloseTx(t.id, 0, same))
    assert n.chain.state[fed_key(t.id)]["models"] == [same]


def test_an_update_whose_artifact_is_unknown_is_missing_data() -> None:
    b, n, o, t, b1 = started()
    u = update(o, t, b1.hash, P1, 0, 1.0)
    data = o.artifacts.pop(u.update_cid)
    blk = b.make(b1.hash, txs=(u,))
    up = n.feed(blk)
    assert up.error is None and up.waiting == [(blk.hash, u.update_cid)]
    o.artifacts[u.update_cid] = data
    n.source.apply(n.chain.retry_waiting())
    assert n.tip == blk.hash


def _bad_artifact(o: Oracle, t: TaskTx, seed: bytes, data: bytes) -> UpdateTx:
    u = update(o, t, seed, P1, 0, 1.0)
    return _resign(u, update_cid=o.add(data))


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda o, t, s: update(o, t, s, P1, 1, 1.0), "bad-update-round"),
        (lambda o, t, s: update(o, t, b"\x09" * 32, P1, 0, 1.0), "update-wrong-seed"),
        (lambda o, t, s: update(o, t, s, POOR, 0, 1.0), "no-bond"),
        # Round 0 must start from G_0 (the oracle's check).
        (lambda o, t, s: update(o, t, s, P1, 0, 1.0, base=b"\x07" * 32), "update-wrong-base"),
        (
            lambda o, t, s: _bad_artifact(o, t, s, encode(LAYOUT, vector(1.0))[:-8]),
            "bad-update-shape",
        ),
        (
            lambda o, t, s: _bad_artifact(
                o, t, s, encode(LAYOUT, vector(1.0))[:-8] + np.float64(np.nan).tobytes()
            ),
            "bad-update-value",
        ),
        (
            lambda o, t, s: _bad_artifact(
                o, t, s, encode(LAYOUT, vector(1.0))[:-8] + np.float64(-0.0).tobytes()
            ),
            "bad-update-value",
        ),
    ],
)
def test_bad_updates_make_the_block_invalid(make: Any, reason: str) -> None:
    b, n, o, t, b1 = started()
    u = make(o, t, b1.hash)
    blk = b.make(b1.hash, txs=(u,), register=False)
    assert n.feed(blk).rejected == [(blk.hash, reason)]


def test_round_limits_duplicates_late_updates_and_wrong_closes() -> None:
    b, n, o, t, b1 = started()
    u1 = update(o, t, b1.hash, P1, 0, 1.0)

    def refused(parent: Block, *txs: Any) -> str:
        blk = b.make(parent.hash, txs=txs, register=False)
        [(h, reason)] = n.feed(blk).rejected
        assert h == blk.hash
        return reason

    assert refused(b1, u1, update(o, t, b1.hash, P1, 0, 3.0)) == "duplicate-update"
    full = (u1, update(o, t, b1.hash, P2, 0, 2.0), update(o, t, b1.hash, P3, 0, 3.0))
    assert refused(b1, *full) == "update-round-full"
    assert refused(b1, RoundCloseTx(t.id, 1, b"\x00" * 32)) == "bad-round-close"
    tip = b1
    for _ in range(3):
        tip = mine(b, n, tip.hash)
    assert refused(tip, u1) == "update-round-late"
    other = TaskTx(**{**fed_task().__dict__, "spec": dataclasses.replace(SPEC, federated=None)})
    plain = other.signed_by(PUB, REGTEST.genesis_hash)
    b2 = mine(b, n, tip.hash, plain)
    assert refused(b2, update(o, plain, b2.hash, P1, 0, 1.0)) == "update-task-not-federated"
    assert refused(b2, RoundCloseTx(plain.id, 0, b"\x00" * 32)) == "round-task-not-federated"
    result = ResultTx(
        task_id=t.id,
        seed=b1.hash,
        round=0,
        trainer=P1.public_key,
        metric=0.5,
        model_cid=cid_of_bytes(b"m"),
        train_rows=1,
        train_ms=1,
        fee=FEE,
    ).signed_by(P1, REGTEST.genesis_hash)
    assert refused(b2, result) == "result-task-federated"


def test_an_update_trained_from_another_global_model_is_refused() -> None:
    # After round 0 closes, round 1's updates must name hash(G_1): one trained
    # from G_0 (or from G_1 of another branch) is invalid, by rule.
    b, n, o, t, b1 = started()
    u1, u2 = update(o, t, b1.hash, P1, 0, 1.0), update(o, t, b1.hash, P2, 0, 2.0)
    h1, _ = expected_hash(rounds.initial(WIRE, b1.hash), (P1, 1.0, 10), (P2, 2.0, 10))
    b2 = mine(b, n, b1.hash, u1, u2, RoundCloseTx(t.id, 0, h1))
    for base in (g0_hash(b1.hash), b"\x07" * 32):
        stale = b.make(b2.hash, txs=(update(o, t, b1.hash, P3, 1, 1.0, base=base),), register=False)
        assert n.feed(stale).rejected == [(stale.hash, "update-wrong-base")]
    mine(b, n, b2.hash, update(o, t, b1.hash, P3, 1, 1.0, base=h1))


def test_deadline_pays_the_closed_rounds_and_refunds_the_rest() -> None:
    b, n, o = setup()
    # The shortest deadline that fits: 2 rounds x (1 block + 1 to close).
    short = dataclasses.replace(SPEC, federated=dataclasses.replace(FED, round_blocks=1))
    t = fed_task(bounty=1001, deadline=4, spec=short)
    b1 = mine(b, n, b.genesis, t)
    u1, u2 = update(o, t, b1.hash, P1, 0, 1.0, n=1), update(o, t, b1.hash, P2, 0, 1.5, n=2)
    h1, _ = expected_hash(rounds.initial(WIRE, b1.hash), (P1, 1.0, 1), (P2, 1.5, 2))
    b2 = mine(b, n, b1.hash, u1, u2, RoundCloseTx(t.id, 0, h1))
    b3 = mine(b, n, b2.hash)
    b4 = mine(b, n, b3.hash)  # round 1 due, but no block closes it
    b5 = mine(b, n, b4.hash)  # close_at = 1 + 4
    rec = n.chain.state[task_key(t.id)]
    assert not rec["open"] and rec["closed_at"] == b5.height
    # 500 for round 0 split 1:2 (166 + 333), round 1 never closed: 502 back.
    earned = {P1.public_key: 166, P2.public_key: 333}
    shares = [[key, earned[key]] for key in sorted(earned)]  # bytewise key order
    assert rec["payout"] == [*shares, [PUB.public_key, 502]]
    late = b.make(b5.hash, txs=(update(o, t, b1.hash, P3, 1, 1.0),), register=False)
    assert n.feed(late).rejected == [(late.hash, "update-task-closed")]


def test_a_reorg_across_a_round_boundary_recomputes_the_same_models() -> None:
    #   G - b1(task) - a2(u1, u2, close 0) - a3(u3) - a4 - a5 - a6(close 1)
    #              \
    #               c2(u1) - c3 - c4 - c5(close 0) - c6(u2') - c7 - c8 - c9(close 1)*
    b, n, o, t, b1 = started()
    g0 = rounds.initial(WIRE, b1.hash)
    u1, u2 = update(o, t, b1.hash, P1, 0, 1.0), update(o, t, b1.hash, P2, 0, 2.0)
    ha, ga = expected_hash(g0, (P1, 1.0, 10), (P2, 2.0, 10))
    a2 = mine(b, n, b1.hash, u1, u2, RoundCloseTx(t.id, 0, ha))
    u3 = update(o, t, b1.hash, P3, 1, 3.0, base=ha)
    a3 = mine(b, n, a2.hash, u3)
    a4 = mine(b, n, a3.hash)
    a5 = mine(b, n, a4.hash)
    ha2, _ = expected_hash(ga, (P3, 3.0, 10))
    mine(b, n, a5.hash, RoundCloseTx(t.id, 1, ha2))
    assert n.chain.state[fed_key(t.id)]["models"] == [ha, ha2]

    other = b"\x55" * 32
    hc, gc = expected_hash(g0, (P1, 1.0, 10))
    u2b = update(o, t, b1.hash, P2, 1, -1.0, base=hc)
    hc2, _ = expected_hash(gc, (P2, -1.0, 10))
    c = [b.make(b1.hash, txs=(u1,), miner=other)]
    for _ in range(2):
        c.append(b.make(c[-1].hash, miner=other))
    c.append(b.make(c[-1].hash, txs=(RoundCloseTx(t.id, 0, hc),), miner=other))
    c.append(b.make(c[-1].hash, txs=(u2b,), miner=other))
    for _ in range(2):
        c.append(b.make(c[-1].hash, miner=other))
    c.append(b.make(c[-1].hash, txs=(RoundCloseTx(t.id, 1, hc2),), miner=other))
    for blk in c:
        n.feed(blk).raise_error()
    assert n.tip == c[-1].hash
    assert hc != ha
    fed = n.chain.state[fed_key(t.id)]
    assert fed["models"] == [hc, hc2]
    replay = Node()
    replay.chain.verdicts = o
    replay.feed_all([b.blocks[b1.hash], *c])
    assert replay.chain.state == n.chain.state
