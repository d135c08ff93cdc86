"""Parameter vectors to and from scikit-learn estimators, without pickle.

``initial_vector`` is G_0; ``vector_of`` reads a fitted linear model;
``statistics`` computes the exact-merge statistics of a shard; ``build`` turns
any vector of a task into a usable (predicting) estimator by setting its
fitted attributes from the numbers alone.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from p2pml.chain.allowlist import ParamValue, check_params
from p2pml.errors import ValidationError
from p2pml.federated.encoding import Vector, canonical, check_vector
from p2pml.federated.layout import LINEAR, MLP, NB, Layout
from p2pml.ml.estimators import estimator_class

Labels = npt.NDArray[np.int64]

MLP_INIT_DOMAIN: Final = b"p2pml/fed-mlp-init/v1"


def initial_vector(
    layout: Layout, task_seed: bytes, params: Mapping[str, ParamValue] | None = None
) -> Vector:
    """G_0. All zeros for the linear family (convex: a seeded start buys nothing)
    and the statistics families (the merge identity). An MLP needs a shared
    non-zero start (all-zero hidden units stay identical forever): Glorot-uniform
    as scikit-learn draws it, but from the task seed (:func:`mlp_initial_vector`)."""
    if len(task_seed) != 32:
        raise ValueError("task_seed must be 32 bytes")
    if layout.family == MLP:
        activation = (params or {}).get("activation", "relu")
        return mlp_initial_vector(layout, task_seed, activation == "logistic")
    return np.zeros(layout.size, dtype=np.float64)


def mlp_initial_vector(layout: Layout, task_seed: bytes, logistic: bool) -> Vector:
    """Value ``j`` of the vector (section 3's order) is ``(2 u_j - 1) * bound``:
    ``u_j = (x_j >> 11) * 2^-53`` with ``x_j`` the ``j``-th 8 bytes (big-endian)
    of SHAKE-256(domain || task seed), and ``bound = sqrt(f / (fan_in + fan_out))``
    of the layer the value belongs to (``f`` = 2 for the logistic activation,
    else 6), for its weights and its intercepts alike, as scikit-learn's
    ``_init_coef``."""
    stream = hashlib.shake_256(MLP_INIT_DOMAIN + task_seed).digest(8 * layout.size)
    words = np.frombuffer(stream, dtype=">u8").astype(np.uint64)
    uniforms = (words >> np.uint64(11)).astype(np.float64) * 2.0**-53
    factor = 2.0 if logistic else 6.0
    units = layout.units
    bounds = [float(np.sqrt(factor / (a + b))) for a, b in itertools.pairwise(units)]
    scale = np.concatenate(
        [np.full(a * b, bd) for (a, b), bd in zip(itertools.pairwise(units), bounds, strict=True)]
        + [np.full(b, bound) for b, bound in zip(units[1:], bounds, strict=True)]
    )
    return canonical((2.0 * uniforms - 1.0) * scale)


def split_mlp(layout: Layout, vector: Vector) -> tuple[list[Vector], list[Vector]]:
    """``(coefs_, intercepts_)`` of an MLP vector, as scikit-learn holds them."""
    units = layout.units
    coefs, intercepts, at = [], [], 0
    for a, b in itertools.pairwise(units):
        coefs.append(vector[at : at + a * b].reshape(a, b).copy())
        at += a * b
    for b in units[1:]:
        intercepts.append(vector[at : at + b].copy())
        at += b
    return coefs, intercepts


def split_linear(layout: Layout, vector: Vector) -> tuple[Vector, Vector]:
    """``(coef_, intercept_)`` in scikit-learn's shapes: ``(m, d)``/``(m,)``,
    or ``(d,)``/``(1,)`` for sgd_regressor."""
    d, m = layout.n_features, layout.rows
    coef = vector[: m * d].reshape(m, d).copy()
    intercept = vector[m * d :].copy()
    if layout.estimator == "sgd_regressor":
        return coef.reshape(d), intercept
    return coef, intercept


def vector_of(layout: Layout, estimator: Any) -> Vector:
    """The vector of a fitted linear-family or MLP estimator."""
    if layout.family == MLP:
        parts = [*estimator.coefs_, *estimator.intercepts_]
    else:
        parts = [estimator.coef_, estimator.intercept_]
    flat = [np.asarray(p, dtype=np.float64).reshape(-1) for p in parts]
    vector = canonical(np.concatenate(flat))
    check_vector(layout, vector)
    return vector


def check_data(
    layout: Layout, X: npt.NDArray[np.float64], y: npt.NDArray[Any], classes: Labels
) -> None:
    """``bad-update-shape`` unless ``X`` is (n, d) with n >= 1 rows matching ``y``;
    ``federated-labels`` unless every label is in the task's class list."""
    if X.ndim != 2 or X.shape[1] != layout.n_features or X.shape[0] != y.shape[0] or not len(y):
        raise ValidationError(
            "bad-update-shape",
            f"data {X.shape} / {y.shape} for {layout.n_features} features",
        )
    if layout.n_classes:
        if len(classes) != layout.n_classes or not np.array_equal(classes, np.unique(classes)):
            raise ValidationError("federated-labels", "the class list must be sorted and distinct")
        if not np.isin(y, classes).all():
            raise ValidationError("federated-labels", "a label is not in the task's class list")


def statistics(
    layout: Layout, X: npt.NDArray[np.float64], y: npt.NDArray[Any], classes: Labels
) -> Vector:
    """The exact-merge statistics of one shard (nb and ols families)."""
    check_data(layout, X, y, classes)
    X = np.ascontiguousarray(X, dtype=np.float64)
    if layout.family == NB:
        rows = [X[y == c] for c in classes]
        counts = np.array([len(r) for r in rows], dtype=np.float64)
        sums = np.stack([r.sum(axis=0) for r in rows])
        squares = np.stack([(r * r).sum(axis=0) for r in rows])
        return canonical(np.concatenate([counts, sums.reshape(-1), squares.reshape(-1)]))
    if layout.family in (LINEAR, MLP):
        raise ValueError("linear models and MLPs federate by parameters, not statistics")
    A = np.hstack([np.ones((X.shape[0], 1)), X])
    target = np.asarray(y, dtype=np.float64)
    return canonical(np.concatenate([(A.T @ A).reshape(-1), A.T @ target]))


def sample_count(layout: Layout, vector: Vector) -> int:
    """Rows behind a statistics vector (``-1`` for the linear family, which carries none)."""
    if layout.family == NB:
        return int(vector[: layout.n_classes].sum())
    if layout.family in (LINEAR, MLP):
        return -1
    return int(vector[0])


def build(layout: Layout, vector: Vector, params: Mapping[str, ParamValue], classes: Labels) -> Any:
    """A fitted estimator for ``vector``: the global model as scikit-learn sees it."""
    check_vector(layout, vector)
    check_params(layout.estimator, params)
    estimator = estimator_class(layout.estimator)(**params)
    estimator.n_features_in_ = layout.n_features
    if layout.n_classes:
        estimator.classes_ = np.asarray(classes).copy()
    if layout.family == LINEAR:
        estimator.coef_, estimator.intercept_ = split_linear(layout, vector)
        estimator.t_ = 1.0
    elif layout.family == MLP:
        set_mlp_state(layout, vector, estimator, classes)
    elif layout.family == NB:
        _set_nb(layout, vector, estimator, _number(params, "var_smoothing", 1e-9))
    else:
        _set_ols(layout, vector, estimator, params)
    return estimator


def _number(params: Mapping[str, ParamValue], name: str, default: float) -> float:
    value = params.get(name, default)
    return float(value) if isinstance(value, int | float) else default


def set_mlp_state(layout: Layout, vector: Vector, estimator: Any, classes: Labels) -> None:
    """The fitted state scikit-learn's MLP predicts from and resumes training on
    (what its own first ``partial_fit`` would have set before its first epoch)."""
    from sklearn.preprocessing import LabelBinarizer

    estimator.coefs_, estimator.intercepts_ = split_mlp(layout, vector)
    estimator.n_layers_ = len(layout.units)
    estimator.n_outputs_ = layout.units[-1]
    if layout.n_classes:
        estimator._label_binarizer = LabelBinarizer().fit(np.asarray(classes))
        estimator.out_activation_ = "softmax" if layout.n_classes > 2 else "logistic"
    else:
        estimator.out_activation_ = "identity"
    estimator.n_iter_, estimator.t_ = 0, 0
    estimator.loss_curve_, estimator._no_improvement_count = [], 0
    estimator.best_loss_, estimator.validation_scores_ = np.inf, None
    estimator.best_validation_score_ = None
    estimator._best_coefs = [c.copy() for c in estimator.coefs_]
    estimator._best_intercepts = [i.copy() for i in estimator.intercepts_]


def _set_nb(layout: Layout, vector: Vector, estimator: Any, var_smoothing: float) -> None:
    k, d = layout.n_classes, layout.n_features
    counts = vector[:k]
    sums = vector[k : k + k * d].reshape(k, d)
    squares = vector[k + k * d :].reshape(k, d)
    total = counts.sum()
    if total <= 0:
        raise ValidationError("bad-update-value", "no rows behind the statistics")
    per = np.where(counts > 0, counts, 1.0)[:, None]
    theta = sums / per
    var = np.maximum(squares / per - theta * theta, 0.0)
    mean_all = sums.sum(axis=0) / total
    var_all = np.maximum(squares.sum(axis=0) / total - mean_all * mean_all, 0.0)
    epsilon = var_smoothing * float(var_all.max())
    estimator.theta_ = theta
    estimator.var_ = var + epsilon
    estimator.epsilon_ = epsilon
    estimator.class_count_ = counts.copy()
    estimator.class_prior_ = counts / total


def _set_ols(
    layout: Layout, vector: Vector, estimator: Any, params: Mapping[str, ParamValue]
) -> None:
    """Solve the normal equations as scikit-learn would: centre when fitting an
    intercept, then ridge ``(G + alpha I) w = b`` or least squares' minimum-norm
    solution (pseudo-inverse) for linear_regression."""
    if params.get("positive"):
        raise ValidationError("federated-estimator", "positive=True cannot be merged exactly")
    p = layout.n_features + 1
    gram = vector[: p * p].reshape(p, p)
    aty = vector[p * p :]
    n = gram[0, 0]
    if n <= 0:
        raise ValidationError("bad-update-value", "no rows behind the statistics")
    xtx, xty = gram[1:, 1:], aty[1:]
    fit_intercept = params.get("fit_intercept", True)
    if fit_intercept:
        x_mean, y_mean = gram[0, 1:] / n, aty[0] / n
        xtx = xtx - n * np.outer(x_mean, x_mean)
        xty = xty - n * x_mean * y_mean
    if layout.estimator == "ridge":
        alpha = _number(params, "alpha", 1.0)
        coef = np.linalg.solve(xtx + alpha * np.eye(p - 1), xty)
    else:
        coef = np.linalg.pinv(xtx, hermitian=True) @ xty
    estimator.coef_ = coef
    estimator.intercept_ = float(y_mean - x_mean @ coef) if fit_intercept else 0.0
