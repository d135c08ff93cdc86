"""One participant's local training step in round r: from G_r on its own shard.

* sgd_classifier / sgd_regressor: ``coef_``/``intercept_`` set from G_r, then
  one ``partial_fit`` per local epoch (with the task's class list), epoch ``e``
  shuffling with ``random_state + e``; the learning-rate clock ``t_`` resumes
  at ``1 + r * local_epochs * m * n`` (``m`` participants per round) so that
  ``learning_rate="optimal"`` decays with the rows the global model has seen,
  as it would over the epochs of one centralised fit.
* logistic_regression: warm start from G_r for ``local_epochs * max_iter``
  solver iterations. A class the shard lacks gets one all-zero row of weight 0,
  so ``coef_`` keeps the task's shape without changing the objective.
* mlp_classifier / mlp_regressor (solvers sgd and adam): the network's
  weights set from G_r, then one ``partial_fit`` epoch per local epoch as for
  SGD; the optimiser's state (Adam moments, momentum) is local to the round.
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
from p2pml.federated.layout import LINEAR, MLP, Layout, task_layout
from p2pml.federated.noise import privatise, secret_sample
from p2pml.federated.params import (
    Labels,
    check_data,
    set_mlp_state,
    split_linear,
    statistics,
    vector_of,
)
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
    participants: int,
) -> Vector:
    """The participant's update vector (its sample count is ``len(y)``);
    ``participants`` is the task's ``m``, which drives the SGD clock."""
    check_params(layout.estimator, params)
    check_vector(layout, global_vector)
    check_data(layout, X, y, classes)
    if local_epochs < 1 or round < 0 or participants < 1:
        raise ValidationError(
            "bad-task-param",
            f"local_epochs {local_epochs}, round {round}, participants {participants}",
        )
    X = np.ascontiguousarray(X, dtype=np.float64)
    if layout.family not in (LINEAR, MLP):
        return statistics(layout, X, y, classes)
    kwargs = protocol_params(layout.estimator, params, random_state)
    if layout.family == MLP:
        return _mlp(layout, params, kwargs, global_vector, X, y, classes, local_epochs)
    coef, intercept = split_linear(layout, global_vector)
    if layout.estimator == "logistic_regression":
        return _logistic(layout, kwargs, coef, intercept, X, y, classes, local_epochs)
    estimator = estimator_class(layout.estimator)(**kwargs)
    estimator.coef_, estimator.intercept_ = coef, intercept
    # One round consumes about m * n rows across the participants: the averaged
    # model's step size should decay with those, not with this shard's n alone.
    estimator.t_ = 1.0 + float(round) * local_epochs * participants * len(y)
    for epoch in range(local_epochs):
        estimator.random_state = (random_state + epoch) & _RANDOM_STATE_MASK
        if layout.n_classes:
            estimator.partial_fit(X, y, classes=classes)
        else:
            estimator.partial_fit(X, np.asarray(y, dtype=np.float64))
    return vector_of(layout, estimator)


def train_dp(
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
    participants: int,
    clip_bound: float,
    noise_multiplier: float,
    local_sampling: float = 1.0,
) -> Vector:
    """What a participant of a local-DP task publishes: train on a secret Poisson
    sample of its rows (rate ``local_sampling``), then clip the delta to ``C``
    and add its own secret N(0, (z C)^2) noise (:mod:`p2pml.federated.noise`).
    An empty sample publishes noise around G_r. Not re-executable, by design.
    The update's sample count is ``len(y)``, the whole shard: the secret
    sample's size would reveal whether a row was drawn."""
    mask = secret_sample(len(y), local_sampling)
    trained = global_vector
    if mask.any():
        trained = train_local(
            layout,
            params,
            global_vector,
            X[mask],
            y[mask],
            classes,
            round=round,
            local_epochs=local_epochs,
            random_state=random_state,
            participants=participants,
        )
    return privatise(layout, global_vector, trained, clip_bound, noise_multiplier)


def _mlp(
    layout: Layout,
    params: Mapping[str, ParamValue],
    kwargs: dict[str, Any],
    global_vector: Vector,
    X: npt.NDArray[np.float64],
    y: npt.NDArray[Any],
    classes: Labels,
    local_epochs: int,
) -> Vector:
    if kwargs.get("solver", "adam") == "lbfgs":
        raise ValidationError("federated-estimator", "federated MLPs train by epochs: sgd or adam")
    if task_layout(layout.estimator, layout.n_features, layout.n_classes, params) != layout:
        raise ValidationError("bad-update-shape", "hidden_layer_sizes do not match the layout")
    random_state = int(kwargs["random_state"])
    estimator = estimator_class(layout.estimator)(**kwargs)
    estimator.n_features_in_ = layout.n_features
    if layout.n_classes:
        estimator.classes_ = np.asarray(classes).copy()
    set_mlp_state(layout, global_vector, estimator, classes)
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
