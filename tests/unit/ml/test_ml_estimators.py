"""The estimator allowlist and its typed parameter schemas."""

from __future__ import annotations

import subprocess
import sys

import pytest

from p2pml.errors import ValidationError
from p2pml.ml.estimators import (
    ESTIMATORS,
    build_estimator,
    check_params,
    estimator_class,
    get_estimator,
)

EXPECTED = {
    "linear_regression",
    "ridge",
    "lasso",
    "logistic_regression",
    "decision_tree_regressor",
    "decision_tree_classifier",
    "random_forest_regressor",
    "random_forest_classifier",
    "gradient_boosting_regressor",
    "gradient_boosting_classifier",
    "hist_gradient_boosting_regressor",
    "hist_gradient_boosting_classifier",
    "knn_regressor",
    "knn_classifier",
    "mlp_regressor",
    "mlp_classifier",
    "sgd_regressor",
    "sgd_classifier",
    "gaussian_nb",
}


def test_allowlist_names_and_kinds() -> None:
    assert set(ESTIMATORS) == EXPECTED
    for name, est in ESTIMATORS.items():
        want = (
            "classification"
            if name.endswith(("classifier", "logistic_regression", "_nb"))
            else None
        )
        if want:
            assert est.kind == "classification", name
        else:
            assert est.kind == "regression", name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_class_path_resolves_and_schema_matches_sklearn(name: str) -> None:
    cls = estimator_class(name)
    est = get_estimator(name)
    assert cls.__name__ == est.class_name
    defaults = cls().get_params()
    # Every schema parameter is a real constructor parameter...
    assert set(est.params) <= set(defaults), set(est.params) - set(defaults)
    # ...never a parallelism or protocol-owned one.
    assert not {"n_jobs", "random_state", "warm_start", "verbose"} & set(est.params)
    assert est.has_random_state == ("random_state" in defaults)


def test_unknown_model_refused() -> None:
    with pytest.raises(ValidationError) as e:
        get_estimator("svm_with_code")
    assert e.value.reason == "bad-task-model"
    assert "svm_with_code" in e.value.detail


def test_unknown_param_names_the_parameter() -> None:
    with pytest.raises(ValidationError) as e:
        check_params("ridge", {"alpha": 1.0, "kernel_trick": 3})
    assert e.value.reason == "bad-task-param"
    assert "'kernel_trick'" in e.value.detail


@pytest.mark.parametrize("param", ["random_state", "n_jobs"])
def test_protocol_and_parallel_params_refused(param: str) -> None:
    with pytest.raises(ValidationError) as e:
        check_params("random_forest_regressor", {param: 1})
    assert e.value.reason == "bad-task-param"
    assert repr(param) in e.value.detail


@pytest.mark.parametrize(
    ("model", "params", "fragment"),
    [
        ("random_forest_regressor", {"n_estimators": 501}, "n_estimators"),
        ("random_forest_regressor", {"n_estimators": 0}, "n_estimators"),
        ("random_forest_regressor", {"n_estimators": True}, "n_estimators"),
        ("random_forest_regressor", {"n_estimators": 10.0}, "n_estimators"),
        ("decision_tree_classifier", {"max_depth": 65}, "max_depth"),
        ("decision_tree_classifier", {"criterion": "chaos"}, "criterion"),
        ("mlp_regressor", {"hidden_layer_sizes": ()}, "hidden_layer_sizes"),
        ("mlp_regressor", {"hidden_layer_sizes": (10,) * 9}, "hidden_layer_sizes"),
        ("mlp_regressor", {"hidden_layer_sizes": (10, 2000)}, "hidden_layer_sizes"),
        ("mlp_regressor", {"hidden_layer_sizes": (10, True)}, "hidden_layer_sizes"),
        ("mlp_regressor", {"max_iter": 2001}, "max_iter"),
        ("ridge", {"alpha": float("nan")}, "alpha"),
        ("ridge", {"alpha": float("inf")}, "alpha"),
        ("ridge", {"alpha": -1.0}, "alpha"),
        ("ridge", {"alpha": "big"}, "alpha"),
        ("lasso", {"alpha": 0.0}, "alpha"),
        ("hist_gradient_boosting_regressor", {"max_iter": None}, "max_iter"),
        ("knn_classifier", {"n_neighbors": 0}, "n_neighbors"),
    ],
)
def test_bad_values_name_the_parameter(
    model: str, params: dict[str, object], fragment: str
) -> None:
    with pytest.raises(ValidationError) as e:
        check_params(model, params)
    assert e.value.reason == "bad-task-param"
    assert repr(fragment) in e.value.detail


def test_good_values_accepted_and_built() -> None:
    check_params("ridge", {"alpha": 2, "fit_intercept": False})  # int for a float param
    check_params("mlp_classifier", {"hidden_layer_sizes": (8, 4), "batch_size": "auto"})
    check_params("random_forest_classifier", {"max_features": "sqrt", "max_depth": None})
    model = build_estimator("random_forest_classifier", {"n_estimators": 3}, 1234)
    assert model.get_params()["random_state"] == 1234
    assert model.get_params()["n_estimators"] == 3
    knn = build_estimator("knn_regressor", {}, 1234)
    assert "random_state" not in knn.get_params()


def test_pure_modules_do_not_import_sklearn_or_pandas() -> None:
    code = (
        "import sys, p2pml.chain, p2pml.chain.state, p2pml.ml.estimators, p2pml.ml.metrics,"
        " p2pml.ml.partition;"
        "bad = [m for m in ('sklearn', 'pandas', 'skops') if m in sys.modules];"
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
