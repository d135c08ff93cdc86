"""Protocol 6 federated rules: private shards, robust rules and local DP on
the chain. The spec's refusals with their exact reasons, the task deadline
that must fit the rounds, private updates (accepted by rule, sample count
capped, paid in equal shares), the aggregation by the task's rule, and the
epsilon recorded after each round close (the accountant's figure)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from p2pml.chain.federated_rounds import MAX_PRIVATE_SAMPLES, fed_key, federated_payout
from p2pml.chain.fedspec import FederatedSpec
from p2pml.chain.params import REGTEST
from p2pml.chain.tasks import task_key
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.txrules import handler_for
from p2pml.chain.types import RoundCloseTx, TaskTx
from p2pml.errors import ValidationError
from p2pml.federated import rounds
from p2pml.federated.accountant import epsilon_spent
from p2pml.federated.encoding import encode
from p2pml.ipfs.cid import cid_of_bytes
from tests.unit.chain.test_chain_federated import (
    LAYOUT,
    P1,
    P2,
    P3,
    PUB,
    SPEC,
    mine,
    setup,
    update,
    vector,
)

VALIDATION = cid_of_bytes(b"validation rows")
PRIVATE = FederatedSpec(
    "median",
    participants=3,
    local_epochs=1,
    round_blocks=3,
    classes=(0, 1, 2),
    private="digits",
    validation=VALIDATION,
    clip=10.0,
)
DP = dataclasses.replace(
    PRIVATE, aggregation="fedavg", noise_multiplier=4.0, delta=1e-5, epsilon=5.0
)


def spec(fed: FederatedSpec, **change: Any) -> TaskSpec:
    return dataclasses.replace(SPEC, federated=fed, **change)


def task(s: TaskSpec, deadline: int = 30, bounty: int = 900) -> TaskTx:
    return TaskTx(
        spec=s,
        bounty=bounty,
        fee=1000,
        deadline=deadline,
        result_reward=0,
        max_results=1,
        publisher=PUB.public_key,
        nonce=9,
    ).signed_by(PUB, REGTEST.genesis_hash)


# -- the spec --------------------------------------------------------------------------


def test_private_and_dp_specs_round_trip_and_validate() -> None:
    for fed in (PRIVATE, DP, dataclasses.replace(PRIVATE, aggregation="trimmed_mean", trim=1)):
        s = spec(fed)
        s.validate()
        wire = s.to_wire()
        assert list(wire["federated"]) == sorted(wire["federated"])
        assert TaskSpec.from_wire(wire) == s


def test_robust_rules_are_allowed_on_public_shards() -> None:
    spec(dataclasses.replace(PRIVATE, private="", validation="")).validate()


def r(fed: FederatedSpec, **change: Any) -> FederatedSpec:
    return dataclasses.replace(fed, **change)


@pytest.mark.parametrize(
    ("s", "reason"),
    [
        # nb/ols statistics from a private file cannot be checked
        (
            spec(
                r(PRIVATE, aggregation="sum", clip=0.0, classes=()),
                model="ridge",
                kind="regression",
                metric="r2",
            ),
            "federated-private-family",
        ),
        (spec(r(PRIVATE, aggregation="sum")), "federated-aggregation"),
        (spec(r(PRIVATE, clip=0.0)), "federated-aggregation"),  # median needs C
        (spec(r(PRIVATE, aggregation="fedavg")), "federated-aggregation"),  # private, no DP
        (spec(r(PRIVATE, trim=1)), "federated-aggregation"),  # trim only for trimmed_mean
        (spec(r(PRIVATE, aggregation="trimmed_mean", trim=0)), "federated-aggregation"),
        # 2t < P: trimming 1 of 2 updates on each side leaves nothing
        (
            spec(r(PRIVATE, aggregation="trimmed_mean", trim=1, participants=2)),
            "federated-aggregation",
        ),
        (spec(r(PRIVATE, validation="")), "federated-validation"),
        (spec(r(PRIVATE, validation="not-a-cid")), "federated-validation"),
        (spec(r(PRIVATE, private="no spaces")), "bad-task-param"),
        (spec(r(PRIVATE, clip=float("nan"))), "bad-task-param"),
        (spec(r(PRIVATE, clip=-1.0)), "bad-task-param"),
        (spec(r(PRIVATE, sampling_rate=0.0)), "bad-task-param"),
        # local sampling is not on the chain in version 6 (its accountant is slow)
        (spec(r(DP, sampling_rate=0.5)), "bad-task-param"),
        (spec(r(PRIVATE, delta=1e-5)), "bad-task-param"),  # DP fields without DP
        (spec(r(DP, clip=0.0)), "federated-aggregation"),  # DP needs C
        (spec(r(DP, private="", validation="")), "federated-aggregation"),  # DP on public
        (spec(r(DP, delta=0.0)), "federated-epsilon"),
        (spec(r(DP, epsilon=0.0)), "federated-epsilon"),
        # 2 rounds at z = 4 spend 3.19 at delta 1e-5: over a budget of 3
        (spec(r(DP, epsilon=3.0)), "federated-epsilon"),
    ],
)
def test_bad_private_specs_are_refused(s: TaskSpec, reason: str) -> None:
    with pytest.raises(ValidationError) as err:
        s.validate()
    assert err.value.reason == reason


def test_the_epsilon_budget_counts_the_tasks_rounds() -> None:
    spent = epsilon_spent(4.0, 1.0, 2, 1e-5)
    assert 3.0 < spent <= 5.0
    spec(DP).validate()  # 2 rounds: within 5
    with pytest.raises(ValidationError) as err:
        spec(DP, rounds=6).validate()  # 6 rounds: over
    assert err.value.reason == "federated-epsilon"
    assert epsilon_spent(4.0, 1.0, 6, 1e-5) > 5.0


def test_a_deadline_must_fit_the_rounds() -> None:
    # 2 rounds of 3 blocks, each closed one block after its window: 8 blocks.
    handler_for(task(spec(PRIVATE), deadline=8)).check(task(spec(PRIVATE), deadline=8), REGTEST)
    t = task(spec(PRIVATE), deadline=7)
    with pytest.raises(ValidationError) as err:
        handler_for(t).check(t, REGTEST)
    assert err.value.reason == "federated-deadline"


# -- private rounds on the chain ---------------------------------------------------------


def test_private_updates_take_any_plausible_count_aggregate_by_median_pay_equal_shares() -> None:
    b, n, o = setup()
    s = spec(PRIVATE)
    t = task(s)
    b1 = mine(b, n, b.genesis, t)
    wire = s.to_wire()
    # Counts nobody can check: 1, 5 and 10^9 rows; the cap is the only bound.
    u1 = update(o, t, b1.hash, P1, 0, 1.0, n=1)
    u2 = update(o, t, b1.hash, P2, 0, 2.0, n=5)
    u3 = update(o, t, b1.hash, P3, 0, -10.0, n=MAX_PRIVATE_SAMPLES)
    over = update(o, t, b1.hash, P3, 0, 3.0, n=MAX_PRIVATE_SAMPLES + 1)
    bad = b.make(b1.hash, txs=(over,), register=False)
    assert n.feed(bad).rejected == [(bad.hash, "bad-update-value")]
    g0 = rounds.initial(wire, b1.hash)
    data = [
        (who.public_key, encode(LAYOUT, vector(scale)), k)
        for who, scale, k in ((P1, 1.0, 1), (P2, 2.0, 5), (P3, -10.0, MAX_PRIVATE_SAMPLES))
    ]
    g1 = rounds.next_global(wire, g0, data)
    # The median of (1, 2, -10) x the ramp is the 1x ramp: the -10x attacker moves nothing.
    assert (g1 == vector(1.0)).all()
    plain = rounds.next_global(SPEC.to_wire(), g0, data)  # fedavg by counts: dragged away
    assert not (plain == vector(1.0)).all()
    close = RoundCloseTx(t.id, 0, rounds.round_hash(wire, g1))
    mine(b, n, b1.hash, u1, u2, u3, close)
    fed = n.chain.state[fed_key(t.id)]
    assert fed["epsilon"] == 0.0  # no DP
    # 450 for the round, 150 each whatever the counts claimed.
    payout = federated_payout(n.chain.state[task_key(t.id)], fed)
    keys = sorted(p.public_key for p in (P1, P2, P3))
    assert payout == [*[[k, 150] for k in keys], [PUB.public_key, 900 - 450]]


def test_each_dp_round_close_records_the_accountants_epsilon() -> None:
    b, n, o = setup()
    s = spec(DP)
    t = task(s)
    parent = mine(b, n, b.genesis, t)
    seed = parent.hash
    wire = s.to_wire()
    current = rounds.initial(wire, seed)
    assert n.chain.state[fed_key(t.id)]["epsilon"] == 0.0
    for rnd in range(2):
        base = rounds.round_hash(wire, current)  # G_rnd: what round rnd trains from
        ups = [
            update(o, t, seed, who, rnd, k + rnd, n=7, base=base)
            for k, who in enumerate((P1, P2, P3))
        ]
        data = [
            (who.public_key, encode(LAYOUT, vector(k + rnd)), 7)
            for k, who in enumerate((P1, P2, P3))
        ]
        current = rounds.next_global(wire, current, data)
        parent = mine(
            b, n, parent.hash, *ups, RoundCloseTx(t.id, rnd, rounds.round_hash(wire, current))
        )
        recorded = n.chain.state[fed_key(t.id)]["epsilon"]
        assert recorded == epsilon_spent(4.0, 1.0, rnd + 1, 1e-5)
    assert recorded <= DP.epsilon
    assert not n.chain.state[task_key(t.id)]["open"]
