"""Datasets over ``MAX_CELLS``: parsed chunk by chunk onto disk, read in blocks.

Which path a dataset takes is a protocol rule (docs/tasks.md §2.1): counted
cells (newlines x header columns, as for ``MAX_CELLS``) at most ``MAX_CELLS``:
the in-memory parser of :mod:`p2pml.ml.dataset`, unchanged; more: this one.

The parse is one pass of ``pandas.read_csv(chunksize=CHUNK_ROWS)``: each
chunk is checked with the in-memory parser's rules (kept as flags and
reported at the end with the in-memory parser's precedence) and its features
are appended as raw float64 to ``X.f64`` in the parsed cache, each chunk
column by column (a chunk's columns are what pandas holds: no transposition
while parsing); the target goes to ``y.bin``. String labels get provisional codes in order of first
appearance and are remapped to their rank among the sorted distinct labels at
the end (the in-memory parser's codes). Memory: one chunk, whatever the file
size. Readers never map the files (``RLIMIT_AS`` counts mappings): they read
blocks of ``CHUNK_ROWS`` rows with ``np.fromfile``. The parse drops the pages
behind it (:func:`drop_behind`), and so does the parsing round's one read
(``streamed``); later rounds read through the page cache.

For the same bytes, X and y equal the in-memory parser's bit for bit (tests
check several datasets parsed both ways). Where per-chunk type inference
could differ from whole-column inference, the rules below make it agree: a
column that is boolean in one chunk and numeric in another is non-numeric
(pandas types it ``object`` as a whole); a target whose chunks have different
types is re-read as text (as pandas keeps an ``object`` column's text).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from p2pml.errors import TrainingError
from p2pml.ml.dataset import (
    MAX_CELLS,
    MAX_CLASSES,
    MAX_LABEL_CHARS,
    _count_rows,
    _header,
    cache_key,
    evict,
    resolve_features,
)
from p2pml.ml.estimators import CLASSIFICATION

#: Rows per parse chunk, per read block and per ``partial_fit`` batch (protocol).
CHUNK_ROWS: Final = 65_536
#: Rows of a large dataset (row keys and masks cost ~10 bytes a row in memory).
MAX_LARGE_ROWS: Final = 16 * 1024**2
LARGE_FORMAT: Final = "large-v1"

Mask = npt.NDArray[np.bool_]


def counted_cells(path: Path) -> int:
    """Newlines x header columns: the measure ``MAX_CELLS`` and the path choice use."""
    return _count_rows(path) * len(_header(path))


def is_large(path: Path) -> bool:
    return counted_cells(path) > MAX_CELLS


def is_large_count(lines: int, columns: int) -> bool:
    """:func:`is_large` of a file of ``lines`` newlines and ``columns`` header columns."""
    return lines * columns > MAX_CELLS


@dataclass(frozen=True)
class LargeDataset:
    """A parsed large dataset on disk (a parsed-cache entry)."""

    root: Path
    n_rows: int
    n_features: int
    features: tuple[str, ...]
    y_dtype: str  # "<f8" (regression) or "<i8" (label codes)
    classes: tuple[int, ...]  # sorted label codes; () for regression
    labels: tuple[str, ...] = ()
    chunk_rows: int = CHUNK_ROWS  # rows of each column-major chunk of X.f64
    #: Read with drop-behind: the round that parsed it (its pages were just
    #: dropped) reads it once more for the holdout; later rounds keep it cached.
    streamed: bool = False

    def blocks(self, mask: Mask | None = None) -> Iterator[tuple[Any, Any]]:
        """(X, y) of each stored chunk of rows, restricted to ``mask``."""
        d, step = self.n_features, self.chunk_rows
        with (self.root / "X.f64").open("rb") as fx, (self.root / "y.bin").open("rb") as fy:
            for a in range(0, self.n_rows, step):
                m = min(step, self.n_rows - a)
                if mask is not None and not mask[a : a + m].any():
                    fx.seek((a + m) * d * 8)
                    fy.seek((a + m) * 8)
                    continue
                fx.seek(a * d * 8)
                fy.seek(a * 8)
                cols = np.fromfile(fx, dtype="<f8", count=m * d)
                y = np.fromfile(fy, dtype=self.y_dtype, count=m)
                if len(y) != m or len(cols) != m * d:
                    raise OSError("truncated parsed dataset")
                X = cols.reshape(d, m).T
                if mask is not None:
                    keep = mask[a : a + m]
                    X, y = X[keep], y[keep]
                X = np.ascontiguousarray(X, dtype=np.float64)
                if self.streamed:
                    drop_behind(fx)
                yield X, y.astype(y.dtype.newbyteorder("="))

    def batches(self, mask: Mask, size: int = CHUNK_ROWS) -> Iterator[tuple[Any, Any]]:
        """The ``mask`` rows in ascending order, in batches of exactly ``size``
        rows (the last one shorter): the protocol's ``partial_fit`` batches."""
        cut = Rebatcher(size)
        for X, y in self.blocks(mask):
            yield from cut.push(X, y)
        yield from cut.rest()

    def gather(self, mask: Mask) -> tuple[Any, Any]:
        """All ``mask`` rows in memory (callers bound their count first)."""
        k = int(mask.sum())
        X = np.empty((k, self.n_features), dtype=np.float64)
        y = np.empty(k, dtype=np.dtype(self.y_dtype).newbyteorder("="))
        at = 0
        for Xb, yb in self.blocks(mask):  # filled in place: no second copy of the rows
            X[at : at + len(yb)] = Xb
            y[at : at + len(yb)] = yb
            at += len(yb)
        return X, y


