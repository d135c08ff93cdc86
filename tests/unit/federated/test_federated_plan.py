"""The privacy accountant against dp-accounting's direct computation, and the
refusals of a federated plan."""

from __future__ import annotations

import math

import pytest
from dp_accounting.rdp import rdp_privacy_accountant as rdp_direct

from p2pml.errors import ValidationError
from p2pml.federated.accountant import ORDERS, epsilon_spent, noise_for_epsilon
from p2pml.federated.aggregate import Rule
from p2pml.federated.plan import Plan, check_plan


@pytest.mark.parametrize(
    ("z", "q", "rounds"), [(1.1, 0.01, 1000), (1.0, 1.0, 30), (3.0, 1.0, 30), (0.8, 0.05, 200)]
)
def test_epsilon_equals_the_direct_rdp_computation(z: float, q: float, rounds: int) -> None:
    # Noise z C on a delta clipped to C: sensitivity 2 C, so the mechanism's multiplier is z / 2.
    rdp = rdp_direct._compute_rdp_poisson_subsampled_gaussian(q, z / 2, list(ORDERS)) * rounds
    direct, _ = rdp_direct.compute_epsilon(list(ORDERS), rdp, 1e-5)
    ours = epsilon_spent(z, q, rounds, 1e-5)
    assert direct <= ours <= direct + 1e-6  # rounded up to 6 decimals


def test_known_figures() -> None:
    # docs/federated.md quotes these (delta 1e-5): 30 rounds without local sampling,
    # and 1000 rounds at local sampling 0.01.
    assert 110.0 < epsilon_spent(1.0, 1.0, 30, 1e-5) < 111.0
    assert 22.0 < epsilon_spent(3.0, 1.0, 30, 1e-5) < 23.5
    assert 1.7 < epsilon_spent(2.2, 0.01, 1000, 1e-5) < 1.72


def test_noise_for_epsilon_is_the_smallest_within_budget() -> None:
    z = noise_for_epsilon(3.0, 1.0, 10, 1e-5)
    assert epsilon_spent(z, 1.0, 10, 1e-5) <= 3.0
    assert epsilon_spent(z - 0.002, 1.0, 10, 1e-5) > 3.0


DP = Rule("fedavg", clip=1.0, noise_multiplier=3.0)


def plan(**kw: object) -> Plan:
    base: dict[str, object] = {"estimator": "sgd_classifier", "rounds": 30, "participants": 5}
    base.update(kw)
    return Plan(**base)  # type: ignore[arg-type]


def test_good_plans() -> None:
    assert check_plan(plan()) is None
    assert check_plan(plan(private=True, rule=Rule("median", clip=1.0))) is None
    eps = check_plan(plan(rule=DP, epsilon=30.0, delta=1e-5, private=True))
    assert eps == epsilon_spent(3.0, 1.0, 30, 1e-5)
    # The robust rules may run on noisy updates too (post-processing keeps the guarantee).
    robust_dp = Rule("median", clip=1.0, noise_multiplier=3.0)
    assert check_plan(plan(rule=robust_dp, epsilon=30.0, delta=1e-5, private=True)) == eps
    assert check_plan(plan(estimator="gaussian_nb", rule=Rule("sum"), rounds=1)) is None


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"estimator": "random_forest_classifier"}, "federated-estimator"),
        ({"estimator": "hist_gradient_boosting_regressor"}, "federated-estimator"),
        ({"estimator": "knn_classifier"}, "federated-estimator"),
        ({"estimator": "knn_regressor"}, "federated-estimator"),
        (
            {"estimator": "linear_regression", "rule": Rule("sum"), "params": {"positive": True}},
            "federated-estimator",
        ),
        ({"rule": DP, "epsilon": 20.0, "delta": 1e-5, "private": True}, "federated-epsilon"),
        ({"rule": DP, "private": True}, "federated-epsilon"),  # no budget
        ({"rule": DP, "epsilon": 1e9, "delta": 1.5, "private": True}, "federated-epsilon"),
        ({"rule": DP, "epsilon": 99.0, "delta": 1e-5}, "federated-aggregation"),  # public shards
        (
            {
                "rule": Rule("fedavg", noise_multiplier=3.0),
                "epsilon": 99.0,
                "delta": 1e-5,
                "private": True,
            },
            "federated-aggregation",  # no clip bound
        ),
        ({"local_sampling": 0.0}, "bad-task-param"),
        ({"local_sampling": 1.5}, "bad-task-param"),
        ({"rule": Rule("sum")}, "federated-aggregation"),
        ({"rule": Rule("krum")}, "federated-aggregation"),
        ({"rule": Rule("median")}, "federated-aggregation"),  # no clip bound
        ({"rule": Rule("trimmed_mean", trim=3, clip=1.0)}, "federated-aggregation"),
        ({"rule": Rule("fedavg", clip=-1.0)}, "federated-aggregation"),
        ({"private": True}, "federated-aggregation"),  # plain fedavg on unaudited updates
        ({"estimator": "gaussian_nb", "rule": Rule("median", clip=1.0)}, "federated-aggregation"),
        ({"estimator": "ridge", "rule": Rule("sum"), "private": True}, "federated-aggregation"),
        ({"rounds": 0}, "bad-task-param"),
        ({"local_epochs": True}, "bad-task-param"),
        ({"population": 3}, "bad-task-param"),
        ({"params": {"loss": "nope"}}, "bad-task-param"),
    ],
)
def test_refusals_carry_reasons(kw: dict[str, object], reason: str) -> None:
    with pytest.raises(ValidationError) as err:
        check_plan(plan(**kw))
    assert err.value.reason == reason


def test_local_sampling_amplifies_privacy_and_participant_sampling_does_not() -> None:
    base = {"rule": DP, "epsilon": 100.0, "delta": 1e-5, "private": True}
    full = check_plan(plan(**base))
    sampled = check_plan(plan(**base, local_sampling=0.05))
    # An observer sees who published: choosing 5 of 500 participants hides nothing.
    population = check_plan(plan(**base, population=500))
    assert full is not None and sampled is not None
    assert sampled < full
    assert population == full
    assert math.isclose(sampled, epsilon_spent(3.0, 0.05, 30, 1e-5))
