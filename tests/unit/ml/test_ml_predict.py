"""Model files on the user's disk: safe loading, `model show`, `predict`'s column rules.

Everything runs the real CLI entry point (``p2pml.cli.main``) on real skops
artifacts written by the trainer's own ``dump_model``; bad input must give
exactly one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris

from p2pml.cli import main
from p2pml.errors import InputError, ModelArtifactError
from p2pml.ml.artifact import dump_model
from p2pml.ml.estimators import build_estimator
from p2pml.ml.modelfile import ModelCard, card_path, load_bytes, load_file, write_card
from p2pml.ml.predict import feature_matrix

FEATURES = ("sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)")
PARAMS = {"C": 0.5, "max_iter": 200}
RANDOM_STATE = 1234


@pytest.fixture(scope="module")
def iris() -> pd.DataFrame:
    frame: pd.DataFrame = load_iris(as_frame=True).frame
    return frame


@pytest.fixture
def model_file(tmp_path: Path, iris: pd.DataFrame) -> Path:
    est = build_estimator("logistic_regression", PARAMS, RANDOM_STATE)
    est.fit(iris.loc[:, list(FEATURES)].to_numpy(dtype=np.float64), iris["target"].to_numpy())
    path = tmp_path / "model.skops"
    path.write_bytes(dump_model(est))
    card = ModelCard(
        model="logistic_regression",
        kind="classification",
        target="target",
        features=FEATURES,
        params=PARAMS,
        random_state=RANDOM_STATE,
        metric="accuracy",
        metric_value=0.97,
        task="ab" * 32,
        result="cd" * 32,
        model_cid="QmTest",
    )
    write_card(card_path(path), card)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> str:
    assert code != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# -- model show ---------------------------------------------------------------------


def test_model_show_prints_estimator_params_features_classes(
    capsys: pytest.CaptureFixture[str], model_file: Path
) -> None:
    code, out, err = run(capsys, "model", "show", str(model_file))
    assert code == 0, err
    assert "logistic_regression (sklearn.linear_model._logistic.LogisticRegression)" in out
    assert "C=0.5" in out and "max_iter=200" in out and f"random_state={RANDOM_STATE}" in out
    assert "features   4" in out
    assert "classes    0, 1, 2" in out
    assert "columns    " + ", ".join(FEATURES) in out


def test_model_show_json_without_card(capsys: pytest.CaptureFixture[str], model_file: Path) -> None:
    code, out, _ = run(capsys, "model", "show", str(model_file), "--no-card", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["estimator"] == "logistic_regression"
    assert info["n_features"] == 4 and info["classes"] == [0, 1, 2]
    assert "features" not in info  # only the card knows the columns


def test_card_must_match_the_artifact(model_file: Path) -> None:
    card = json.loads(card_path(model_file).read_text())
    card["params"]["C"] = 2.0
    card_path(model_file).write_text(json.dumps(card))
    with pytest.raises(ModelArtifactError, match="parameter 'C'"):
        load_file(model_file)


def test_pickle_file_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, iris: pd.DataFrame
) -> None:
    est = build_estimator("logistic_regression", PARAMS, RANDOM_STATE)
    bad = tmp_path / "model.pkl"
    bad.write_bytes(pickle.dumps(est))
    for argv in (("model", "show", str(bad)), ("predict", "--model", str(bad), "x.csv")):
        line = one_line_error(*run(capsys, *argv)[::2])
        assert "bad-model-artifact" in line and "not a skops (zip) artifact" in line


def test_artifact_of_a_non_allowlisted_type_is_refused(tmp_path: Path) -> None:
    from sklearn.svm import SVC

    X, y = load_iris(return_X_y=True)
    data = dump_model(SVC().fit(X, y))
    with pytest.raises(ModelArtifactError, match="SVC is not an allowlisted estimator"):
        load_bytes(data)


def test_artifact_naming_an_untrusted_type_inside_is_refused(model_file: Path) -> None:
    # A logistic regression whose schema smuggles in another type: the reader
    # refuses it by name before importing anything.
    buf = io.BytesIO()
    with zipfile.ZipFile(model_file) as src, zipfile.ZipFile(buf, "w") as dst:
        for info in src.infolist():
            raw = src.read(info)
            if info.filename == "schema.json":
                schema = json.loads(raw)
                schema["content"]["content"]["C"] = {
                    "__class__": "system",
                    "__module__": "os",
                    "__loader__": "ObjectNode",
                    "content": {},
                }
                raw = json.dumps(schema).encode()
            dst.writestr(info.filename, raw)
    with pytest.raises(ModelArtifactError, match=r"os\.system"):
        load_bytes(buf.getvalue())


def test_unknown_file_and_bad_card_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, model_file: Path
) -> None:
    line = one_line_error(*run(capsys, "model", "show", str(tmp_path / "nope.skops"))[::2])
    assert "No such file" in line
    card_path(model_file).write_text("{not json")
    line = one_line_error(*run(capsys, "model", "show", str(model_file))[::2])
    assert "not a p2pml model card" in line


# -- predict --------------------------------------------------------------------------


def test_predict_uses_the_task_columns_in_order(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, model_file: Path, iris: pd.DataFrame
) -> None:
    # Columns shuffled, an extra one, no target: the card's order decides.
    rows = iris.drop(columns=["target"]).iloc[::10]
    shuffled = rows[[FEATURES[2], "petal width (cm)", FEATURES[0], FEATURES[1]]].copy()
    shuffled.insert(1, "note", "x")
    data = tmp_path / "new.csv"
    shuffled.to_csv(data, index=False)
    out_csv = tmp_path / "pred.csv"
    code, _, err = run(
        capsys, "predict", "--model", str(model_file), str(data), "-o", str(out_csv), "--proba"
    )
    assert code == 0, err
    got = pd.read_csv(out_csv)
    model = load_file(model_file).model
    want = model.predict(rows.loc[:, list(FEATURES)].to_numpy())
    assert got["predicted_target"].tolist() == want.tolist()
    assert list(got.columns[:5]) == list(shuffled.columns)
    proba = got[["proba_0", "proba_1", "proba_2"]].to_numpy()
    assert np.allclose(proba, model.predict_proba(rows.loc[:, list(FEATURES)].to_numpy()))


def test_predict_to_stdout(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, model_file: Path, iris: pd.DataFrame
) -> None:
    data = tmp_path / "new.csv"
    iris.iloc[:3].to_csv(data, index=False)
    code, out, _ = run(capsys, "predict", "--model", str(model_file), str(data))
    assert code == 0
    assert pd.read_csv(io.StringIO(out))["predicted_target"].tolist() == [0, 0, 0]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda df: df.drop(columns=[FEATURES[1]]), "no column 'sepal width (cm)'"),
        (
            lambda df: df.assign(**{FEATURES[3]: ["wide"] + [0.2] * (len(df) - 1)}),
            "column 'petal width (cm)' is not numeric ('wide' on line 2)",
        ),
        (
            lambda df: df.assign(**{FEATURES[0]: [5.1, None] + [5.0] * (len(df) - 2)}),
            "column 'sepal length (cm)' has an empty value (line 3)",
        ),
        (lambda df: df.iloc[:0], "no rows to predict"),
    ],
)
def test_predict_column_errors_name_the_column(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    model_file: Path,
    iris: pd.DataFrame,
    edit: object,
    message: str,
) -> None:
    data = tmp_path / "bad.csv"
    edit(iris.iloc[:5]).to_csv(data, index=False)  # type: ignore[operator]
    out_csv = tmp_path / "never.csv"
    code, _, err = run(capsys, "predict", "--model", str(model_file), str(data), "-o", str(out_csv))
    assert message in one_line_error(code, err)
    assert not out_csv.exists()


def test_predict_without_card_needs_features(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, model_file: Path, iris: pd.DataFrame
) -> None:
    card_path(model_file).unlink()
    data = tmp_path / "new.csv"
    iris.iloc[:4].to_csv(data, index=False)
    line = one_line_error(*run(capsys, "predict", "--model", str(model_file), str(data))[::2])
    assert "no card" in line and "--features" in line
    code, out, _ = run(
        capsys, "predict", "--model", str(model_file), str(data), "--features", ",".join(FEATURES)
    )
    assert code == 0 and len(pd.read_csv(io.StringIO(out))) == 4
    line = one_line_error(
        *run(capsys, "predict", "--model", str(model_file), str(data), "--features", "a,b")[::2]
    )
    assert "takes 4 features, 2 named" in line


def test_proba_on_a_regressor_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    X = np.arange(20, dtype=np.float64).reshape(10, 2)
    est = build_estimator("ridge", {"alpha": 1.0}, 7).fit(X, X.sum(axis=1))
    path = tmp_path / "r.skops"
    path.write_bytes(dump_model(est))
    write_card(
        card_path(path),
        ModelCard(
            model="ridge",
            kind="regression",
            target="y",
            features=("a", "b"),
            params={"alpha": 1.0},
            random_state=7,
        ),
    )
    data = tmp_path / "d.csv"
    pd.DataFrame(X, columns=["a", "b"]).to_csv(data, index=False)
    line = one_line_error(*run(capsys, "predict", "--model", str(path), str(data), "--proba")[::2])
    assert "ridge is not a classifier" in line


def test_feature_matrix_rejects_infinity() -> None:
    df = pd.DataFrame({"a": [1.0, float("inf")], "b": [1.0, 2.0]})
    with pytest.raises(InputError, match="column 'a' is not finite on line 3"):
        feature_matrix(df, ("a", "b"))


def test_csv_that_is_not_utf8_or_has_duplicate_columns(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, model_file: Path
) -> None:
    data = tmp_path / "bin.csv"
    data.write_bytes(b"\xff\xfe\x00garbage\n")
    line = one_line_error(*run(capsys, "predict", "--model", str(model_file), str(data))[::2])
    assert "not a UTF-8 CSV" in line
    data.write_text("a,a\n1,2\n")
    line = one_line_error(*run(capsys, "predict", "--model", str(model_file), str(data))[::2])
    assert "duplicate column names" in line
