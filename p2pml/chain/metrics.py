"""Holdout metrics as consensus data: names, kinds, direction, tolerance.

Chain code ranks results with :func:`better`, and every validator applies
:func:`metric_matches`; computing a metric is the ML layer's job
(:func:`p2pml.ml.metrics.compute_metric`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from p2pml.chain.allowlist import CLASSIFICATION, REGRESSION
from p2pml.errors import ValidationError


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str
    higher_is_better: bool
    needs_proba: bool = False


METRICS: Final = MappingProxyType(
    {
        m.name: m
        for m in (
            MetricSpec("r2", REGRESSION, True),
            MetricSpec("rmse", REGRESSION, False),
            MetricSpec("mae", REGRESSION, False),
            MetricSpec("accuracy", CLASSIFICATION, True),
            MetricSpec("f1_macro", CLASSIFICATION, True),
            MetricSpec("log_loss", CLASSIFICATION, False, needs_proba=True),
        )
    }
)

#: Verification tolerance: |claimed - recomputed| <= ABS + REL * |recomputed|.
#: Metrics are float64 reductions over <= ~1e7 holdout rows; a different
#: summation order (BLAS build, SIMD width) moves them by ~n * 2.2e-16 relative,
#: i.e. <= ~1e-9 relative. Anything a cheater could gain is far above that.
METRIC_REL_TOL: Final = 1e-9
METRIC_ABS_TOL: Final = 1e-12


def get_metric(name: object) -> MetricSpec:
    if not isinstance(name, str) or name not in METRICS:
        raise ValidationError(
            "bad-task-metric", f"{name!r} is not a metric ({', '.join(sorted(METRICS))})"
        )
    return METRICS[name]


def higher_is_better(name: str) -> bool:
    return get_metric(name).higher_is_better


def better(name: str, a: float, b: float) -> bool:
    """True if metric value ``a`` is strictly better than ``b``."""
    return a > b if higher_is_better(name) else a < b


def metric_matches(claimed: float, recomputed: float) -> bool:
    """The verification rule for a claimed metric (see METRIC_*_TOL)."""
    if not (math.isfinite(claimed) and math.isfinite(recomputed)):
        return False
    return abs(claimed - recomputed) <= METRIC_ABS_TOL + METRIC_REL_TOL * abs(recomputed)