class Rebatcher:
    """Rows pushed in blocks of any size, cut into batches of exactly ``size``
    rows (the last one shorter): one rule for every ``partial_fit`` pass."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.xs: list[Any] = []
        self.ys: list[Any] = []
        self.held = 0

    def push(self, X: Any, y: Any) -> Iterator[tuple[Any, Any]]:
        self.xs.append(X)
        self.ys.append(y)
        self.held += len(y)
        size = self.size
        while self.held >= size:
            Xa, ya = np.concatenate(self.xs), np.concatenate(self.ys)
            yield np.ascontiguousarray(Xa[:size]), ya[:size]
            self.xs, self.ys, self.held = [Xa[size:]], [ya[size:]], self.held - size

    def rest(self) -> Iterator[tuple[Any, Any]]:
        if self.held:
            yield np.ascontiguousarray(np.concatenate(self.xs)), np.concatenate(self.ys)
        self.xs, self.ys, self.held = [], [], 0


def drop_behind(f: Any) -> None:
    """Stream the parsed cache through the page cache instead of keeping it
    there: drop the file's cached pages (written ones once written back; the
    kernel starts that). The cache of a large dataset may exceed memory, and
    kept it would push out the node's working set; growing the page cache is
    also dearer than recycling it (bench_large_dataset: on this VM, kept, the
    cold round spent ~2 s of system CPU a GB of cache, streamed ~0.4)."""
    f.flush()
    with contextlib.suppress(OSError):
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def large_cache_key(cid: str, kind: str, target: str, features: tuple[str, ...]) -> str:
    return cache_key(cid, kind + "/" + LARGE_FORMAT, target, features)


def load_large(
    path: Path,
    cache_dir: Path,
    cid: str,
    kind: str,
    target: str,
    features: tuple[str, ...],
    max_bytes: int,
    cache_max_bytes: int,
    tap: ChunkTap | None = None,
    lines: int | None = None,
) -> LargeDataset:
    """The parsed large dataset, from the cache if present, else parsed into it
    (``tap``: see :func:`parse_large`; ``lines``: ``_count_rows(path)`` if the
    caller has counted them already)."""
    entry = cache_dir / large_cache_key(cid, kind, target, features)
    try:
        data = _read_meta(entry)
        with contextlib.suppress(OSError):
            os.utime(entry / "meta.json")
        return data
    except (OSError, ValueError, KeyError):
        # Absent, or a corrupt leftover (entries are published whole, by rename).
        shutil.rmtree(entry, ignore_errors=True)
    size = path.stat().st_size
    if size > max_bytes:
        raise TrainingError("dataset-too-large", f"{size} bytes > limit {max_bytes}")
    rows = _count_rows(path) if lines is None else lines
    if rows > MAX_LARGE_ROWS + 1:  # + the header line
        raise TrainingError("dataset-too-large", f"about {rows} rows > limit {MAX_LARGE_ROWS}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache_dir))
    try:
        meta = parse_large(path, kind, target, features, tmp, tap)
        (tmp / "meta.json").write_text(json.dumps(meta))
        try:
            os.rename(tmp, entry)
        except OSError:  # a concurrent writer published first: use its entry
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    evict(cache_dir, cache_max_bytes, keep=entry.name)
    return _read_meta(entry)


def _read_meta(entry: Path) -> LargeDataset:
    meta = json.loads((entry / "meta.json").read_text())
    data = LargeDataset(
        entry,
        int(meta["n_rows"]),
        len(meta["features"]),
        tuple(meta["features"]),
        str(meta["y_dtype"]),
        tuple(int(c) for c in meta["classes"]),
        tuple(meta["labels"]),
        int(meta["chunk_rows"]),
    )
    if data.y_dtype not in ("<f8", "<i8") or data.chunk_rows < 1:
        raise ValueError("corrupt cache entry")
    if (entry / "X.f64").stat().st_size != data.n_rows * data.n_features * 8:
        raise ValueError("corrupt cache entry")
    if (entry / "y.bin").stat().st_size != data.n_rows * 8:
        raise ValueError("corrupt cache entry")
    return data


class _Flags:
    """Column checks of the whole file, reported with the in-memory precedence."""

    def __init__(self, feats: tuple[str, ...]) -> None:
        self.kinds: dict[str, set[str]] = {f: set() for f in feats}
        self.nan: dict[str, bool] = dict.fromkeys(feats, False)
        self.inf = False
        self.target_kinds: set[str] = set()
        self.target_nan = False
        self.target_inf = False

    def first_feature_error(self, feats: tuple[str, ...]) -> TrainingError | None:
        for f in feats:
            kinds = self.kinds[f]
            if "o" in kinds or kinds == {"b", "n"}:
                return TrainingError("non-numeric-feature", f"column {f!r} is not numeric")
            if self.nan[f]:
                return TrainingError("missing-value", f"column {f!r} has empty values")
        if self.inf:
            return TrainingError("non-numeric-feature", "features contain inf")
        return None


def _kind(col: Any) -> str:
    import pandas as pd

    if pd.api.types.is_bool_dtype(col):
        return "b"
    return "n" if pd.api.types.is_numeric_dtype(col) else "o"


class ChunkTap(Protocol):
    """Sees each chunk the parser wrote whole (features and target), in order."""

    def chunk(
        self, start: int, X: Any, y: Any, labels: Mapping[str, int], classes: AbstractSet[int]
    ) -> None:
        """``X``: (features, rows) float64, column-major as written; ``y``: as
        written (provisional codes of ``labels`` for string labels, else label
        values or regression targets); ``labels``/``classes``: the string
        labels / integer classes seen so far, this chunk's included."""


