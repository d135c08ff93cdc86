"""Computing holdout metrics (worker-side; sklearn is imported lazily).

Names, kinds, direction and the verification tolerance are consensus data in
:mod:`p2pml.chain.metrics`.
"""

from __future__ import annotations

from typing import Any

from p2pml.chain.metrics import (
    METRIC_ABS_TOL,
    METRIC_REL_TOL,
    METRICS,
    MetricSpec,
    better,
    get_metric,
    higher_is_better,
    metric_matches,
)

__all__ = [
    "METRICS",
    "METRIC_ABS_TOL",
    "METRIC_REL_TOL",
    "MetricSpec",
    "better",
    "compute_metric",
    "get_metric",
    "higher_is_better",
    "metric_matches",
    "metric_of_outputs",
]


def compute_metric(name: str, model: Any, X: Any, y: Any) -> float:
    """The metric of a fitted ``model`` on (X, y). Worker-side only."""
    spec = get_metric(name)
    if spec.needs_proba:
        return metric_of_outputs(name, y, None, model.predict_proba(X), model.classes_)
    return metric_of_outputs(name, y, model.predict(X), None, None)


def metric_of_outputs(name: str, y: Any, pred: Any, proba: Any, classes: Any) -> float:
    """The metric from a model's outputs on the holdout (``proba`` and the
    model's ``classes`` for log_loss, ``pred`` for the others)."""
    from sklearn import metrics as skm

    if get_metric(name).needs_proba:
        return float(skm.log_loss(y, proba, labels=classes))
    if name == "r2":
        return float(skm.r2_score(y, pred))
    if name == "rmse":
        return float(skm.root_mean_squared_error(y, pred))
    if name == "mae":
        return float(skm.mean_absolute_error(y, pred))
    if name == "accuracy":
        return float(skm.accuracy_score(y, pred))
    if name == "f1_macro":
        return float(skm.f1_score(y, pred, average="macro", zero_division=0.0))
    raise AssertionError(name)  # METRICS and this function disagree
