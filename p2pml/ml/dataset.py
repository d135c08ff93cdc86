"""CSV datasets: parse into X (float64) and y, with a per-node parsed cache.

Runs in worker processes only (pandas parsing is CPU work). A parsed dataset
is written once as plain ``.npy`` arrays (never pickled: object arrays are
refused by ``allow_pickle=False``) into a cache directory keyed by
(CID, target, features, parser version), and memory-mapped by later jobs so
rounds and tasks on the same dataset do not reparse.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from p2pml.errors import TrainingError
from p2pml.ml.estimators import CLASSIFICATION

PARSER_VERSION: Final = 1
MAX_CLASSES: Final = 1000


@dataclass(frozen=True)
class Dataset:
    """Parsed data: ``X`` is (n, d) float64 C-order; ``y`` float64 or int64/str labels."""

    X: npt.NDArray[np.float64]
    y: npt.NDArray[Any]
    features: tuple[str, ...]

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])


def cache_key(cid: str, kind: str, target: str, features: tuple[str, ...]) -> str:
    blob = json.dumps([PARSER_VERSION, cid, kind, target, list(features)]).encode()
    return hashlib.sha256(blob).hexdigest()


def parse_csv(
    path: Path, kind: str, target: str, features: tuple[str, ...], max_bytes: int
) -> Dataset:
    """Parse ``path``; ``TrainingError`` with a stable reason on bad input."""
    import pandas as pd

    size = path.stat().st_size
    if size > max_bytes:
        raise TrainingError("dataset-too-large", f"{size} bytes > limit {max_bytes}")
    try:
        # No index column, no type guessing of dates: only numbers and labels.
        df = pd.read_csv(path, index_col=False, low_memory=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TrainingError("bad-csv", first) from None
    columns = [str(c) for c in df.columns]
    if _header(path) != columns or len(set(columns)) != len(columns):
        # pandas renames duplicates ("a.1") and blanks ("Unnamed: 0"): refuse both.
        raise TrainingError("bad-csv", "empty or duplicate column names in the header")
    if target not in columns:
        raise TrainingError("missing-target", f"no column {target!r}")
    feats = features or tuple(c for c in columns if c != target)
    if not feats:
        raise TrainingError("missing-feature", "the dataset has no feature columns")
    for f in feats:
        if f not in columns:
            raise TrainingError("missing-feature", f"no column {f!r}")
    for f in feats:
        col = df[f]
        if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)):
            raise TrainingError("non-numeric-feature", f"column {f!r} is not numeric")
        if col.isna().any():
            raise TrainingError("missing-value", f"column {f!r} has empty values")
    X = np.ascontiguousarray(df.loc[:, list(feats)].to_numpy(dtype=np.float64))
    if not np.isfinite(X).all():
        raise TrainingError("non-numeric-feature", "features contain inf")
    y = _target(df[target], kind, target)
    return Dataset(X, y, feats)


def _header(path: Path) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            return next(csv.reader(f), [])
    except (UnicodeDecodeError, csv.Error) as e:
        raise TrainingError("bad-csv", f"header: {e}") from None


def _target(col: Any, kind: str, name: str) -> npt.NDArray[Any]:
    import pandas as pd

    if col.isna().any():
        raise TrainingError("missing-value", f"target {name!r} has empty values")
    numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
    if kind != CLASSIFICATION:
        if not numeric:
            raise TrainingError("non-numeric-target", f"regression target {name!r} is not numeric")
        y: npt.NDArray[Any] = col.to_numpy(dtype=np.float64)
        if not np.isfinite(y).all():
            raise TrainingError("non-numeric-target", f"target {name!r} contains inf")
        return y
    labels: npt.NDArray[Any]
    if numeric:
        values = col.to_numpy(dtype=np.float64)
        if not (np.isfinite(values).all() and np.array_equal(values, np.round(values))):
            raise TrainingError(
                "continuous-target", f"classification target {name!r} has non-integer values"
            )
        labels = values.astype(np.int64)
    else:
        # Labels as a fixed-width unicode array: saved and loaded without pickle.
        labels = np.asarray(col.astype(str).to_numpy(), dtype=np.str_)
    if len(np.unique(labels)) > MAX_CLASSES:
        raise TrainingError("continuous-target", f"target {name!r} has > {MAX_CLASSES} classes")
    return labels


def load_dataset(
    path: Path,
    cache_dir: Path,
    cid: str,
    kind: str,
    target: str,
    features: tuple[str, ...],
    max_bytes: int,
) -> Dataset:
    """The parsed dataset, from the cache if present, else parsed and cached."""
    entry = cache_dir / cache_key(cid, kind, target, features)
    try:
        return _read_entry(entry)
    except (OSError, ValueError, KeyError):
        pass  # absent or incomplete: (re)parse below
    data = parse_csv(path, kind, target, features, max_bytes)
    _write_entry(entry, data)
    return data


def _read_entry(entry: Path) -> Dataset:
    meta = json.loads((entry / "meta.json").read_text())
    X = np.load(entry / "X.npy", mmap_mode="r", allow_pickle=False)
    y = np.load(entry / "y.npy", mmap_mode="r", allow_pickle=False)
    if X.dtype != np.float64 or X.ndim != 2 or y.shape != (X.shape[0],):
        raise ValueError("corrupt cache entry")
    return Dataset(X, y, tuple(meta["features"]))


def _write_entry(entry: Path, data: Dataset) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=entry.parent))
    try:
        np.save(tmp / "X.npy", data.X, allow_pickle=False)
        np.save(tmp / "y.npy", data.y, allow_pickle=False)
        (tmp / "meta.json").write_text(json.dumps({"features": list(data.features)}))
        if entry.exists():
            try:
                _read_entry(entry)  # a concurrent writer won the race: keep its entry
                shutil.rmtree(tmp, ignore_errors=True)
                return
            except (OSError, ValueError, KeyError):
                shutil.rmtree(entry, ignore_errors=True)  # a corrupt leftover
        os.rename(tmp, entry)  # atomic publish: readers never see a partial entry
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
