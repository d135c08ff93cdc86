"""Deterministic budgets of loaded models (p2pml.ml.budgets) and the reader's memo charging."""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from typing import Any

import numpy as np
import pytest

from p2pml.errors import ModelArtifactError
from p2pml.ml import budgets, skops_reader
from p2pml.ml.artifact import dump_model, load_model
from p2pml.ml.budgets import TaskShape, check_model, schema_cap, tree_depth
from p2pml.ml.estimators import build_estimator

RS = 7
RNG = np.random.default_rng(1)
X = RNG.normal(size=(400, 3))
Y_REG = X @ np.array([1.0, 2.0, -1.0])
Y_CLS = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)  # 3 classes


def fit(name: str, y: Any, **params: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_estimator(name, params, RS).fit(X, y)


def shape(model: Any, name: str, classes: Any = None, rows: int = 100) -> TaskShape:
    return TaskShape(name, model.get_params(deep=False), rows, 400, 3, classes)


CLASSES = np.array([0, 1, 2])

HONEST = [
    ("random_forest_regressor", Y_REG, None, {"n_estimators": 7}),
    ("random_forest_classifier", Y_CLS, CLASSES, {"n_estimators": 7}),
    ("decision_tree_classifier", Y_CLS, CLASSES, {"max_depth": 4}),
    ("gradient_boosting_classifier", Y_CLS, CLASSES, {"n_estimators": 5}),
    ("gradient_boosting_regressor", Y_REG, None, {"n_estimators": 5}),
    ("hist_gradient_boosting_classifier", Y_CLS, CLASSES, {"max_iter": 5}),
    ("hist_gradient_boosting_regressor", Y_REG, None, {"max_iter": 5}),
    ("knn_classifier", Y_CLS, CLASSES, {}),
    ("mlp_classifier", Y_CLS, CLASSES, {"hidden_layer_sizes": (5, 4), "max_iter": 5}),
    ("mlp_regressor", Y_REG, None, {"hidden_layer_sizes": (5,), "max_iter": 5}),
    ("logistic_regression", Y_CLS, CLASSES, {}),
    ("ridge", Y_REG, None, {}),
]


@pytest.mark.parametrize(("name", "y", "classes", "params"), HONEST, ids=[h[0] for h in HONEST])
def test_honest_models_are_within_budget(name: str, y: Any, classes: Any, params: Any) -> None:
    check_model(fit(name, y, **params), shape(fit(name, y, **params), name, classes))


def test_forest_with_more_trees_than_n_estimators() -> None:
    model = fit("random_forest_regressor", Y_REG, n_estimators=3)
    model.estimators_ = model.estimators_ * 2
    with pytest.raises(ModelArtifactError, match="n_estimators=3"):
        check_model(model, shape(model, "random_forest_regressor"))


def test_classes_outside_the_dataset_or_unsorted() -> None:
    model = fit("decision_tree_classifier", Y_CLS)
    with pytest.raises(ModelArtifactError, match="dataset does not have"):
        check_model(model, shape(model, "decision_tree_classifier", np.array([0, 1, 5])))
    model.classes_ = np.array([2, 1, 0])
    with pytest.raises(ModelArtifactError, match="sorted"):
        check_model(model, shape(model, "decision_tree_classifier", CLASSES))


def test_rows_times_outputs_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    model = fit("logistic_regression", Y_CLS)
    monkeypatch.setattr(budgets, "MAX_OUTPUT_CELLS", 299)
    with pytest.raises(ModelArtifactError, match="outputs"):
        check_model(model, shape(model, "logistic_regression", CLASSES, rows=100))


def test_rows_times_depth_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    model = fit("random_forest_regressor", Y_REG, n_estimators=4, max_depth=3)
    check_model(model, shape(model, "random_forest_regressor", rows=100))
    monkeypatch.setattr(budgets, "MAX_PREDICT_STEPS", 100 * 4 * 4 - 1)  # 4 trees, <= 4 levels
    with pytest.raises(ModelArtifactError, match="depth"):
        check_model(model, shape(model, "random_forest_regressor", rows=100))


def test_depth_over_the_tasks_max_depth() -> None:
    model = fit("decision_tree_regressor", Y_REG, max_depth=6)
    params = {**model.get_params(deep=False), "max_depth": 2}
    with pytest.raises(ModelArtifactError, match="deeper than 2"):
        check_model(model, TaskShape("decision_tree_regressor", params, 10, 400, 3, None))


def test_tree_depth_of_a_chain_and_of_shared_children() -> None:
    # 0 -> (1, 2); 1 -> (2, 2) shares a child: depth 2, visited once per level.
    left = np.array([1, 2, -1])
    right = np.array([2, 2, -1])
    assert tree_depth(left, right, left == -1, 10) == 2
    with pytest.raises(ModelArtifactError):
        tree_depth(left, right, left == -1, 1)


def test_mlp_layers_must_fit_hidden_layer_sizes() -> None:
    model = fit("mlp_regressor", Y_REG, hidden_layer_sizes=(5,), max_iter=5)
    model.coefs_ = [np.zeros((3, 5000)), np.zeros((5000, 1))]
    model.intercepts_ = [np.zeros(5000), np.zeros(1)]
    with pytest.raises(ModelArtifactError, match="layer"):
        check_model(model, shape(model, "mlp_regressor"))


def test_knn_must_hold_the_partition_rows() -> None:
    model = fit("knn_regressor", Y_REG)
    with pytest.raises(ModelArtifactError, match="partition rows"):
        check_model(model, TaskShape("knn_regressor", model.get_params(), 10, 399, 3, None))


def test_schema_cap_grows_with_the_trees_asked_for() -> None:
    assert schema_cap("ridge", {}, 0) == budgets.SCHEMA_BASE_BYTES
    assert schema_cap("random_forest_regressor", {"n_estimators": 10}, 0) > schema_cap(
        "random_forest_regressor", {"n_estimators": 1}, 0
    )
    assert schema_cap("gradient_boosting_classifier", {}, 1000) == budgets.MAX_SCHEMA_BYTES


def test_honest_forest_schema_per_tree_is_under_the_allowance() -> None:
    model = fit("random_forest_classifier", Y_CLS, n_estimators=40)
    schema = zipfile.ZipFile(io.BytesIO(dump_model(model))).read("schema.json")
    assert len(schema) < schema_cap("random_forest_classifier", {"n_estimators": 40}, 3)
    assert len(schema) / 40 < budgets.SCHEMA_BYTES_PER_TREE / 2  # room for bigger params


def _rewrite(artifact: bytes, edit: Any) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(artifact))
    schema = json.loads(src.read("schema.json"))
    edit(schema)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for name in src.namelist():
            dst.writestr(name, json.dumps(schema) if name == "schema.json" else src.read(name))
    return out.getvalue()


