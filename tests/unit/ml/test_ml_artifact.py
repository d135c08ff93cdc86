"""Safe model artifacts: round trip, and every kind of tampering refused."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from typing import Any

import pytest
from sklearn.datasets import load_diabetes, load_wine

from p2pml.errors import ModelArtifactError
from p2pml.ml.artifact import TRUSTED_TYPES, artifact_types, dump_model, load_model
from p2pml.ml.estimators import ESTIMATORS, build_estimator

RS = 12345


@pytest.fixture(scope="module")
def ridge_bytes() -> bytes:
    X, y = load_diabetes(return_X_y=True)
    return dump_model(build_estimator("ridge", {"alpha": 0.5}, RS).fit(X, y))


@pytest.fixture(scope="module")
def forest_bytes() -> bytes:
    X, y = load_wine(return_X_y=True)
    return dump_model(
        build_estimator("random_forest_classifier", {"n_estimators": 3}, RS).fit(X, y)
    )


def rewrite_schema(data: bytes, edit: Any) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            content = src.read(info.filename)
            if info.filename == "schema.json":
                schema = json.loads(content)
                edit(schema)
                content = json.dumps(schema).encode()
            dst.writestr(info.filename, content)
    return out.getvalue()


def test_round_trip(ridge_bytes: bytes) -> None:
    model = load_model(ridge_bytes, "ridge", {"alpha": 0.5}, RS, n_features=10)
    X, _ = load_diabetes(return_X_y=True)
    assert model.predict(X[:5]).shape == (5,)


def test_trusted_lists_are_explicit_and_narrow() -> None:
    assert set(TRUSTED_TYPES) == set(ESTIMATORS)
    for name, types in TRUSTED_TYPES.items():
        assert not any(
            t.startswith(("builtins.eval", "builtins.exec", "os.", "subprocess.")) for t in types
        )
        assert not any(t.endswith(("Pipeline", "FunctionTransformer")) for t in types), name


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage bytes that are not a model",
        pickle.dumps({"a": 1}),
        b"PK\x03\x04" + b"\x00" * 100,
    ],
)
def test_garbage_refused(data: bytes) -> None:
    with pytest.raises(ModelArtifactError) as e:
        load_model(data, "ridge", {"alpha": 0.5}, RS)
    assert e.value.reason == "bad-model-artifact"


def test_pickle_inside_a_zip_refused(ridge_bytes: bytes) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("schema.json", "{}")
        zf.writestr("payload.pkl", pickle.dumps(object()))
    with pytest.raises(ModelArtifactError, match="unexpected member"):
        load_model(out.getvalue(), "ridge", {"alpha": 0.5}, RS)


def test_untrusted_type_injected_into_schema_refused(ridge_bytes: bytes) -> None:
    def inject(schema: dict[str, Any]) -> None:
        # A well-formed entry (with its key type): only the type is wrong.
        key_types = schema["content"]["key_types"]["content"]
        key_types.append(dict(key_types[0]))
        schema["content"]["content"]["evil"] = {
            "__class__": "system",
            "__module__": "os",
            "__loader__": "FunctionNode",
            "content": {"module_path": "os", "function": "system"},
            "__id__": 1,
        }

    with pytest.raises(ModelArtifactError, match=r"untrusted types for ridge: os\.system"):
        load_model(rewrite_schema(ridge_bytes, inject), "ridge", {"alpha": 0.5}, RS)


def test_type_trusted_by_skops_but_not_for_this_estimator_refused(ridge_bytes: bytes) -> None:
    # A Pipeline is a perfectly "safe" sklearn type to skops, but no task asks for one.
    def swap(schema: dict[str, Any]) -> None:
        schema["__class__"] = "Pipeline"
        schema["__module__"] = "sklearn.pipeline"

    with pytest.raises(ModelArtifactError, match=r"sklearn\.pipeline\.Pipeline"):
        load_model(rewrite_schema(ridge_bytes, swap), "ridge", {"alpha": 0.5}, RS)


def test_unknown_loader_refused(ridge_bytes: bytes) -> None:
    def loader(schema: dict[str, Any]) -> None:
        schema["content"]["content"]["alpha"]["__loader__"] = "OperatorFuncNode"

    with pytest.raises(ModelArtifactError, match="untrusted skops loaders: OperatorFuncNode"):
        load_model(rewrite_schema(ridge_bytes, loader), "ridge", {"alpha": 0.5}, RS)


def test_wrong_class_refused(ridge_bytes: bytes, forest_bytes: bytes) -> None:
    with pytest.raises(ModelArtifactError, match="untrusted types for lasso"):
        load_model(ridge_bytes, "lasso", {"alpha": 0.5}, RS)
    with pytest.raises(ModelArtifactError):
        load_model(forest_bytes, "decision_tree_classifier", {}, RS)


def test_wrong_params_refused(ridge_bytes: bytes) -> None:
    with pytest.raises(ModelArtifactError, match="'alpha'"):
        load_model(ridge_bytes, "ridge", {"alpha": 0.6}, RS)
    with pytest.raises(ModelArtifactError, match="'random_state'"):
        load_model(ridge_bytes, "ridge", {"alpha": 0.5}, RS + 1)
    with pytest.raises(ModelArtifactError, match="'fit_intercept'"):
        load_model(ridge_bytes, "ridge", {"alpha": 0.5, "fit_intercept": False}, RS)


def test_tampered_param_in_schema_refused(ridge_bytes: bytes) -> None:
    def bump(schema: dict[str, Any]) -> None:
        schema["content"]["content"]["alpha"]["content"] = "0.7"

    with pytest.raises(ModelArtifactError, match="'alpha'"):
        load_model(rewrite_schema(ridge_bytes, bump), "ridge", {"alpha": 0.5}, RS)


def test_wrong_feature_count_refused(ridge_bytes: bytes) -> None:
    with pytest.raises(ModelArtifactError, match="features"):
        load_model(ridge_bytes, "ridge", {"alpha": 0.5}, RS, n_features=3)


def test_zip_bomb_refused(monkeypatch: pytest.MonkeyPatch, ridge_bytes: bytes) -> None:
    import p2pml.ml.artifact as art

    monkeypatch.setattr(art, "MAX_UNPACKED_BYTES", 1000)
    with pytest.raises(ModelArtifactError, match="unpacked size"):
        art.load_model(ridge_bytes, "ridge", {"alpha": 0.5}, RS)


def test_types_listing(forest_bytes: bytes) -> None:
    types, loaders = artifact_types(forest_bytes)
    assert "sklearn.ensemble._forest.RandomForestClassifier" in types
    assert "sklearn.tree._tree.Tree" in types
    assert types <= TRUSTED_TYPES["random_forest_classifier"]
    assert "TreeNode" in loaders
