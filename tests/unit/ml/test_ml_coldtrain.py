"""The first round on a large dataset, trained while parsing, against the
two-pass path (parse into the cache, then train from it) on the same rows.

The thresholds are patched so small datasets take the large path with many
chunks and batches. Every case checks which way the cold round went (the
feed's verdict) and that its model equals the two-pass model bit for bit:
when the feed's guesses hold, and when they fail and it falls back.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

from p2pml.chain.taskspec import TaskSpec
from p2pml.errors import TrainingError
from p2pml.ipfs.cid import cid_of_bytes
from p2pml.ml import coldtrain, largedata, largetrain
from p2pml.ml.artifact import load_model
from p2pml.ml.partition import derive_random_state
from p2pml.ml.worker import TrainRequest, TrainResult, train_job

SEED = hashlib.sha256(b"seed").digest()
TASK = hashlib.sha256(b"task").digest()
PUB = hashlib.sha256(b"pub").digest()
CHUNK = 40


@pytest.fixture(autouse=True)
def large_path(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every dataset and partition is large; the feeds' verdicts are recorded."""
    monkeypatch.setattr(largedata, "MAX_CELLS", 0)
    monkeypatch.setattr(largetrain, "MAX_CELLS", 0)
    monkeypatch.setattr(largedata, "CHUNK_ROWS", CHUNK)
    monkeypatch.setattr(largetrain, "CHUNK_ROWS", CHUNK)
    verdicts: list[Any] = []
    finish = coldtrain.PartitionFeed.finish

    def recorded(self: coldtrain.PartitionFeed, data: largedata.LargeDataset) -> Any:
        verdicts.append(finish(self, data))
        return verdicts[-1]

    monkeypatch.setattr(coldtrain.PartitionFeed, "finish", recorded)
    return verdicts


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


def both_ways(spec: TaskSpec, path: Path, cache: Path) -> tuple[TrainResult, TrainResult]:
    """(cold round, the same round again from the parsed cache: two passes)."""
    req = TrainRequest(spec, TASK, SEED, PUB, 2, str(path), str(cache), 1 << 30)
    cold = train_job(req)
    assert any(cache.glob("*/X.f64"))  # the cold round filled the cache
    return cold, train_job(req)


def assert_same_model(spec: TaskSpec, a: TrainResult, b: TrainResult, n_features: int) -> None:
    rs = derive_random_state(SEED, TASK, PUB, 2)
    ma, mb = (
        load_model(r.artifact, spec.model, spec.param_dict, rs, n_features=n_features)
        for r in (a, b)
    )
    fitted = [k for k, v in vars(ma).items() if k.endswith("_") and isinstance(v, np.ndarray)]
    assert fitted
    for k in fitted:
        assert getattr(ma, k).tobytes() == getattr(mb, k).tobytes(), k
    assert a.metric == b.metric
    assert a.train_rows == b.train_rows


def write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def cancer() -> pd.DataFrame:
    df = load_breast_cancer(as_frame=True).frame
    df["target"] = df["target"].map({0: "malignant", 1: "benign"})
    return df


CASES = [
    ("cancer", "sgd_classifier", "log_loss", {"loss": "log_loss"}),
    ("wine", "sgd_classifier", "accuracy", {}),  # 3 classes: one-vs-all
    ("cancer", "gaussian_nb", "accuracy", {}),
    ("cancer", "mlp_classifier", "accuracy", {"hidden_layer_sizes": (4,)}),
    ("diabetes", "sgd_regressor", "rmse", {"tol": None}),
]


@pytest.mark.parametrize(("data", "model", "metric", "params"), CASES)
def test_trained_while_parsing_equals_two_passes(
    tmp_path: Path,
    large_path: list[Any],
    data: str,
    model: str,
    metric: str,
    params: dict[str, object],
) -> None:
    frames = {
        "cancer": lambda: cancer(),
        # integer labels 0, 1, 2; shuffled: sorted by label, the feed would give up
        "wine": lambda: load_wine(as_frame=True).frame.sample(frac=1.0, random_state=0),
        "diabetes": lambda: load_diabetes(as_frame=True).frame,
    }
    frame = frames[data]()
    path = write(frame, tmp_path / "data.csv")
    spec = spec_for(path, model, metric, **params)
    cold, warm = both_ways(spec, path, tmp_path / "cache")
    assert len(large_path) == 1 and large_path[0] is not None  # trained while parsing
    assert_same_model(spec, cold, warm, frame.shape[1] - 1)


def late_label(df: pd.DataFrame) -> pd.DataFrame:
    """A label first seen in the last row, sorted before the others: every
    code fixed from the earlier rows is wrong."""
    df.loc[len(df) - 1, "target"] = "aardvark"
    return df


def late_class(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[len(df) - 1, "target"] = -1  # an integer class below the others
    return df


def mixed_target(df: pd.DataFrame) -> pd.DataFrame:
    """Integer labels, then text in the last chunk: the target is re-read as text."""
    df["target"] = df["target"].map({"malignant": 0, "benign": 1}).astype(object)
    df.loc[len(df) - 1, "target"] = "other"
    return df


def write_blank_lines(df: pd.DataFrame, path: Path) -> Path:
    """Blank lines count as newlines but are no rows: the counted rows are wrong."""
    text = df.to_csv(index=False)
    path.write_text(text.replace("\n", "\n\n", 3))
    return path


@pytest.mark.parametrize("case", ["late-label", "late-class", "mixed-target", "blank-lines"])
def test_a_wrong_guess_falls_back_to_two_passes(
    tmp_path: Path, large_path: list[Any], case: str
) -> None:
    frame = cancer()
    if case == "late-label":
        path = write(late_label(frame), tmp_path / "data.csv")
    elif case == "late-class":
        frame["target"] = frame["target"].map({"malignant": 0, "benign": 1})
        path = write(late_class(frame), tmp_path / "data.csv")
    elif case == "mixed-target":
        path = write(mixed_target(frame), tmp_path / "data.csv")
    else:
        path = write_blank_lines(frame, tmp_path / "data.csv")
    spec = spec_for(path, "sgd_classifier", "accuracy", loss="log_loss")
    cold, warm = both_ways(spec, path, tmp_path / "cache")
    assert large_path == [None]  # the feed gave up: the cold round trained from the cache
    assert_same_model(spec, cold, warm, frame.shape[1] - 1)


def test_bad_input_gets_the_two_pass_paths_error(tmp_path: Path, large_path: list[Any]) -> None:
    frame = cancer()
    frame.iloc[len(frame) - 1, 0] = None  # an empty feature value in the last chunk
    path = write(frame, tmp_path / "data.csv")
    spec = spec_for(path, "sgd_classifier", "accuracy")
    req = TrainRequest(spec, TASK, SEED, PUB, 2, str(path), str(tmp_path / "cache"), 1 << 30)
    with pytest.raises(TrainingError) as e:
        train_job(req)
    assert e.value.reason == "missing-value"
    assert not any((tmp_path / "cache").glob("*/X.f64"))  # nothing half-parsed was kept
