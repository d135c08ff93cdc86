"""A node's part in private federated tasks: it trains from its own file
(the task's dataset is never fetched for that), adds local DP noise before
publishing, checks a peer's private update by rule only (any count: nobody
else has the rows), and scores each global model on every row of the task's
public validation CSV. Real worker jobs, run in process; IPFS is a dict."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits

from p2pml.chain.fedspec import FederatedSpec
from p2pml.chain.params import REGTEST, dev_identity
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.types import TaskTx, UpdateTx
from p2pml.config import FederatedSettings, TrainingSettings
from p2pml.federated import rounds
from p2pml.federated.aggregate import l2_norm
from p2pml.federated.encoding import decode
from p2pml.ml.fedjobs import FedAggregateRequest, FedTrainRequest, fed_train_job
from p2pml.ml.pool import execute, unpack
from p2pml.node.federated import FederatedService
from p2pml.node.federated_verifier import CloseCheck, UpdateCheck
from p2pml.node.mempool import Mempool
from tests.framework.chainbuilder import Builder
from tests.unit.node.fakes import FakeChain, FakeRelay, Jobs
from tests.unit.node.test_federated_verifier import (
    P1,
    P2,
    SEED,
    TASK,
    DictStore,
    InlinePool,
    g0,
    h0,
    make_verifier,
    update_tx,
)


@pytest.fixture
def private(tmp_path: Path) -> tuple[Any, DictStore, TaskSpec, Path]:
    frame = load_digits(as_frame=True).frame
    frame.iloc[:, :-1] = frame.iloc[:, :-1] / 16.0
    store = DictStore(tmp_path)
    validation = tmp_path / "validation.csv"
    frame.iloc[1500:].to_csv(validation, index=False)
    vcid = asyncio.run(store.add_bytes(validation.read_bytes()))
    mine = tmp_path / "mine.csv"  # this node's own rows: never added to the store
    frame.iloc[:300].to_csv(mine, index=False)
    spec = TaskSpec(
        dataset_cid=vcid,
        target="target",
        model="sgd_classifier",
        kind="classification",
        metric="accuracy",
        features=tuple(c for c in frame.columns if c != "target"),
        rounds=2,
        federated=FederatedSpec(
            "median", 3, 1, 10, tuple(range(10)), private="digits", validation=vcid, clip=10.0
        ),
    )
    spec.validate()
    return make_verifier(store, tmp_path), store, spec, mine


def train(spec: TaskSpec, who: bytes, file: Path) -> tuple[bytes, int]:
    req = FedTrainRequest(spec, TASK, SEED, who, 0, g0(spec), None, private_file=str(file))
    return fed_train_job(req)


def test_a_private_update_trains_on_the_own_file_and_is_accepted_by_rule(private: Any) -> None:
    fv, store, spec, mine = private
    art, n = train(spec, P1, mine)
    assert n == 300
    stored = set(store.files)
    wire = spec.to_wire()

    def answer(tx: Any) -> Any:
        return asyncio.run(fv.answer(UpdateCheck(tx, wire, SEED)))

    # Any count is taken (it weighs nothing and nobody can check it) ...
    assert answer(update_tx(store, art, P1, n, base=h0(spec))) == ""
    assert answer(update_tx(store, art, P2, 10 * n, base=h0(spec))) == ""
    # ... but the artifact must still be a canonical vector of the task.
    assert answer(update_tx(store, art[:-8], P1, n, base=h0(spec))) == "bad-update-shape"
    assert (
        answer(update_tx(store, art[:-8] + b"\x00" * 6 + b"\xf8\x7f", P1, n, base=h0(spec)))
        == "bad-update-value"
    )
    # The private file was never put in the store (only the update artifacts).
    assert all(store.files[c].read_bytes() != mine.read_bytes() for c in store.files)
    assert stored <= set(store.files)


def test_local_dp_noise_is_fresh_and_of_the_tasks_scale(private: Any) -> None:
    _fv, _store, spec, mine = private
    fed = dataclasses.replace(
        spec.federated,
        aggregation="fedavg",
        clip=1.0,
        noise_multiplier=2.0,
        delta=1e-5,
        epsilon=50.0,
    )
    dp = dataclasses.replace(spec, federated=fed)
    dp.validate()
    layout = rounds.layout_of(dp.to_wire())
    a, n = train(dp, P1, mine)
    b, _ = train(dp, P1, mine)
    assert n == 300 and a != b  # secret noise: two runs differ
    delta = decode(layout, a) - decode(layout, g0(dp))
    # ||clip(w - G, 1) + N(0, 2^2 I)|| is about 2 sqrt(size), far above C = 1.
    expected = 2.0 * np.sqrt(layout.size)
    assert 0.8 * expected < l2_norm(delta) < 1.2 * expected


def test_global_models_are_scored_on_every_validation_row(private: Any) -> None:
    fv, store, spec, mine = private
    wire = spec.to_wire()
    arts = [train(spec, who, mine) for who in (P1, P2)]
    ups = tuple(
        (who, asyncio.run(store.add_bytes(a)), n)
        for who, (a, n) in zip((P1, P2), arts, strict=True)
    )
    close = CloseCheck(TASK, wire, SEED, (), (), ups)
    digest, _gains = asyncio.run(fv.answer(close))
    metric = fv.metrics[digest]
    # Recompute: G_1 by the rule, its accuracy on the 297 validation rows.
    from p2pml.federated.params import build

    g1 = rounds.next_global(
        wire,
        rounds.initial(wire, SEED),
        [(w, a, n) for w, (a, n) in zip((P1, P2), arts, strict=True)],
    )
    frame = load_digits(as_frame=True).frame.iloc[1500:]
    X = frame.drop(columns="target").to_numpy() / 16.0
    model = build(rounds.layout_of(wire), g1, {}, rounds.classes_of(wire))
    assert metric == pytest.approx(float((model.predict(X) == frame["target"].to_numpy()).mean()))
    assert metric > 0.5
    # Same job, direct: one G per round.
    data = asyncio.run(fv.score_data(spec))
    assert data.validation
    out = unpack(execute("fed_aggregate", FedAggregateRequest(spec, TASK, SEED, None, [[]], data)))
    assert len(out) == 1


@pytest.mark.parametrize("mapped", [False, True])
def test_only_a_node_mapping_the_private_name_takes_part(
    private: Any, tmp_path: Path, mapped: bool
) -> None:
    fv, _store, spec, mine = private
    spec = dataclasses.replace(spec, rounds=1)
    me = dev_identity(1)
    chain, builder, relay, jobs = FakeChain(), Builder(), FakeRelay(), Jobs()
    chain.node.chain.verdicts = fv.verdict
    mempool = Mempool(REGTEST)
    files = FederatedSettings(private=(("digits", mine),) if mapped else (("other", mine),))
    FederatedService(
        me,
        chain,  # type: ignore[arg-type]
        mempool,
        fv,
        relay,  # type: ignore[arg-type]
        InlinePool(),  # type: ignore[arg-type]
        TrainingSettings(enabled=True),
        jobs,
        lambda: None,
        files,
    )
    pub = dev_identity(0)
    task = TaskTx(spec, 100_000, 1_000, 50, 0, 1, pub.public_key, 1).signed_by(
        pub, REGTEST.genesis_hash
    )

    async def run() -> list[Any]:
        b1 = builder.make(builder.genesis, txs=(task,))
        (await chain.submit_block(b1)).raise_error()
        await jobs.settle()
        return list(mempool.txs.values())

    pooled = asyncio.run(run())
    if not mapped:
        assert pooled == [] and relay.sent == []
        return
    [update] = pooled
    assert isinstance(update, UpdateTx) and update.participant == me.public_key
    assert update.n_samples == 300  # every row of its own file


def test_a_trimmed_round_that_closed_short_of_updates_still_closes(private: Any) -> None:
    """trim 1 of 3 participants, and the window ended with one update: the
    round is decided (trimmed to the median) instead of waiting for data that
    can never come (the rule refused m <= 2 trim, so the close was unknown at
    every tip)."""
    fv, store, spec, mine = private
    fed = dataclasses.replace(spec.federated, aggregation="trimmed_mean", trim=1)
    trimmed = dataclasses.replace(spec, federated=fed)
    trimmed.validate()
    wire = trimmed.to_wire()
    art, n = train(trimmed, P1, mine)
    ups = ((P1, asyncio.run(store.add_bytes(art)), n),)
    digest, _gains = asyncio.run(fv.answer(CloseCheck(TASK, wire, SEED, (), (), ups)))
    assert digest is not None
    g1 = rounds.next_global(wire, rounds.initial(wire, SEED), [(P1, art, n)])
    assert digest == rounds.round_hash(wire, g1)


def test_an_unparsable_validation_csv_leaves_the_metric_unknown_not_the_close(
    private: Any,
) -> None:
    """The publisher names the validation CSV: one that does not parse must
    not make the round close undecidable (the hash needs no dataset)."""
    fv, store, spec, mine = private
    junk = asyncio.run(store.add_bytes(b"x,y\n1,2\n"))
    fed = dataclasses.replace(spec.federated, validation=junk)
    bad = dataclasses.replace(spec, federated=fed)
    bad.validate()
    wire = bad.to_wire()
    art, n = train(bad, P1, mine)
    ups = ((P1, asyncio.run(store.add_bytes(art)), n),)
    digest, _gains = asyncio.run(fv.answer(CloseCheck(TASK, wire, SEED, (), (), ups)))
    assert digest is not None
    assert fv.metrics[digest] is None
