"""One participant's local training step in round r: from G_r on its own shard.

* sgd_classifier / sgd_regressor: ``coef_``/``intercept_`` set from G_r, then
  one ``partial_fit`` per local epoch (with the task's class list), epoch ``e``
  shuffling with ``random_state + e``; the learning-rate clock ``t_`` resumes
  at ``1 + r * local_epochs * n`` so that ``learning_rate="optimal"`` decays
  over rounds as it would over epochs of one fit.
* logistic_regression: warm start from G_r for ``local_epochs * max_iter``
  solver iterations. A class the shard lacks gets one all-zero row of weight 0,
  so ``coef_`` keeps the task's shape without changing the objective.
* gaussian_nb, linear_regression, ridge: the shard's exact statistics
  (they do not depend on G_r).

Deterministic for given inputs (the random_state is the chain-derived one of
docs/tasks.md), so a public-shard update can be re-executed and audited.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from p2pml.chain.allowlist import ParamValue, check_params, protocol_params
from p2pml.errors import ValidationError
from p2pml.federated.encoding import Vector, check_vector
from p2pml.federated.layout import LINEAR, Layout
from p2pml.federated.params import Labels, check_data, split_linear, statistics, vector_of
from p2pml.ml.estimators import estimator_class

_RANDOM_STATE_MASK = 0x7FFF_FFFF
#: scikit-learn's default when a task leaves max_iter unset.
_LOGISTIC_MAX_ITER = 100


def train_local(
    layout: Layout,
    params: Mapping[str, ParamValue],
    global_vector: Vector,
    X: npt.NDArray[np.float64],
    y: npt.NDArray[Any],
    classes: Labels,
    *,
    round: int,
    local_epochs: int,
    random_state: int,
) -> Vector:
    """The participant's update vector (its sample count is ``len(y)``)."""
    check_params(layout.estimator, params)
    check_vector(layout, global_vector)
    check_data(layout, X, y, classes)
    if local_epochs < 1 or round < 0:
        raise ValidationError("bad-task-param", f"local_epochs {local_epochs}, round {round}")
    X = np.ascontiguousarray(X, dtype=np.float64)
    if layout.family != LINEAR:
        return statistics(layout, X, y, classes)
    kwargs = protocol_params(layout.estimator, params, random_state)
    coef, intercept = split_linear(layout, global_vector)
    if layout.estimator == "logistic_regression":
        return _logistic(layout, kwargs, coef, intercept, X, y, classes, local_epochs)
    estimator = estimator_class(layout.estimator)(**kwargs)
    estimator.coef_, estimator.intercept_ = coef, intercept
    estimator.t_ = 1.0 + float(round) * local_epochs * len(y)
    for epoch in range(local_epochs):
        estimator.random_state = (random_state + epoch) & _RANDOM_STATE_MASK
        if layout.n_classes:
            estimator.partial_fit(X, y, classes=classes)
        else:
            estimator.partial_fit(X, np.asarray(y, dtype=np.float64))
    return vector_of(layout, estimator)


def _logistic(
    layout: Layout,
    kwargs: dict[str, Any],
    coef: Vector,
    intercept: Vector,
    X: npt.NDArray[np.float64],
    y: npt.NDArray[Any],
    classes: Labels,
    local_epochs: int,
) -> Vector:
    kwargs["max_iter"] = local_epochs * int(kwargs.get("max_iter", _LOGISTIC_MAX_ITER))
    kwargs["warm_start"] = True
    estimator = estimator_class(layout.estimator)(**kwargs)
    estimator.coef_, estimator.intercept_ = coef, intercept
    missing = np.setdiff1d(classes, y)
    X_all = np.vstack([X, np.zeros((len(missing), X.shape[1]))])
    y_all = np.concatenate([np.asarray(y), missing.astype(np.asarray(y).dtype)])
    weight = np.concatenate([np.ones(len(y)), np.zeros(len(missing))])
    with warnings.catch_warnings():
        # A few iterations per round is the point; "did not converge" is expected.
        warnings.simplefilter("ignore")
        estimator.fit(X_all, y_all, sample_weight=weight)
    return vector_of(layout, estimator)