def test_memo_references_are_charged_like_fresh_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    model = fit("random_forest_regressor", Y_REG, n_estimators=2)
    params = {"n_estimators": 2}

    def repeat(schema: dict[str, Any]) -> None:
        trees = schema["content"]["content"]["estimators_"]["content"]
        trees += [{"__id__": trees[0]["__id__"]}] * 50

    hostile = _rewrite(dump_model(model), repeat)
    one_tree = model.estimators_[0].tree_
    per_tree = one_tree.node_count * skops_reader.TREE_NODE_BYTES
    # Room for the honest model's bytes, not for 50 more copies of a tree.
    monkeypatch.setattr(skops_reader, "MAX_BUILT_BYTES", 10 * per_tree)
    load_model(dump_model(model), "random_forest_regressor", params, RS)
    with pytest.raises(ModelArtifactError, match="more than"):
        load_model(hostile, "random_forest_regressor", params, RS)


def test_schema_over_the_cap_is_refused_before_parsing() -> None:
    artifact = dump_model(fit("ridge", Y_REG))
    size = len(zipfile.ZipFile(io.BytesIO(artifact)).read("schema.json"))
    load_model(artifact, "ridge", {}, RS, max_schema_bytes=size)
    with pytest.raises(ModelArtifactError, match=r"schema\.json"):
        load_model(artifact, "ridge", {}, RS, max_schema_bytes=size - 1)


def test_n_features_in_must_be_an_integer() -> None:
    model = fit("ridge", Y_REG)
    model.n_features_in_ = np.array([3, 3])
    with pytest.raises(ModelArtifactError, match="n_features_in_"):
        load_model(dump_model(model), "ridge", {}, RS, n_features=3)


@pytest.mark.parametrize(
    ("name", "attr"),
    [
        ("decision_tree_classifier", "n_outputs_"),  # predict allocates rows x n_outputs_
        ("random_forest_classifier", "n_classes_"),  # predict_proba allocates rows x n_classes_
        ("gradient_boosting_classifier", "init_.n_outputs_"),  # the initial estimator's too
        ("mlp_classifier", "n_outputs_"),
    ],
)
def test_size_attributes_predict_trusts_must_fit_the_task(name: str, attr: str) -> None:
    model = fit(name, Y_CLS, **({"n_estimators": 3} if "forest" in name or "boost" in name else {}))
    check_model(model, shape(model, name, CLASSES))
    owner, _, leaf = attr.rpartition(".")
    setattr(getattr(model, owner) if owner else model, leaf, 10**9)
    with pytest.raises(ModelArtifactError, match=leaf):
        check_model(model, shape(model, name, CLASSES))
