"""Protocol 7 federated rules: rewards by validation improvement. The spec's
``reward`` key and its refusals, the gains a round close carries (shape and
the oracle's ``bad-round-gains``), the gains recorded per round, and the
payout: split by gain, sample or equal shares for a round nobody improved or
shares when the validation set did not parse (gains ``[]``). The gain
function itself is checked against hand-computed micro-units."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from p2pml.chain.encoding import decode_tx, encode_tx
from p2pml.chain.federated_rounds import fed_key, federated_payout, round_shares
from p2pml.chain.tasks import task_key
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.types import MAX_GAIN, RoundCloseTx, TaskTx
from p2pml.errors import DecodeError, ValidationError
from p2pml.federated import rounds
from p2pml.ipfs.cid import cid_of_bytes
from tests.unit.chain.test_chain_federated import (
    FED,
    P1,
    P2,
    P3,
    PUB,
    SPEC,
    Oracle,
    fed_task,
    mine,
    setup,
    update,
)

VALIDATION = cid_of_bytes(b"validation rows")
IMPROVE = dataclasses.replace(
    SPEC,
    federated=dataclasses.replace(FED, participants=3, reward="improvement", validation=VALIDATION),
)
WIRE = IMPROVE.to_wire()


class GainOracle(Oracle):
    """The chain test oracle plus the gains a node would have scored: the
    test fixes them per round (the scoring itself is the worker's, tested in
    tests/unit/node/test_federated_gains.py)."""

    def __init__(self) -> None:
        super().__init__()
        self.gains: dict[int, tuple[int, ...]] = {}

    def __call__(self, tx: Any, task: dict[str, Any], audit: bool) -> str | None:
        got = super().__call__(tx, task, audit)
        if got or not isinstance(tx, RoundCloseTx):
            return got
        return "" if self.gains.get(tx.round, ()) == tx.gains else "bad-round-gains"


def improvement_round(
    gains: tuple[int, ...], expected: tuple[int, ...] | None = None, bounty: int = 1000
) -> tuple[Any, Any, TaskTx, list[Any], RoundCloseTx]:
    """A 2-round improvement task whose round 0 takes P1, P2, P3 (10, 20, 30
    rows); the close carries ``gains``, the oracle expects ``expected``."""
    b, n, _o = setup()
    o = GainOracle()
    n.chain.verdicts = o
    b.ref.verdicts = o
    o.gains[0] = gains if expected is None else expected
    t = fed_task(bounty=bounty, spec=IMPROVE)
    b1 = mine(b, n, b.genesis, t)
    ups = [
        update(o, t, b1.hash, who, 0, scale, n=rows)
        for who, scale, rows in ((P1, 1.0, 10), (P2, 2.0, 20), (P3, 3.0, 30))
    ]
    g1 = rounds.next_global(
        WIRE,
        rounds.initial(WIRE, b1.hash),
        [(u.participant, o.artifacts[u.update_cid], u.n_samples) for u in ups],
    )
    close = RoundCloseTx(t.id, 0, rounds.round_hash(WIRE, g1), gains)
    return (b, n), b1, t, ups, close


# -- the spec ---------------------------------------------------------------------------


def test_the_reward_key_round_trips_and_defaults_to_samples() -> None:
    assert FED.reward == "samples" and SPEC.to_wire()["federated"]["reward"] == "samples"
    assert TaskSpec.from_wire(WIRE) == IMPROVE
    IMPROVE.validate()
    without = {k: v for k, v in WIRE["federated"].items() if k != "reward"}
    with pytest.raises(DecodeError):
        TaskSpec.from_wire({**WIRE, "federated": without})
    with pytest.raises(DecodeError):
        TaskSpec.from_wire({**WIRE, "federated": {**WIRE["federated"], "reward": 1}})


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (dict(reward="accuracy"), "federated-reward"),
        (dict(reward=""), "federated-reward"),
        (dict(validation=""), "federated-validation"),
    ],
)
def test_bad_reward_specs_are_refused(change: dict[str, Any], reason: str) -> None:
    fed = dataclasses.replace(IMPROVE.federated, **change)  # type: ignore[arg-type]
    with pytest.raises(ValidationError) as err:
        dataclasses.replace(IMPROVE, federated=fed).validate()
    assert err.value.reason == reason


def test_a_statistics_model_cannot_reward_improvement() -> None:
    fed = dataclasses.replace(
        FED, aggregation="sum", classes=(), reward="improvement", validation=VALIDATION
    )
    spec = dataclasses.replace(SPEC, model="ridge", kind="regression", metric="r2", federated=fed)
    with pytest.raises(ValidationError) as err:
        spec.validate()
    assert err.value.reason == "federated-reward"


# -- the wire ---------------------------------------------------------------------------


def test_gains_round_trip_and_their_bounds_are_decode_errors() -> None:
    c = RoundCloseTx(b"\x01" * 32, 2, b"\x02" * 32, (0, 7, MAX_GAIN))
    assert decode_tx(encode_tx(c)) == c
    over = dataclasses.replace(c, gains=(MAX_GAIN + 1,))
    with pytest.raises(DecodeError):
        decode_tx(encode_tx(over))
    with pytest.raises(DecodeError):
        decode_tx(encode_tx(dataclasses.replace(c, gains=(0,) * 1001)))


# -- rounds and payout ------------------------------------------------------------------


def test_a_round_pays_by_gain_and_an_update_without_gain_earns_nothing() -> None:
    (b, n), b1, t, ups, close = improvement_round((5, 0, 15))
    b2 = mine(b, n, b1.hash, *ups, close)
    fed = n.chain.state[fed_key(t.id)]
    assert fed["gains"] == [[5, 0, 15]]
    # 500 for round 0: 5/20 and 15/20; P2 (gain 0) nothing although it sent 20 rows.
    task = n.chain.state[task_key(t.id)]
    assert round_shares(task, fed) == [[125, 0, 375]]
    # Round 1 closes empty when its window ends: its 500 goes back.
    tip = b2
    for _ in range(3):
        tip = mine(b, n, tip.hash)
    same = n.chain.state[fed_key(t.id)]["models"][-1]  # an empty round keeps G_1
    mine(b, n, tip.hash, RoundCloseTx(t.id, 1, same))
    rec = n.chain.state[task_key(t.id)]
    assert not rec["open"]
    earned = {P1.public_key: 125, P3.public_key: 375}
    assert rec["payout"] == [[k, earned[k]] for k in sorted(earned)] + [[PUB.public_key, 500]]


def test_a_round_nobody_improved_falls_back_to_sample_shares() -> None:
    # Every gain 0: paying the round back would let a publisher choose a
    # validation set nobody can improve on and get the round trained for free.
    (b, n), b1, t, ups, close = improvement_round((0, 0, 0))
    mine(b, n, b1.hash, *ups, close)
    fed = n.chain.state[fed_key(t.id)]
    task = n.chain.state[task_key(t.id)]
    assert fed["gains"] == [[0, 0, 0]]
    assert round_shares(task, fed) == [[83, 166, 250]]
    paid = federated_payout(task, fed)
    assert sum(amount for key, amount in paid if key != PUB.public_key) == 499


def test_an_unparsable_validation_set_falls_back_to_sample_shares() -> None:
    # Gains [] (the oracle's verdict on a set that does not parse): 10:20:30.
    (b, n), b1, t, ups, close = improvement_round(())
    mine(b, n, b1.hash, *ups, close)
    fed = n.chain.state[fed_key(t.id)]
    assert fed["gains"] == [[]]
    assert round_shares(n.chain.state[task_key(t.id)], fed) == [[83, 166, 250]]


def test_a_private_round_without_gains_falls_back_to_equal_shares() -> None:
    task = {
        "bounty": 900,
        "spec": {"rounds": 1, "federated": {"private": "digits", "reward": "improvement"}},
    }
    ups = [[P1.public_key, "a", 1], [P2.public_key, "b", 50]]
    fed = {"closed": [[3, ups], [4, ups]], "gains": [[], [1, 2]]}
    assert round_shares(task, fed) == [[450, 450], [300, 600]]


@pytest.mark.parametrize(
    ("gains", "expected", "reason"),
    [
        ((5, 0), (5, 0, 15), "bad-round-gains"),  # one gain short: a rule, before the oracle
        ((5, 0, 15, 1), (5, 0, 15), "bad-round-gains"),
        ((5, 1, 15), (5, 0, 15), "bad-round-gains"),  # the oracle scored P2 at 0
        ((), (5, 0, 15), "bad-round-gains"),  # claiming "unparsable" when it parsed
    ],
)
def test_wrong_gains_make_the_block_invalid(
    gains: tuple[int, ...], expected: tuple[int, ...], reason: str
) -> None:
    (b, n), b1, _t, ups, close = improvement_round(gains, expected)
    blk = b.make(b1.hash, txs=(*ups, close), register=False)
    assert n.feed(blk).rejected == [(blk.hash, reason)]
    assert n.tip == b1.hash


def test_a_task_rewarding_samples_takes_no_gains() -> None:
    b, n, o = setup()
    t = fed_task()
    b1 = mine(b, n, b.genesis, t)
    wire = SPEC.to_wire()
    ups = [update(o, t, b1.hash, who, 0, s) for who, s in ((P1, 1.0), (P2, 2.0))]
    g1 = rounds.next_global(
        wire,
        rounds.initial(wire, b1.hash),
        [(u.participant, o.artifacts[u.update_cid], u.n_samples) for u in ups],
    )
    close = RoundCloseTx(t.id, 0, rounds.round_hash(wire, g1), (1, 2))
    blk = b.make(b1.hash, txs=(*ups, close), register=False)
    assert n.feed(blk).rejected == [(blk.hash, "bad-round-gains")]


# -- the gain function ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "base", "higher", "gain"),
    [
        (0.75, 0.5, True, 250_000),
        (0.5, 0.75, True, 0),  # worse: no gain, never negative
        (0.5, 0.75, False, 250_000),  # an error metric: lower is better
        (0.5000004, 0.5, True, 0),  # below a micro-unit
        (0.5000016, 0.5, True, 1),  # floor, not round
        (None, 0.5, True, 0),  # an update whose model cannot be scored
        (1e300, 0.0, True, MAX_GAIN),  # capped where float64 counts integers
        (-1e308, 1e308, False, MAX_GAIN),  # d * 10^6 overflows to +inf: capped
    ],
)
def test_gain_in_micro_units(score: float | None, base: float, higher: bool, gain: int) -> None:
    assert rounds.gain(score, base, higher) == gain