def parse_large(
    path: Path,
    kind: str,
    target: str,
    features: tuple[str, ...],
    out: Path,
    tap: ChunkTap | None = None,
) -> dict[str, Any]:
    """Parse ``path`` into ``out/X.f64`` and ``out/y.bin``; the entry's meta.
    ``tap`` sees each chunk written whole; a chunk it does not see (a gap in
    the rows) means the file is refused or its target re-read at the end."""

    columns = _header(path)
    if not columns or len(set(columns)) != len(columns) or "" in columns:
        raise TrainingError("bad-csv", "empty or duplicate column names in the header")
    feats = resolve_features(columns, target, features)
    flags = _Flags(feats)
    labels: dict[str, int] = {}  # label -> provisional code (first appearance)
    too_many = too_long = non_integer = False
    numeric_classes: set[int] = set()
    n = 0
    with (out / "X.f64").open("wb") as fx, (out / "y.bin").open("wb") as fy:
        for df in _chunks(path):
            if n == 0 and [str(c) for c in df.columns] != columns:
                raise TrainingError("bad-csv", "empty or duplicate column names in the header")
            start, n = n, n + len(df)
            if n > MAX_LARGE_ROWS:
                raise TrainingError("dataset-too-large", f"more than {MAX_LARGE_ROWS} rows")
            X: Any = None  # this chunk's features and target, if written whole
            y: Any = None
            kinds = {f: _kind(df[f]) for f in feats}
            for f in feats:
                flags.kinds[f].add(kinds[f])
            if "o" in kinds.values():  # refused below; only the precedence is left to find
                for f in feats:
                    flags.nan[f] |= bool(df[f].isna().any())
            else:
                X = np.empty((len(feats), len(df)), dtype="<f8")  # column-major chunk
                for j, f in enumerate(feats):
                    X[j] = df[f].to_numpy(dtype=np.float64)
                if not np.isfinite(X).all():  # rare: find which columns, and why
                    nan = np.count_nonzero(np.isnan(X), axis=1)
                    for f, has in zip(feats, nan, strict=True):
                        flags.nan[f] |= bool(has)
                    flags.inf |= bool(np.isinf(X).any())
                if flags.first_feature_error(feats) is None:
                    fx.write(X.data)
                else:
                    X = None
            col = df[target]
            flags.target_nan |= bool(col.isna().any())
            flags.target_kinds.add(_kind(col))
            if flags.target_nan or len(flags.target_kinds) > 1:
                continue  # refused below, or re-read as text
            t = flags.target_kinds.copy().pop()
            if t == "n":
                values = col.to_numpy(dtype=np.float64)
                if kind == CLASSIFICATION:
                    ok = np.isfinite(values).all() and np.array_equal(values, np.round(values))
                    non_integer |= not ok
                    if not non_integer and not too_many:
                        numeric_classes.update(np.unique(values.astype(np.int64)).tolist())
                        too_many = len(numeric_classes) > MAX_CLASSES
                    y = values.astype("<i8") if ok else None
                    fy.write(b"" if y is None else y.tobytes())
                else:
                    flags.target_inf |= not bool(np.isfinite(values).all())
                    y = values.astype("<f8")
                    fy.write(y.tobytes())
            elif kind == CLASSIFICATION:
                long_, many, codes = _code_labels(col, labels, too_many)
                too_long |= long_
                too_many |= many
                y = codes.astype("<i8")
                fy.write(y.tobytes())
            drop_behind(fx)
            drop_behind(fy)
            if tap is not None and X is not None and y is not None:
                tap.chunk(start, X, y, labels, numeric_classes)
    err = flags.first_feature_error(feats)
    if err is not None:
        raise err
    if n == 0:
        raise TrainingError("bad-csv", "no data rows")
    if flags.target_nan:
        raise TrainingError("missing-value", f"target {target!r} has empty values")
    mixed = len(flags.target_kinds) > 1
    numeric = flags.target_kinds == {"n"}
    if kind != CLASSIFICATION:
        if not numeric:
            raise TrainingError(
                "non-numeric-target", f"regression target {target!r} is not numeric"
            )
        if flags.target_inf:
            raise TrainingError("non-numeric-target", f"target {target!r} contains inf")
        return _meta(n, feats, "<f8", (), ())
    if numeric:
        if non_integer:
            raise TrainingError(
                "continuous-target", f"classification target {target!r} has non-integer values"
            )
        if too_many:
            raise TrainingError(
                "continuous-target", f"target {target!r} has > {MAX_CLASSES} classes"
            )
        return _meta(n, feats, "<i8", tuple(sorted(numeric_classes)), ())
    if mixed:  # pandas keeps a mixed column's text: read the target again as text
        labels, too_long, too_many = _reread_labels(path, target, out / "y.bin")
    if too_long:
        raise TrainingError(
            "label-too-long", f"a label of {target!r} has more than {MAX_LABEL_CHARS} characters"
        )
    if too_many:
        raise TrainingError("continuous-target", f"target {target!r} has > {MAX_CLASSES} classes")
    names = sorted(labels)
    rank = np.empty(len(labels), dtype=np.int64)
    for r, name in enumerate(names):
        rank[labels[name]] = r
    _remap(out / "y.bin", rank)
    return _meta(n, feats, "<i8", tuple(range(len(names))), tuple(names))


