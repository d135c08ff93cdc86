"""Building the allowlisted scikit-learn estimators a task names.

The allowlist itself (names, class paths, parameter schemas) is consensus
data and lives in :mod:`p2pml.chain.allowlist`; this module turns an entry
into an sklearn object. sklearn is imported lazily, in worker processes.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from p2pml.chain.allowlist import (
    CLASSIFICATION,
    ESTIMATORS,
    KINDS,
    REGRESSION,
    EstimatorSpec,
    ParamValue,
    check_params,
    get_estimator,
    protocol_params,
)

__all__ = [
    "CLASSIFICATION",
    "ESTIMATORS",
    "KINDS",
    "REGRESSION",
    "EstimatorSpec",
    "ParamValue",
    "build_estimator",
    "check_params",
    "estimator_class",
    "get_estimator",
    "protocol_params",
]


def estimator_class(name: str) -> type[Any]:
    """Import and return the sklearn class the allowlist names."""
    module, _, cls = get_estimator(name).class_path.rpartition(".")
    result: type[Any] = getattr(importlib.import_module(module), cls)
    return result


def build_estimator(name: str, params: Mapping[str, ParamValue], random_state: int) -> Any:
    """An unfitted estimator with the task's params and the protocol random_state."""
    return estimator_class(name)(**protocol_params(name, params, random_state))
