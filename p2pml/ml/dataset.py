"""CSV datasets: parse into X (float64) and y, with a per-node parsed cache.

Runs in worker processes only (pandas parsing is CPU work). A parsed dataset
is written once as plain ``.npy`` arrays (never pickled: object arrays are
refused by ``allow_pickle=False``) into a cache directory keyed by
(CID, target, features, parser version), and memory-mapped by later jobs so
rounds and tasks on the same dataset do not reparse. The cache is bounded by
bytes: entries are evicted least recently used first (a use touches the
entry's ``meta.json``).

Bounds, all checked before the arrays they protect are built (the same on
every node, so a verdict on a result never depends on the node):

* rows x columns <= :data:`MAX_CELLS` (rows counted as newlines before
  parsing): otherwise ``dataset-too-large``;
* classification labels are factorised to int64 codes (the rank of the label
  among the sorted distinct labels): never a fixed-width string array, whose
  every row takes the longest label's width; labels longer than
  :data:`MAX_LABEL_CHARS` are refused (``label-too-long``), as are more than
  :data:`MAX_CLASSES` distinct labels.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from p2pml.errors import TrainingError
from p2pml.ml.estimators import CLASSIFICATION

PARSER_VERSION: Final = 2  # 2: string labels as int64 codes
MAX_CLASSES: Final = 1000
MAX_LABEL_CHARS: Final = 256
#: Rows x columns of a dataset: X alone is 8 bytes a cell (256 MiB at the cap).
MAX_CELLS: Final = 32 * 1024**2
#: Default byte limit of the parsed cache (config ``[training] parsed_cache_max_bytes``).
PARSED_CACHE_MAX_BYTES: Final = 2 * 1024**3
#: Age after which a parse's scratch directory is a leftover of a killed worker.
STALE_TMP_SECONDS: Final = 3600


@dataclass(frozen=True)
class Dataset:
    """Parsed data: ``X`` is (n, d) float64 C-order; ``y`` float64 or int64 label codes."""

    X: npt.NDArray[np.float64]
    y: npt.NDArray[Any]
    features: tuple[str, ...]
    #: Classification with string labels: label of each code; else empty.
    labels: tuple[str, ...] = ()

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
    cells = _count_rows(path) * len(_header(path))
    if cells > MAX_CELLS:
        raise TrainingError("dataset-too-large", f"about {cells} cells > limit {MAX_CELLS}")
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
    feats = resolve_features(columns, target, features)
    for f in feats:
        col = df[f]
        if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)):
            raise TrainingError("non-numeric-feature", f"column {f!r} is not numeric")
        if col.isna().any():
            raise TrainingError("missing-value", f"column {f!r} has empty values")
    X = np.ascontiguousarray(df.loc[:, list(feats)].to_numpy(dtype=np.float64))
    if not np.isfinite(X).all():
        raise TrainingError("non-numeric-feature", "features contain inf")
    y, labels = _target(df[target], kind, target)
    return Dataset(X, y, feats, labels)


def resolve_features(columns: list[str], target: str, features: tuple[str, ...]) -> tuple[str, ...]:
    """The task's feature columns (every column but the target when it names
    none); ``missing-target`` / ``missing-feature`` when the header lacks one."""
    if target not in columns:
        raise TrainingError("missing-target", f"no column {target!r}")
    feats = features or tuple(c for c in columns if c != target)
    if not feats:
        raise TrainingError("missing-feature", "the dataset has no feature columns")
    for f in feats:
        if f not in columns:
            raise TrainingError("missing-feature", f"no column {f!r}")
    return feats


def _count_rows(path: Path) -> int:
    """Lines of the file (an upper bound of its rows: quoted newlines count too)."""
    lines = 0
    last = ord("\n")
    buf = np.empty(1 << 22, dtype=np.uint8)  # numpy counts ~3x faster than bytes.count
    with path.open("rb", buffering=0) as f:
        while k := f.readinto(buf.data):
            lines += int(np.count_nonzero(buf[:k] == ord("\n")))
            last = int(buf[k - 1])
    return lines + (last != ord("\n"))


def _header(path: Path) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            return next(csv.reader(f), [])
    except (UnicodeDecodeError, csv.Error) as e:
        raise TrainingError("bad-csv", f"header: {e}") from None


def _target(col: Any, kind: str, name: str) -> tuple[npt.NDArray[Any], tuple[str, ...]]:
    """The target as float64 (regression) or int64 labels, and the names of
    string labels (their codes are the indexes into it)."""
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
        return y, ()
    names: tuple[str, ...] = ()
    if numeric:
        values = col.to_numpy(dtype=np.float64)
        if not (np.isfinite(values).all() and np.array_equal(values, np.round(values))):
            raise TrainingError(
                "continuous-target", f"classification target {name!r} has non-integer values"
            )
        labels = values.astype(np.int64)
        n_classes = len(np.unique(labels))
    else:
        text = col.astype(str)
        longest = int(text.str.len().max())
        if longest > MAX_LABEL_CHARS:
            raise TrainingError(
                "label-too-long",
                f"a label of {name!r} has {longest} > {MAX_LABEL_CHARS} characters",
            )
        # Codes in sorted label order: class order (and so predict_proba's
        # columns) is what it was with the labels themselves.
        codes, uniques = pd.factorize(text, sort=True)
        labels = codes.astype(np.int64)
        n_classes = len(uniques)
        names = tuple(str(u) for u in uniques) if n_classes <= MAX_CLASSES else ()
    if n_classes > MAX_CLASSES:
        raise TrainingError("continuous-target", f"target {name!r} has > {MAX_CLASSES} classes")
    return labels, names


def load_dataset(
    path: Path,
    cache_dir: Path,
    cid: str,
    kind: str,
    target: str,
    features: tuple[str, ...],
    max_bytes: int,
    cache_max_bytes: int = PARSED_CACHE_MAX_BYTES,
) -> Dataset:
    """The parsed dataset, from the cache if present, else parsed and cached."""
    entry = cache_dir / cache_key(cid, kind, target, features)
    try:
        data = _read_entry(entry)
        with contextlib.suppress(OSError):
            os.utime(entry / "meta.json")  # most recently used
        return data
    except (OSError, ValueError, KeyError):
        pass  # absent or incomplete: (re)parse below
    data = parse_csv(path, kind, target, features, max_bytes)
    _write_entry(entry, data)
    evict(cache_dir, cache_max_bytes, keep=entry.name)
    return data


def _read_entry(entry: Path) -> Dataset:
    meta = json.loads((entry / "meta.json").read_text())
    X = np.load(entry / "X.npy", mmap_mode="r", allow_pickle=False)
    y = np.load(entry / "y.npy", mmap_mode="r", allow_pickle=False)
    if X.dtype != np.float64 or X.ndim != 2 or y.shape != (X.shape[0],):
        raise ValueError("corrupt cache entry")
    return Dataset(X, y, tuple(meta["features"]), tuple(meta.get("labels", ())))


def _write_entry(entry: Path, data: Dataset) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=entry.parent))
    try:
        np.save(tmp / "X.npy", data.X, allow_pickle=False)
        np.save(tmp / "y.npy", data.y, allow_pickle=False)
        meta = {"features": list(data.features), "labels": list(data.labels)}
        (tmp / "meta.json").write_text(json.dumps(meta))
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


def evict(cache_dir: Path, max_bytes: int, keep: str | None = None) -> list[str]:
    """Delete least recently used entries until the cache holds <= ``max_bytes``.

    ``keep`` (the entry just written, needed now) stays even if alone over the
    limit. Jobs that memory-mapped an evicted entry keep reading it (an
    unlinked file lives while mapped); later jobs re-parse. Returns the names
    deleted. Several worker processes may evict at once: a vanished entry is
    skipped.
    """
    entries: list[tuple[int, str, int]] = []
    try:
        children = list(cache_dir.iterdir())
    except OSError:
        return []
    for child in children:
        if child.name.startswith(".tmp-"):
            # A writer's scratch dir; one this old was left by a killed worker.
            with contextlib.suppress(OSError):
                if time.time() - child.stat().st_mtime > STALE_TMP_SECONDS:
                    shutil.rmtree(child, ignore_errors=True)
            continue
        try:
            used = (child / "meta.json").stat().st_mtime_ns
            size = sum(f.stat().st_size for f in child.iterdir())
        except OSError:
            continue
        entries.append((used, child.name, size))
    total = sum(size for _, _, size in entries)
    gone = []
    for _, name, size in sorted(entries):
        if total <= max_bytes:
            break
        if name == keep:
            continue
        shutil.rmtree(cache_dir / name, ignore_errors=True)
        total -= size
        gone.append(name)
    return gone
