"""Running a downloaded model on new rows, with the task's column rules.

The rows come from a CSV with a header. The model sees exactly the task's
feature columns, in the task's order (other columns, the target among them,
are ignored); every one must be present, numeric, finite and non-empty, as
when the task was trained (:func:`p2pml.ml.dataset.parse_csv`). A problem is
an :class:`InputError` naming the column (and the first bad row), one line.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from p2pml.errors import InputError
from p2pml.ml.modelfile import LoadedModel


def read_rows(path: Path) -> Any:
    """The CSV as a pandas DataFrame (header required, duplicate names refused)."""
    import pandas as pd

    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: not a UTF-8 CSV file ({exc})") from None
    if not header:
        raise InputError(f"{path}: empty file (a CSV with a header row is needed)")
    if len(set(header)) != len(header) or any(not h for h in header):
        raise InputError(f"{path}: empty or duplicate column names in the header")
    try:
        return pd.read_csv(path, index_col=False, low_memory=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{path}: not a valid CSV file ({first})") from None


def feature_matrix(df: Any, features: Sequence[str], where: str = "CSV") -> npt.NDArray[np.float64]:
    """The task's feature columns of ``df`` in order, as float64; InputError otherwise."""
    import pandas as pd

    columns = [str(c) for c in df.columns]
    missing = [f for f in features if f not in columns]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(
            f"{where}: no column {missing[0]!r}{more}; the model needs {_list(features)}"
        )
    if len(df) == 0:
        raise InputError(f"{where}: no rows to predict")
    for f in features:
        col = df[f]
        if col.isna().any():
            row = int(np.flatnonzero(col.isna().to_numpy())[0]) + 2  # 1-based, after the header
            raise InputError(f"{where}: column {f!r} has an empty value (line {row})")
        if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)):
            bad = pd.to_numeric(col, errors="coerce").isna().to_numpy()
            row = int(np.flatnonzero(bad)[0]) + 2 if bad.any() else 2
            value = str(col.iloc[row - 2])[:40]
            raise InputError(f"{where}: column {f!r} is not numeric ({value!r} on line {row})")
    X = np.ascontiguousarray(df.loc[:, list(features)].to_numpy(dtype=np.float64))
    if not np.isfinite(X).all():
        r, c = (int(i[0]) for i in np.nonzero(~np.isfinite(X)))
        raise InputError(f"{where}: column {features[c]!r} is not finite on line {r + 2}")
    return X


def _list(features: Sequence[str]) -> str:
    shown = ", ".join(features[:8])
    return shown + (f", ... ({len(features)} columns)" if len(features) > 8 else "")


def columns_for(loaded: LoadedModel, features: Sequence[str] | None) -> tuple[str, ...]:
    """The feature columns to feed the model: given ones, else the card's."""
    if features:
        cols = tuple(features)
    elif loaded.card is not None:
        cols = loaded.card.features
    else:
        raise InputError(
            "the model has no card (MODEL.json) naming its feature columns: "
            "fetch it with `p2pml model get`, or pass --features A,B,..."
        )
    if len(cols) != loaded.n_features:
        raise InputError(f"the model takes {loaded.n_features} features, {len(cols)} named")
    return cols


def predict_frame(
    loaded: LoadedModel,
    df: Any,
    features: Sequence[str] | None = None,
    proba: bool = False,
    where: str = "CSV",
) -> Any:
    """``df`` with the prediction (and class probability) columns appended."""
    cols = columns_for(loaded, features)
    X = feature_matrix(df, cols, where)
    if proba and (not hasattr(loaded.model, "predict_proba") or loaded.classes is None):
        raise InputError(f"--proba: {loaded.estimator} is not a classifier")
    out = df.copy()
    target = loaded.card.target if loaded.card is not None else "target"
    predicted = loaded.model.predict(X)
    if loaded.card is not None and loaded.card.labels:
        predicted = [loaded.label(v) for v in predicted]
    out[f"predicted_{target}"] = predicted
    if proba:
        probs = loaded.model.predict_proba(X)
        for i, cls in enumerate(loaded.classes or []):
            out[f"proba_{cls}"] = probs[:, i]
    return out
