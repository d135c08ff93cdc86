"""The estimator allowlist: names, sklearn class paths and typed parameter schemas.

Tasks carry an estimator *name* and *parameters*, never code. Every name maps
to one scikit-learn class (by dotted path, imported lazily) and a schema that
bounds each parameter a publisher may set. Everything else keeps sklearn's
default. ``random_state`` is derived by the protocol from the block seed
(:func:`p2pml.ml.partition.derive_random_state`) and refused from users;
``n_jobs``/``warm_start``/``verbose`` are not settable at all.

Which names and parameter values a task may use is a consensus rule, so the
table lives here, in pure chain code: no sklearn, no I/O. Building the named
estimator is the ML layer's job (:mod:`p2pml.ml.estimators`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from p2pml.errors import ValidationError

#: A parameter value as it travels in a task: a primitive or a tuple of ints.
ParamValue = int | float | str | bool | None | tuple[int, ...]

REGRESSION: Final = "regression"
CLASSIFICATION: Final = "classification"
KINDS: Final = (REGRESSION, CLASSIFICATION)

#: Set by the protocol; a task that names it is refused.
PROTOCOL_PARAMS: Final = frozenset({"random_state"})


@dataclass(frozen=True)
class ParamSpec:
    """What values one parameter accepts.

    ``types`` lists the accepted value types among "int", "float", "bool",
    "str", "none", "int_tuple". A "float" parameter also accepts an int
    (sklearn treats them alike); bool is never accepted as a number. Numeric
    bounds are inclusive unless ``lo_open``; tuples have 1..``max_len``
    elements each within [lo, hi].
    """

    types: tuple[str, ...]
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: tuple[str, ...] = ()
    max_len: int = 0

    def check(self, name: str, value: object) -> None:
        """Raise ``ValidationError("bad-task-param")`` naming ``name`` if invalid."""

        def bad(why: str) -> ValidationError:
            return ValidationError("bad-task-param", f"parameter {name!r}: {why}")

        if value is None:
            if "none" not in self.types:
                raise bad("may not be None")
            return
        if isinstance(value, bool):
            if "bool" not in self.types:
                raise bad(f"expected {'/'.join(self.types)}, got bool")
            return
        if isinstance(value, str):
            if "str" not in self.types:
                raise bad(f"expected {'/'.join(self.types)}, got str")
            if value not in self.choices:
                raise bad(f"{value!r} is not one of {', '.join(self.choices)}")
            return
        if isinstance(value, int):
            if "int" in self.types or "float" in self.types:
                self._check_range(bad, value)
                return
            raise bad(f"expected {'/'.join(self.types)}, got int")
        if isinstance(value, float):
            if "float" not in self.types:
                raise bad(f"expected {'/'.join(self.types)}, got float")
            if not math.isfinite(value):
                raise bad("must be finite")
            self._check_range(bad, value)
            return
        if isinstance(value, tuple):
            if "int_tuple" not in self.types:
                raise bad(f"expected {'/'.join(self.types)}, got tuple")
            if not 1 <= len(value) <= self.max_len:
                raise bad(f"needs 1..{self.max_len} elements, got {len(value)}")
            for item in value:
                if isinstance(item, bool) or not isinstance(item, int):
                    raise bad("tuple elements must be ints")
                self._check_range(bad, item)
            return
        raise bad(f"unsupported value type {type(value).__name__}")

    def _check_range(self, bad: Any, value: float) -> None:
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            raise bad(f"{value!r} is below the minimum {'>' if self.lo_open else '>='} {self.lo}")
        if self.hi is not None and value > self.hi:
            raise bad(f"{value!r} is above the maximum {self.hi}")


@dataclass(frozen=True)
class EstimatorSpec:
    """One allowlisted estimator."""

    name: str
    class_path: str  # "sklearn.linear_model.Ridge"
    kind: str  # REGRESSION | CLASSIFICATION
    params: Mapping[str, ParamSpec] = field(default_factory=dict)
    has_random_state: bool = True

    @property
    def class_name(self) -> str:
        return self.class_path.rsplit(".", 1)[1]


def _int(lo: int, hi: int, none: bool = False) -> ParamSpec:
    return ParamSpec(("int", "none") if none else ("int",), lo, hi)


def _float(lo: float, hi: float, lo_open: bool = False) -> ParamSpec:
    return ParamSpec(("float",), lo, hi, lo_open)


def _choice(*choices: str, none: bool = False) -> ParamSpec:
    return ParamSpec(("str", "none") if none else ("str",), choices=choices)


_BOOL: Final = ParamSpec(("bool",))
_TOL: Final = _float(0.0, 1.0, lo_open=True)
_MAX_DEPTH: Final = _int(1, 64, none=True)
_MIN_SPLIT: Final = _int(2, 1_000_000)
_MIN_LEAF: Final = _int(1, 1_000_000)
_MAX_LEAF_NODES: Final = _int(2, 1_000_000, none=True)
_MAX_FEATURES: Final = ParamSpec(("float", "str", "none"), 0.0, 1.0, True, ("sqrt", "log2"))
_CCP: Final = _float(0.0, 1e6)
_CLASS_WEIGHT: Final = _choice("balanced", none=True)
_TREE_REG_CRIT: Final = _choice("squared_error", "friedman_mse", "absolute_error", "poisson")
_TREE_CLF_CRIT: Final = _choice("gini", "entropy", "log_loss")


def _tree(crit: ParamSpec, clf: bool) -> dict[str, ParamSpec]:
    p = {
        "criterion": crit,
        "splitter": _choice("best", "random"),
        "max_depth": _MAX_DEPTH,
        "min_samples_split": _MIN_SPLIT,
        "min_samples_leaf": _MIN_LEAF,
        "max_features": _MAX_FEATURES,
        "max_leaf_nodes": _MAX_LEAF_NODES,
        "ccp_alpha": _CCP,
    }
    if clf:
        p["class_weight"] = _CLASS_WEIGHT
    return p


def _forest(crit: ParamSpec, clf: bool) -> dict[str, ParamSpec]:
    p = {
        "n_estimators": _int(1, 500),
        "criterion": crit,
        "max_depth": _MAX_DEPTH,
        "min_samples_split": _MIN_SPLIT,
        "min_samples_leaf": _MIN_LEAF,
        "max_features": _MAX_FEATURES,
        "max_leaf_nodes": _MAX_LEAF_NODES,
        "bootstrap": _BOOL,
        "max_samples": ParamSpec(("float", "none"), 0.0, 1.0, True),
        "ccp_alpha": _CCP,
    }
    if clf:
        p["class_weight"] = _choice("balanced", "balanced_subsample", none=True)
    return p


def _gb(loss: ParamSpec) -> dict[str, ParamSpec]:
    return {
        "n_estimators": _int(1, 1000),
        "loss": loss,
        "learning_rate": _float(0.0, 10.0, lo_open=True),
        "subsample": _float(0.0, 1.0, lo_open=True),
        "max_depth": _int(1, 32, none=True),
        "min_samples_split": _MIN_SPLIT,
        "min_samples_leaf": _MIN_LEAF,
        "max_features": _MAX_FEATURES,
        "max_leaf_nodes": _MAX_LEAF_NODES,
        "ccp_alpha": _CCP,
    }


def _hgb(loss: ParamSpec, clf: bool) -> dict[str, ParamSpec]:
    p = {
        "max_iter": _int(1, 1000),
        "loss": loss,
        "learning_rate": _float(0.0, 10.0, lo_open=True),
        "max_depth": _int(1, 64, none=True),
        "max_leaf_nodes": _int(2, 4096, none=True),
        "min_samples_leaf": _MIN_LEAF,
        "l2_regularization": _float(0.0, 1e6),
        "max_features": _float(0.0, 1.0, lo_open=True),
        "max_bins": _int(2, 255),
        "early_stopping": _BOOL,
        "validation_fraction": _float(0.0, 0.5, lo_open=True),
        "n_iter_no_change": _int(1, 100),
    }
    if clf:
        p["class_weight"] = _CLASS_WEIGHT
    return p


def _knn() -> dict[str, ParamSpec]:
    return {
        "n_neighbors": _int(1, 1000),
        "weights": _choice("uniform", "distance"),
        "algorithm": _choice("auto", "ball_tree", "kd_tree", "brute"),
        "leaf_size": _int(1, 1000),
        "p": _int(1, 2),
    }


def _mlp() -> dict[str, ParamSpec]:
    return {
        "hidden_layer_sizes": ParamSpec(("int_tuple",), 1, 1024, max_len=8),
        "activation": _choice("identity", "logistic", "tanh", "relu"),
        "solver": _choice("lbfgs", "sgd", "adam"),
        "alpha": _float(0.0, 1e3),
        "batch_size": ParamSpec(("int", "str"), 1, 100_000, choices=("auto",)),
        "learning_rate": _choice("constant", "invscaling", "adaptive"),
        "learning_rate_init": _float(0.0, 1.0, lo_open=True),
        "max_iter": _int(1, 2000),
        "tol": _TOL,
        "early_stopping": _BOOL,
        "validation_fraction": _float(0.0, 0.5, lo_open=True),
        "n_iter_no_change": _int(1, 100),
    }


def _sgd(loss: ParamSpec) -> dict[str, ParamSpec]:
    # No early_stopping/average/class_weight: one schema for fit and partial_fit.
    return {
        "loss": loss,
        "penalty": _choice("l2", "l1", "elasticnet", none=True),
        "alpha": _float(0.0, 1e6),
        "l1_ratio": _float(0.0, 1.0),
        "fit_intercept": _BOOL,
        "max_iter": _int(1, 10_000),
        "tol": ParamSpec(("float", "none"), 0.0, 1.0, True),
        "shuffle": _BOOL,
        "epsilon": _float(0.0, 1e6),
        "learning_rate": _choice("constant", "optimal", "invscaling", "adaptive"),
        "eta0": _float(0.0, 1e3, lo_open=True),
        "power_t": _float(-1e3, 1e3),
    }


def _entries() -> dict[str, EstimatorSpec]:
    R, C = REGRESSION, CLASSIFICATION
    sk = "sklearn."
    es = [
        EstimatorSpec(
            "linear_regression",
            sk + "linear_model.LinearRegression",
            R,
            {"fit_intercept": _BOOL, "positive": _BOOL},
            has_random_state=False,
        ),
        EstimatorSpec(
            "ridge",
            sk + "linear_model.Ridge",
            R,
            {
                "alpha": _float(0.0, 1e6),
                "fit_intercept": _BOOL,
                "solver": _choice("auto", "svd", "cholesky", "lsqr", "sparse_cg", "sag", "saga"),
                "max_iter": _int(1, 100_000, none=True),
                "tol": _TOL,
            },
        ),
        EstimatorSpec(
            "lasso",
            sk + "linear_model.Lasso",
            R,
            {
                "alpha": _float(0.0, 1e6, lo_open=True),
                "fit_intercept": _BOOL,
                "max_iter": _int(1, 100_000),
                "tol": _TOL,
                "positive": _BOOL,
                "selection": _choice("cyclic", "random"),
            },
        ),
        EstimatorSpec(
            "logistic_regression",
            sk + "linear_model.LogisticRegression",
            C,
            {
                "C": _float(0.0, 1e6, lo_open=True),
                "fit_intercept": _BOOL,
                "solver": _choice("lbfgs", "newton-cg", "newton-cholesky", "sag", "saga"),
                "max_iter": _int(1, 100_000),
                "tol": _TOL,
                "class_weight": _CLASS_WEIGHT,
            },
        ),
        EstimatorSpec(
            "decision_tree_regressor",
            sk + "tree.DecisionTreeRegressor",
            R,
            _tree(_TREE_REG_CRIT, False),
        ),
        EstimatorSpec(
            "decision_tree_classifier",
            sk + "tree.DecisionTreeClassifier",
            C,
            _tree(_TREE_CLF_CRIT, True),
        ),
        EstimatorSpec(
            "random_forest_regressor",
            sk + "ensemble.RandomForestRegressor",
            R,
            _forest(_TREE_REG_CRIT, False),
        ),
        EstimatorSpec(
            "random_forest_classifier",
            sk + "ensemble.RandomForestClassifier",
            C,
            _forest(_TREE_CLF_CRIT, True),
        ),
        EstimatorSpec(
            "gradient_boosting_regressor",
            sk + "ensemble.GradientBoostingRegressor",
            R,
            _gb(_choice("squared_error", "absolute_error", "huber")),
        ),
        EstimatorSpec(
            "gradient_boosting_classifier",
            sk + "ensemble.GradientBoostingClassifier",
            C,
            _gb(_choice("log_loss")),
        ),
        EstimatorSpec(
            "hist_gradient_boosting_regressor",
            sk + "ensemble.HistGradientBoostingRegressor",
            R,
            _hgb(_choice("squared_error", "absolute_error", "poisson", "gamma"), False),
        ),
        EstimatorSpec(
            "hist_gradient_boosting_classifier",
            sk + "ensemble.HistGradientBoostingClassifier",
            C,
            _hgb(_choice("log_loss"), True),
        ),
        EstimatorSpec(
            "knn_regressor",
            sk + "neighbors.KNeighborsRegressor",
            R,
            _knn(),
            has_random_state=False,
        ),
        EstimatorSpec(
            "knn_classifier",
            sk + "neighbors.KNeighborsClassifier",
            C,
            _knn(),
            has_random_state=False,
        ),
        EstimatorSpec("mlp_regressor", sk + "neural_network.MLPRegressor", R, _mlp()),
        EstimatorSpec("mlp_classifier", sk + "neural_network.MLPClassifier", C, _mlp()),
        EstimatorSpec(
            "sgd_regressor",
            sk + "linear_model.SGDRegressor",
            R,
            _sgd(
                _choice(
                    "squared_error", "huber", "epsilon_insensitive", "squared_epsilon_insensitive"
                ),
            ),
        ),
        EstimatorSpec(
            "sgd_classifier",
            sk + "linear_model.SGDClassifier",
            C,
            _sgd(
                _choice("hinge", "log_loss", "modified_huber", "squared_hinge", "perceptron"),
            ),
        ),
        EstimatorSpec(
            "gaussian_nb",
            sk + "naive_bayes.GaussianNB",
            C,
            {"var_smoothing": _float(0.0, 1.0)},
            has_random_state=False,
        ),
    ]
    return {
        e.name: EstimatorSpec(
            e.name, e.class_path, e.kind, MappingProxyType(dict(e.params)), e.has_random_state
        )
        for e in es
    }


#: name -> EstimatorSpec; read-only.
ESTIMATORS: Final[Mapping[str, EstimatorSpec]] = MappingProxyType(_entries())


def get_estimator(name: object) -> EstimatorSpec:
    """The allowlisted estimator ``name`` or ``ValidationError("bad-task-model")``."""
    if not isinstance(name, str) or name not in ESTIMATORS:
        raise ValidationError(
            "bad-task-model",
            f"{name!r} is not an allowlisted estimator ({', '.join(sorted(ESTIMATORS))})",
        )
    return ESTIMATORS[name]


def check_params(name: str, params: Mapping[str, object]) -> None:
    """Check every parameter of a task against the estimator's schema."""
    est = get_estimator(name)
    for pname in sorted(params):
        if pname in PROTOCOL_PARAMS:
            raise ValidationError(
                "bad-task-param",
                f"parameter {pname!r} is set by the protocol from the block seed",
            )
        schema = est.params.get(pname)
        if schema is None:
            allowed = ", ".join(sorted(est.params)) or "none"
            raise ValidationError(
                "bad-task-param",
                f"unknown parameter {pname!r} for {name} (allowed: {allowed})",
            )
        schema.check(pname, params[pname])


def protocol_params(
    name: str, params: Mapping[str, ParamValue], random_state: int
) -> dict[str, Any]:
    """The constructor keyword arguments: the task's params plus protocol ones."""
    kwargs: dict[str, Any] = dict(params)
    if get_estimator(name).has_random_state:
        kwargs["random_state"] = random_state
    return kwargs