def _chunks(path: Path, **kw: Any) -> Iterator[Any]:
    import pandas as pd

    try:
        with pd.read_csv(path, index_col=False, chunksize=CHUNK_ROWS, **kw) as reader:
            yield from reader
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TrainingError("bad-csv", first) from None


def _code_labels(
    col: Any, labels: dict[str, int], frozen: bool
) -> tuple[bool, bool, npt.NDArray[np.int64]]:
    """Provisional codes of a chunk's labels; (too long, too many, codes).

    Labels are ``str()`` of the distinct values (the column's text; "True" and
    "False" for a boolean chunk), as ``astype(str)`` gives, checked per distinct
    value rather than per row.
    """
    import pandas as pd

    codes, uniques = pd.factorize(col)
    names = [str(u) for u in uniques]
    too_long = max(map(len, names), default=0) > MAX_LABEL_CHARS
    if frozen or too_long:
        return too_long, frozen, np.zeros(len(col), dtype=np.int64)
    lut = np.empty(len(names), dtype=np.int64)
    for i, name in enumerate(names):
        lut[i] = labels.setdefault(name, len(labels))
        if len(labels) > MAX_CLASSES:
            return too_long, True, np.zeros(len(col), dtype=np.int64)
    return too_long, False, lut[codes]


def _reread_labels(path: Path, target: str, y_path: Path) -> tuple[dict[str, int], bool, bool]:
    labels: dict[str, int] = {}
    too_long = too_many = False
    with y_path.open("wb") as fy:
        for df in _chunks(path, usecols=[target], dtype={target: str}):
            long_, many, codes = _code_labels(df[target], labels, too_many)
            too_long |= long_
            too_many |= many
            fy.write(codes.astype("<i8").tobytes())
    return labels, too_long, too_many


def _remap(y_path: Path, rank: npt.NDArray[np.int64]) -> None:
    """Provisional codes -> ranks, in place, a block at a time."""
    with y_path.open("r+b") as f:
        pos = 0
        while True:
            f.seek(pos)
            codes = np.fromfile(f, dtype="<i8", count=CHUNK_ROWS)
            if not len(codes):
                return
            f.seek(pos)
            f.write(rank[codes].astype("<i8").tobytes())
            pos += len(codes) * 8


def _meta(
    n: int, feats: tuple[str, ...], y_dtype: str, classes: tuple[int, ...], labels: tuple[str, ...]
) -> dict[str, Any]:
    return {
        "format": LARGE_FORMAT,
        "n_rows": n,
        "features": list(feats),
        "y_dtype": y_dtype,
        "classes": list(classes),
        "labels": list(labels),
        "chunk_rows": CHUNK_ROWS,
    }
