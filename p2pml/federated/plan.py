"""Whether a federated task can run as published: the refusals of docs/federated.md.

``check_plan`` raises ``ValidationError`` with a stable reason:

* ``federated-estimator``: the estimator (trees, k-NN, ...) or a parameter
  (``positive=True``) cannot be federated;
* ``federated-aggregation``: the rule does not fit the estimator or the mode
  (exact merges sum; robust rules need a clip bound; private shards need a
  robust rule or DP; DP needs private shards and a clip bound; trim too large);
* ``federated-epsilon``: the DP plan lacks a budget or would exceed it;
* ``bad-task-param``: counts out of range (and the allowlist's own checks).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from p2pml.chain.allowlist import ParamValue, check_params
from p2pml.errors import ValidationError
from p2pml.federated.accountant import check_budget
from p2pml.federated.aggregate import FEDAVG, MEDIAN, RULES, SUM, TRIMMED_MEAN, Rule
from p2pml.federated.layout import AVERAGED, MLP, family_of

MAX_ROUNDS = 10_000
MAX_PARTICIPANTS = 10_000
MAX_LOCAL_EPOCHS = 1_000


@dataclass(frozen=True)
class Plan:
    """The federated part of a task."""

    estimator: str
    rounds: int
    participants: int  # updates a round takes (m)
    local_epochs: int = 1
    params: Mapping[str, ParamValue] = field(default_factory=dict)
    rule: Rule = field(default_factory=Rule)
    private: bool = False  # local files: updates cannot be re-executed
    population: int = 0  # participants eligible per round; 0: the same m every round
    epsilon: float | None = None  # DP budget
    delta: float | None = None
    # DP: each participant trains each round on a secret Poisson sample of its
    # rows at this rate (amplification counts only for a sample observers cannot see).
    local_sampling: float = 1.0


def _bad(reason: str, detail: str) -> ValidationError:
    return ValidationError(reason, detail)


def check_plan(plan: Plan) -> float | None:
    """Refuse an impossible plan; return the epsilon a DP plan will spend."""
    family = family_of(plan.estimator)
    check_params(plan.estimator, plan.params)
    if plan.params.get("positive"):
        raise _bad("federated-estimator", "positive=True cannot be merged exactly")
    if family == MLP and plan.params.get("solver") == "lbfgs":
        raise _bad("federated-estimator", "federated MLPs train by epochs: solver sgd or adam")
    for name, value, hi in (
        ("rounds", plan.rounds, MAX_ROUNDS),
        ("participants", plan.participants, MAX_PARTICIPANTS),
        ("local_epochs", plan.local_epochs, MAX_LOCAL_EPOCHS),
    ):
        if isinstance(value, bool) or not 1 <= value <= hi:
            raise _bad("bad-task-param", f"{name} must be 1..{hi}, got {value!r}")
    if plan.population and plan.population < plan.participants:
        raise _bad("bad-task-param", "population smaller than the participants per round")
    if not 0 < plan.local_sampling <= 1:
        raise _bad("bad-task-param", f"local sampling rate {plan.local_sampling!r}")
    rule = plan.rule
    if rule.name not in RULES:
        raise _bad("federated-aggregation", f"unknown rule {rule.name!r} ({', '.join(RULES)})")
    if rule.clip is not None and not (math.isfinite(rule.clip) and rule.clip > 0):
        raise _bad("federated-aggregation", f"clip bound {rule.clip!r}")
    dp = rule.noise_multiplier > 0
    if family not in AVERAGED:
        if rule.name != SUM or rule.clip is not None or dp or plan.private:
            raise _bad(
                "federated-aggregation",
                f"{plan.estimator} merges statistics exactly: rule 'sum', public shards, "
                "no clipping or noise",
            )
        return None
    if rule.name == SUM:
        raise _bad("federated-aggregation", f"{plan.estimator} averages parameters")
    if rule.name in (MEDIAN, TRIMMED_MEAN) and rule.clip is None:
        raise _bad("federated-aggregation", f"{rule.name} needs a clip bound C")
    if rule.name == TRIMMED_MEAN and not 0 <= 2 * rule.trim < plan.participants:
        raise _bad("federated-aggregation", f"trim {rule.trim} of {plan.participants}")
    if plan.private and rule.name == FEDAVG and not dp:
        raise _bad("federated-aggregation", "private shards need median, trimmed_mean or DP")
    if not dp:
        if rule.noise_multiplier < 0 or not math.isfinite(rule.noise_multiplier):
            raise _bad("federated-epsilon", f"noise multiplier {rule.noise_multiplier!r}")
        return None
    if rule.clip is None:
        raise _bad("federated-aggregation", "local DP needs a clip bound C")
    if not plan.private:
        # Public shards are public already, and their audits re-execute updates,
        # which the participants' secret noise makes impossible.
        raise _bad("federated-aggregation", "local DP is for private shards")
    if plan.epsilon is None or plan.delta is None:
        raise _bad("federated-epsilon", "a DP plan needs an epsilon budget and a delta")
    return check_budget(
        rule.noise_multiplier, plan.local_sampling, plan.rounds, plan.delta, plan.epsilon
    )
