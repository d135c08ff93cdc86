"""The large-dataset path against the in-memory path, where both apply.

Patching the thresholds sends small datasets down the large path: chunked
parse, on-disk rows, masks, block-wise prediction. The models and metrics it
gives must equal the in-memory path's bit for bit (``fit`` mode), or an
in-memory ``partial_fit`` loop over the same batches (``partial_fit`` mode).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes

from p2pml.chain.taskspec import TaskSpec
from p2pml.errors import TrainingError, ValidationError
from p2pml.ipfs.cid import cid_of_bytes
from p2pml.ml import largedata, largetrain
from p2pml.ml.artifact import load_model
from p2pml.ml.estimators import build_estimator
from p2pml.ml.verify import ResultClaim, verify_result
from p2pml.ml.worker import TrainRequest, prepare, train_job

SEED = hashlib.sha256(b"seed").digest()
TASK = hashlib.sha256(b"task").digest()
PUB = hashlib.sha256(b"pub").digest()


@pytest.fixture(scope="module")
def csvs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("large-unit")
    cancer = load_breast_cancer(as_frame=True).frame
    cancer["target"] = cancer["target"].map({0: "malignant", 1: "benign"})
    cancer.to_csv(d / "cancer.csv", index=False)
    load_diabetes(as_frame=True).frame.to_csv(d / "diabetes.csv", index=False)
    return {"cancer": d / "cancer.csv", "diabetes": d / "diabetes.csv"}


def spec_for(path: Path, model: str, metric: str, **params: Any) -> TaskSpec:
    kind = "regression" if "regressor" in model else "classification"
    return TaskSpec(
        dataset_cid=cid_of_bytes(path.read_bytes()),
        target="target",
        model=model,
        kind=kind,
        metric=metric,
        params=tuple(params.items()),
    )


def request(spec: TaskSpec, path: Path, cache: Path) -> TrainRequest:
    return TrainRequest(spec, TASK, SEED, PUB, 2, str(path), str(cache), 1 << 30)


def same_model(spec: TaskSpec, a: bytes, b: bytes, path: Path, cache: Path) -> None:
    """Both artifacts give bit-identical outputs on every row of the dataset
    (the bytes differ in zip timestamps)."""
    prep = prepare(spec, TASK, SEED, PUB, 2, path, cache, 1 << 30)
    ma, mb = (
        load_model(
            x, spec.model, spec.param_dict, prep.random_state, n_features=prep.data.X.shape[1]
        )
        for x in (a, b)
    )
    assert ma.predict(prep.data.X).tobytes() == mb.predict(prep.data.X).tobytes()
    if hasattr(ma, "predict_proba"):
        assert ma.predict_proba(prep.data.X).tobytes() == mb.predict_proba(prep.data.X).tobytes()


CASES = [
    ("cancer", "sgd_classifier", "log_loss", {"loss": "log_loss"}),
    ("cancer", "gaussian_nb", "accuracy", {}),
    ("cancer", "random_forest_classifier", "f1_macro", {"n_estimators": 5}),
    ("diabetes", "sgd_regressor", "rmse", {"tol": None}),
    ("diabetes", "mlp_regressor", "r2", {"hidden_layer_sizes": (8,), "max_iter": 30}),
]


@pytest.mark.parametrize(("data", "model", "metric", "params"), CASES)
def test_fit_mode_equals_in_memory(
    csvs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    data: str,
    model: str,
    metric: str,
    params: dict[str, object],
) -> None:
    spec = spec_for(csvs[data], model, metric, **params)
    ref = train_job(request(spec, csvs[data], tmp_path / "small"))
    monkeypatch.setattr(largedata, "MAX_CELLS", 0)  # every dataset is large
    monkeypatch.setattr(largedata, "CHUNK_ROWS", 50)  # many parse chunks and predict blocks
    big = train_job(request(spec, csvs[data], tmp_path / "large"))
    assert any(p.name.startswith("X.f64") for p in (tmp_path / "large").glob("*/*"))
    same_model(spec, big.artifact, ref.artifact, csvs[data], tmp_path / "small")
    assert big.metric == ref.metric
    assert big.train_rows == ref.train_rows


@pytest.mark.parametrize(("data", "model", "metric", "params"), CASES[:2] + CASES[3:])
def test_partial_fit_mode_equals_an_in_memory_loop(
    csvs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    data: str,
    model: str,
    metric: str,
    params: dict[str, object],
) -> None:
    spec = spec_for(csvs[data], model, metric, **params)
    prep = prepare(spec, TASK, SEED, PUB, 2, csvs[data], tmp_path / "small", 1 << 30)
    X, y = prep.data.X[prep.partition], prep.data.y[prep.partition]
    want = build_estimator(model, spec.param_dict, prep.random_state)
    extra = {"classes": np.unique(prep.data.y)} if spec.kind == "classification" else {}
    for a in range(0, len(y), 40):
        want.partial_fit(X[a : a + 40], y[a : a + 40], **extra)
    monkeypatch.setattr(largedata, "MAX_CELLS", 0)
    monkeypatch.setattr(largetrain, "MAX_CELLS", 0)  # every partition is too large for fit
    monkeypatch.setattr(largedata, "CHUNK_ROWS", 40)
    monkeypatch.setattr(largetrain, "CHUNK_ROWS", 40)
    req = request(spec, csvs[data], tmp_path / "large")
    got = train_job(req)
    model_got = load_model(
        got.artifact, model, spec.param_dict, prep.random_state, n_features=X.shape[1]
    )
    X_hold = prep.data.X[prep.holdout]
    assert np.array_equal(model_got.predict(X_hold), want.predict(X_hold))
    # The verifier takes the same path and accepts the result; audits re-train it.
    claim = ResultClaim(spec, TASK, SEED, PUB, 2, got.artifact, got.metric, got.train_rows)
    verify_result(claim, csvs[data], cache_dir=tmp_path / "large", max_dataset_bytes=1 << 30)
    verify_result(
        dataclasses.replace(claim, audit=True),
        csvs[data],
        cache_dir=tmp_path / "large",
        max_dataset_bytes=1 << 30,
    )
    with pytest.raises(ValidationError) as e:
        verify_result(
            dataclasses.replace(claim, claimed_metric=got.metric + 0.5),
            csvs[data],
            cache_dir=tmp_path / "large",
            max_dataset_bytes=1 << 30,
        )
    assert e.value.reason == "bad-result-metric"


def test_non_incremental_estimator_refuses_a_too_large_partition(
    csvs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forest = spec_for(csvs["cancer"], "random_forest_classifier", "accuracy", n_estimators=5)
    # A result made where the partition was small enough to fit in memory...
    made = train_job(request(forest, csvs["cancer"], tmp_path / "small"))
    monkeypatch.setattr(largedata, "MAX_CELLS", 0)
    monkeypatch.setattr(largetrain, "MAX_CELLS", 0)
    for model, params in (
        ("random_forest_classifier", {"n_estimators": 5}),
        ("mlp_classifier", {"solver": "lbfgs"}),
    ):
        spec = spec_for(csvs["cancer"], model, "accuracy", **params)
        with pytest.raises(TrainingError) as e:
            train_job(request(spec, csvs["cancer"], tmp_path / "large"))
        assert e.value.reason == "partition-too-large"
    # ...is invalid where it is too large: no honest trainer could have made it.
    claim = ResultClaim(forest, TASK, SEED, PUB, 2, made.artifact, made.metric, made.train_rows)
    with pytest.raises(ValidationError) as v:
        verify_result(
            claim, csvs["cancer"], cache_dir=tmp_path / "large", max_dataset_bytes=1 << 30
        )
    assert v.value.reason == "bad-result-dataset" and "partition-too-large" in v.value.detail
    ok = spec_for(csvs["cancer"], "mlp_classifier", "accuracy", solver="adam", max_iter=5)
    assert train_job(request(ok, csvs["cancer"], tmp_path / "large")).train_rows > 0
