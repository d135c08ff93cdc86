"""The strict skops reader: same models as skops.io.loads, and crafted ones refused."""

from __future__ import annotations

import copy
import io
import json
import warnings
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import skops.io as sio

from p2pml.errors import ModelArtifactError
from p2pml.ml.artifact import TRUSTED_TYPES, dump_model, load_model
from p2pml.ml.estimators import CLASSIFICATION, ESTIMATORS, build_estimator

RS = 4242
RNG = np.random.default_rng(3)
X = RNG.normal(size=(300, 4))
Y_REG = X @ np.array([1.0, -2.0, 0.5, 3.0]) + RNG.normal(scale=0.1, size=300)
Y_STR = np.array(["low", "mid", "high"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0.8)]
Y_INT = (X[:, 2] > 0).astype(np.int64)
SMALL = {
    "random_forest_regressor": {"n_estimators": 5},
    "random_forest_classifier": {"n_estimators": 5},
    "gradient_boosting_regressor": {"n_estimators": 5},
    "gradient_boosting_classifier": {"n_estimators": 5},
    "hist_gradient_boosting_regressor": {"max_iter": 5},
    "hist_gradient_boosting_classifier": {"max_iter": 5},
    "mlp_regressor": {"max_iter": 20},
    "mlp_classifier": {"max_iter": 20},
}


def fitted(name: str, y: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings of tiny fits
        return build_estimator(name, SMALL.get(name, {}), RS).fit(X, y)


def cases() -> list[tuple[str, str]]:
    out = []
    for name, spec in sorted(ESTIMATORS.items()):
        labels = ["str", "int"] if spec.kind == CLASSIFICATION else ["reg"]
        out += [(name, kind) for kind in labels]
    return out


TARGETS = {"reg": Y_REG, "str": Y_STR, "int": Y_INT}


@pytest.mark.parametrize(("name", "labels"), cases())
def test_loads_what_skops_loads(name: str, labels: str) -> None:
    model = fitted(name, TARGETS[labels])
    data = dump_model(model)
    ours = load_model(data, name, SMALL.get(name, {}), RS, n_features=4)
    theirs = sio.loads(data, trusted=sorted(TRUSTED_TYPES[name]))
    assert type(ours) is type(theirs)
    assert ours.get_params() == theirs.get_params()
    assert np.array_equal(ours.predict(X), theirs.predict(X))
    assert np.array_equal(ours.predict(X), model.predict(X))
    if hasattr(model, "predict_proba"):
        assert np.array_equal(ours.predict_proba(X), model.predict_proba(X))
    assert sorted(vars(ours)) == sorted(vars(theirs))


def rewrite(data: bytes, edit: Callable[[str, bytes], bytes], compression: int = 0) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, edit(info.filename, src.read(info.filename)))
    return out.getvalue()


def edit_schema(data: bytes, edit: Callable[[Any], None]) -> bytes:
    def change(name: str, content: bytes) -> bytes:
        if name != "schema.json":
            return content
        schema = json.loads(content)
        edit(schema)
        return json.dumps(schema).encode()

    return rewrite(data, change)


