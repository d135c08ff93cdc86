"""Metric names, directions and the verification tolerance."""

from __future__ import annotations

import numpy as np
import pytest

from p2pml.errors import ValidationError
from p2pml.ml.metrics import METRICS, better, compute_metric, get_metric, metric_matches


def test_directions() -> None:
    assert {m: s.higher_is_better for m, s in METRICS.items()} == {
        "r2": True,
        "rmse": False,
        "mae": False,
        "accuracy": True,
        "f1_macro": True,
        "log_loss": False,
    }
    assert better("r2", 0.9, 0.8) and not better("r2", 0.8, 0.9)
    assert better("rmse", 1.0, 2.0) and not better("rmse", 2.0, 1.0)
    assert not better("accuracy", 0.5, 0.5)


def test_unknown_metric() -> None:
    with pytest.raises(ValidationError) as e:
        get_metric("auc_of_my_choice")
    assert e.value.reason == "bad-task-metric"


def test_metric_matches_tolerance() -> None:
    assert metric_matches(0.75, 0.75)
    assert metric_matches(0.75 * (1 + 5e-10), 0.75)
    assert not metric_matches(0.75 * (1 + 1e-8), 0.75)
    assert not metric_matches(0.7501, 0.75)
    assert metric_matches(0.0, 1e-13)
    assert not metric_matches(float("nan"), 0.5)
    assert not metric_matches(float("inf"), float("inf"))


class _Fixed:
    def __init__(self, pred: np.ndarray, proba: np.ndarray | None = None) -> None:
        self.pred, self.proba, self.classes_ = pred, proba, np.array([0, 1])

    def predict(self, X: object) -> np.ndarray:
        return self.pred

    def predict_proba(self, X: object) -> np.ndarray:
        assert self.proba is not None
        return self.proba


def test_compute_values() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    m = _Fixed(np.array([1.0, 2.0, 3.0, 6.0]))
    assert compute_metric("mae", m, None, y) == pytest.approx(0.5)
    assert compute_metric("rmse", m, None, y) == pytest.approx(1.0)
    assert compute_metric("r2", m, None, y) == pytest.approx(1 - 4 / 5)
    yc = np.array([0, 1, 1, 0])
    c = _Fixed(np.array([0, 1, 0, 0]), np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]]))
    assert compute_metric("accuracy", c, None, yc) == pytest.approx(0.75)
    assert compute_metric("f1_macro", c, None, yc) == pytest.approx((0.8 + 2 / 3) / 2)
    want = -np.mean(np.log([0.9, 0.8, 0.4, 0.7]))
    assert compute_metric("log_loss", c, None, yc) == pytest.approx(want)
