"""Label names on the model card: the same codes as training, names back at predict.

A task with string labels trains on int64 codes; the card must name each code
exactly as :func:`p2pml.ml.dataset.parse_csv` coded it, or a user's predictions
would carry the wrong labels. Compared against the training parser itself on
CSVs whose labels pandas types in different ways.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris

from p2pml.errors import TrainingError
from p2pml.ml import labels as labels_mod
from p2pml.ml.artifact import dump_model
from p2pml.ml.dataset import MAX_CLASSES, parse_csv
from p2pml.ml.estimators import build_estimator
from p2pml.ml.labels import label_names
from p2pml.ml.modelfile import LoadedModel, ModelCard, load_bytes
from p2pml.ml.predict import predict_frame

MAX_BYTES = 1 << 30

CASES = {
    "words": ["setosa", "versicolor", "virginica", "setosa"],
    "quoted, with commas": ['"a, b"', '"c ""d"""', "plain", '"a, b"'],
    "numbers": ["3", "1", "2", "1"],
    "zero-padded text": ["01", "2", "x", "01"],
    "booleans": ["True", "False", "True", "False"],
    "unicode": ["été", "hiver", "Été", "hiver"],
}


def write(tmp_path: Path, labels: list[str]) -> Path:
    rows = "\n".join(f"{i}.5,{i},{label}" for i, label in enumerate(labels))
    path = tmp_path / "data.csv"
    path.write_text(f"a,b,y\n{rows}\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_names_are_the_training_coding(tmp_path: Path, case: str) -> None:
    path = write(tmp_path, CASES[case])
    trained = parse_csv(path, "classification", "y", (), MAX_BYTES)
    assert label_names(path, "classification", "y") == trained.labels


def test_names_read_in_chunks_match_one_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(7)
    values = [f"class-{int(v)}" for v in rng.integers(0, 40, size=2000)]
    path = write(tmp_path, values)
    monkeypatch.setattr(labels_mod, "CHUNK_ROWS", 97)
    names = label_names(path, "classification", "y")
    assert names == parse_csv(path, "classification", "y", (), MAX_BYTES).labels
    assert len(names) == len(set(values))


def test_no_names_where_training_has_none(tmp_path: Path) -> None:
    path = write(tmp_path, ["a", "b", "c"])
    assert label_names(path, "regression", "y") == ()
    assert label_names(path, "classification", "missing") == ()
    empty = write(tmp_path, ["a", "", "c"])
    with pytest.raises(TrainingError):
        parse_csv(empty, "classification", "y", (), MAX_BYTES)
    assert label_names(empty, "classification", "y") == ()
    many = write(tmp_path, [f"l{i}" for i in range(MAX_CLASSES + 1)])
    assert label_names(many, "classification", "y") == ()


def test_predictions_and_classes_carry_the_names() -> None:
    iris = load_iris(as_frame=True)
    frame = iris.frame
    features = tuple(iris.feature_names)
    names = tuple(sorted(iris.target_names))  # codes are ranks of the sorted labels
    codes = frame["target"].map(lambda t: names.index(iris.target_names[t])).to_numpy()
    est = build_estimator("logistic_regression", {"max_iter": 300}, 5)
    est.fit(frame.loc[:, list(features)].to_numpy(dtype=np.float64), codes)
    card = ModelCard(
        model="logistic_regression",
        kind="classification",
        target="species",
        features=features,
        params={"max_iter": 300},
        random_state=5,
        labels=names,
    )
    loaded = load_bytes(dump_model(est), ModelCard.from_json(card.to_json()))
    assert loaded.classes == list(names)
    rows = frame.iloc[[0, 60, 120]]
    out = predict_frame(loaded, rows, proba=True)
    want = [names[c] for c in est.predict(rows.loc[:, list(features)].to_numpy())]
    assert out["predicted_species"].tolist() == want
    assert [c for c in out.columns if c.startswith("proba_")] == [f"proba_{n}" for n in names]
    # Without names (an old card), the codes come back as they are.
    unnamed = LoadedModel(loaded.estimator, loaded.model, None)
    assert predict_frame(unnamed, rows, features=features)["predicted_target"].tolist() == list(
        est.predict(rows.loc[:, list(features)].to_numpy())
    )


def test_card_labels_must_be_strings() -> None:
    from p2pml.errors import InputError

    data = ModelCard(model="ridge", kind="regression", target="y", features=("a",)).to_json()
    assert data["labels"] == []
    data["labels"] = [1, 2]
    with pytest.raises(InputError, match="labels must be a list of strings"):
        ModelCard.from_json(data)
    del data["labels"]  # cards written before labels existed still read
    assert ModelCard.from_json(data).labels == ()


def test_chunked_reader_sees_quoted_newlines(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": ["line\nbreak", "x", "y"]}).to_csv(path, index=False)
    trained = parse_csv(path, "classification", "y", (), MAX_BYTES)
    assert label_names(path, "classification", "y") == trained.labels