def nodes_of(schema: Any, loader: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("__loader__") == loader:
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return found


def refuse(data: bytes, name: str, match: str, params: dict[str, Any] | None = None) -> None:
    with pytest.raises(ModelArtifactError, match=match) as e:
        load_model(data, name, SMALL.get(name, {}) if params is None else params, RS)
    assert e.value.reason == "bad-model-artifact"


def tree_with(edit: Callable[[Any], None]) -> bytes:
    model = fitted("decision_tree_regressor", Y_REG)
    state = model.tree_.__getstate__()
    nodes = state["nodes"].copy()
    edit(nodes)
    state["nodes"] = nodes
    model.tree_.__setstate__(state)
    return dump_model(model)


def test_tree_with_a_cycle_refused() -> None:
    def loop(nodes: Any) -> None:
        nodes["left_child"][0] = 0  # the root is its own child: predict would spin

    refuse(tree_with(loop), "decision_tree_regressor", "child index out of order")


def test_tree_with_a_child_outside_refused() -> None:
    def escape(nodes: Any) -> None:
        nodes["right_child"][0] = len(nodes) + 100

    refuse(tree_with(escape), "decision_tree_regressor", "out of order or range")


def test_tree_splitting_on_a_missing_feature_refused() -> None:
    def far(nodes: Any) -> None:
        nodes["feature"][0] = 1_000_000

    refuse(tree_with(far), "decision_tree_regressor", "feature out of range")


def test_tree_feature_beyond_the_model_width_refused() -> None:
    model = fitted("decision_tree_regressor", Y_REG)
    used = int(model.tree_.feature.max())
    model.n_features_in_ = used  # the tree reads column `used`, X would have fewer
    refuse(dump_model(model), "decision_tree_regressor", "feature the model does not have")


def hgb_with(edit: Callable[[Any], None]) -> bytes:
    model = fitted("hist_gradient_boosting_regressor", Y_REG)
    edit(model._predictors[0][0].nodes)
    return dump_model(model)


def test_boosting_tree_with_a_cycle_refused() -> None:
    def loop(nodes: Any) -> None:
        nodes["left"][0] = 0

    refuse(hgb_with(loop), "hist_gradient_boosting_regressor", "child index out of order")


def test_boosting_tree_feature_beyond_the_model_width_refused() -> None:
    def far(nodes: Any) -> None:
        nodes["feature_idx"][0] = 4  # X has columns 0..3

    refuse(hgb_with(far), "hist_gradient_boosting_regressor", "feature the model does not have")


def test_boosting_tree_with_categorical_splits_refused() -> None:
    def categorical(nodes: Any) -> None:
        nodes["is_categorical"][0] = 1

    refuse(hgb_with(categorical), "hist_gradient_boosting_regressor", "categorical")


def test_compressed_members_refused() -> None:
    data = dump_model(fitted("ridge", Y_REG))
    deflated = rewrite(data, lambda _n, c: c, compression=zipfile.ZIP_DEFLATED)
    refuse(deflated, "ridge", "compressed")


def test_object_array_member_refused() -> None:
    data = dump_model(fitted("ridge", Y_REG))

    def pickled(name: str, content: bytes) -> bytes:
        if name == "schema.json":
            return content
        buf = io.BytesIO()
        np.save(buf, np.array([object()], dtype=object), allow_pickle=True)
        return buf.getvalue()

    refuse(rewrite(data, pickled), "ridge", "object arrays are not allowed")


def test_truncated_array_refused() -> None:
    data = dump_model(fitted("ridge", Y_REG))
    cut = rewrite(data, lambda n, c: c if n == "schema.json" else c[:-8])
    refuse(cut, "ridge", "does not match its header")


def test_unknown_bit_generator_refused() -> None:
    data = dump_model(fitted("hist_gradient_boosting_regressor", Y_REG))

    def rename(schema: Any) -> None:
        (gen,) = nodes_of(schema, "RandomGeneratorNode")
        gen["content"]["bit_generator"]["content"]["bit_generator"]["content"] = '"seed"'

    refuse(edit_schema(data, rename), "hist_gradient_boosting_regressor", "bit generator")


def test_object_containing_itself_refused() -> None:
    data = dump_model(fitted("ridge", Y_REG))

    def recurse(schema: Any) -> None:
        # A copy of the root (same __id__) inside the root's own state.
        schema["content"]["content"]["alpha"] = copy.deepcopy(schema)

    refuse(edit_schema(data, recurse), "ridge", "inside itself")


def test_dict_with_non_string_key_type_refused() -> None:
    data = dump_model(fitted("ridge", Y_REG))

    def key_type(schema: Any) -> None:
        schema["content"]["key_types"]["content"][0] = {
            "__class__": "Ridge",
            "__module__": "sklearn.linear_model._ridge",
            "__loader__": "TypeNode",
        }

    refuse(edit_schema(data, key_type), "ridge", "keys must be str or int")


def test_unsupported_protocol_refused() -> None:
    data = dump_model(fitted("ridge", Y_REG))

    def bump(schema: Any) -> None:
        schema["protocol"] = 99

    refuse(edit_schema(data, bump), "ridge", "protocol")


def neighbors_with(edit: Callable[[list[Any]], None]) -> bytes:
    model = fitted("knn_regressor", Y_REG)
    state = list(model._tree.__getstate__())
    state[:4] = [np.array(a, copy=True) for a in state[:4]]
    edit(state)
    model._tree.__setstate__(tuple(state))
    return dump_model(model)


def test_neighbor_tree_index_out_of_range_refused() -> None:
    def far(state: list[Any]) -> None:
        state[1][0] = 10**9  # idx_array: a row the data does not have

    refuse(neighbors_with(far), "knn_regressor", "index out of range")


def test_neighbor_tree_with_children_past_its_last_node_refused() -> None:
    def inner(state: list[Any]) -> None:
        state[2]["is_leaf"][:] = 0  # leaves claim children: the walk would leave the array

    refuse(neighbors_with(inner), "knn_regressor", "children past its last node")


def test_neighbor_tree_wider_than_the_model_refused() -> None:
    model = fitted("knn_regressor", Y_REG)
    model.n_features_in_ = 3  # the tree's data has 4 columns
    refuse(dump_model(model), "knn_regressor", "feature the model does not have")


def test_boosting_with_categorical_features_refused() -> None:
    model = fitted("hist_gradient_boosting_regressor", Y_REG)
    model._bin_mapper.is_categorical_ = np.array([True, False, False, False])
    refuse(dump_model(model), "hist_gradient_boosting_regressor", "categorical")


def test_tree_with_absurd_output_count_refused() -> None:
    data = dump_model(fitted("decision_tree_regressor", Y_REG))

    def outputs(schema: Any) -> None:
        (tree,) = nodes_of(schema, "TreeNode")
        n_outputs = tree["__reduce__"]["args"]["content"][2]
        n_outputs.update(content=str(10**12), __id__=1)  # a fresh id: skops memoises by id

    refuse(edit_schema(data, outputs), "decision_tree_regressor", "outputs out of range")


def test_seed_sequence_with_absurd_pool_refused() -> None:
    data = dump_model(fitted("hist_gradient_boosting_regressor", Y_REG))

    def pool(schema: Any) -> None:
        (gen,) = nodes_of(schema, "RandomGeneratorNode")
        pool_size = gen["content"]["seed_seq"]["content"]["pool_size"]
        pool_size.update(content=str(10**9), __id__=1)

    refuse(edit_schema(data, pool), "hist_gradient_boosting_regressor", "pool size")


def test_tree_disguised_as_a_loss_refused() -> None:
    # The LossNode loader calls its class with artifact arguments and sets its
    # state, skipping the TreeNode path; losses only.
    def loop(nodes: Any) -> None:
        nodes["left_child"][0] = 0

    def disguise(schema: Any) -> None:
        (tree,) = nodes_of(schema, "TreeNode")
        tree["__loader__"] = "LossNode"

    data = edit_schema(tree_with(loop), disguise)
    with pytest.raises(ModelArtifactError, match="cannot be loaded as a loss"):
        load_model(data, "decision_tree_regressor", {}, RS)


def boosting_with(edit: Callable[[Any], None], name: str = "gradient_boosting_regressor") -> bytes:
    model = fitted(name, Y_REG if name.endswith("regressor") else Y_STR)
    edit(model)
    return dump_model(model)


def test_boosting_stage_grid_wider_than_its_outputs_refused() -> None:
    def widen(model: Any) -> None:
        model.estimators_ = np.concatenate([model.estimators_] * 40, axis=1)

    refuse(boosting_with(widen), "gradient_boosting_regressor", "does not fit its outputs")


def test_boosting_stage_without_a_tree_refused() -> None:
    def hollow(model: Any) -> None:
        model.estimators_[1, 0].tree_ = None

    refuse(boosting_with(hollow), "gradient_boosting_regressor", "not a regression tree")


def test_boosting_initial_estimator_of_another_width_refused() -> None:
    from sklearn.dummy import DummyClassifier

    def narrow(model: Any) -> None:
        model.init_ = DummyClassifier(strategy="prior").fit(X, Y_INT)  # 2 classes, not 3

    refuse(
        boosting_with(narrow, "gradient_boosting_classifier"),
        "gradient_boosting_classifier",
        "initial estimator",
    )


def test_neighbor_tree_without_a_distance_refused() -> None:
    def drop(state: list[Any]) -> None:
        state[11] = None

    refuse(neighbors_with(drop), "knn_regressor", "supported distance")


def test_kd_tree_with_ball_tree_bounds_refused() -> None:
    def halve(state: list[Any]) -> None:
        state[3] = np.ascontiguousarray(state[3][:1])  # min only: max is read past the end

    refuse(neighbors_with(halve), "knn_regressor", "wrong shape")


def test_neighbor_tree_with_absurd_levels_refused_at_once() -> None:
    def deep(state: list[Any]) -> None:
        state[5] = 2**40  # 2**n_levels would not finish

    refuse(neighbors_with(deep), "knn_regressor", "complete binary tree")


def test_array_member_referenced_twice_refused() -> None:
    data = dump_model(fitted("mlp_regressor", Y_REG))

    def alias(schema: Any) -> None:
        arrays = [n for n in nodes_of(schema, "NdArrayNode") if n.get("type") == "numpy"]
        arrays[1]["file"] = arrays[0]["file"]  # one member copied twice

    refuse(edit_schema(data, alias), "mlp_regressor", "referenced twice")


def test_model_larger_than_the_budget_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import p2pml.ml.skops_reader as reader

    monkeypatch.setattr(reader, "MAX_BUILT_BYTES", 10_000)
    data = dump_model(fitted("random_forest_regressor", Y_REG))
    refuse(data, "random_forest_regressor", "more than 10000 bytes")


def test_central_directory_pointing_past_the_members_refused() -> None:
    data = bytearray(dump_model(fitted("ridge", Y_REG)))
    end = data.rindex(b"PK\x05\x06")
    offset = int.from_bytes(data[end + 16 : end + 20], "little")
    data[end + 16 : end + 20] = (offset + 1_000_000).to_bytes(4, "little")
    with pytest.raises(ModelArtifactError):
        load_model(bytes(data), "ridge", {}, RS)
