"""The chunked parser equals the in-memory one; the bounded-memory selection
equals partition.py's. Small chunks make every dataset span many chunks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from p2pml.errors import TrainingError
from p2pml.ml import largedata
from p2pml.ml.dataset import parse_csv
from p2pml.ml.largedata import LargeDataset, parse_large
from p2pml.ml.partition import _smallest, holdout_indices, partition_indices
from p2pml.ml.rowselect import holdout_mask, partition_mask, smallest_mask

SEED = hashlib.sha256(b"seed").digest()
TASK = hashlib.sha256(b"task").digest()
PUB = hashlib.sha256(b"pub").digest()


def rows(n: int, fmt: str) -> str:
    rng = np.random.default_rng(n)
    out = []
    for i in range(n):
        a, b = (float(v) for v in rng.normal(size=2))
        out.append(fmt.format(i=i, a=a, b=b, lab=["x", "é y", "z,q", 'a"b'][i % 4]))
    return "\n".join(out) + "\n"


def quote(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


LABELS = ["x", "é y", "z,q", 'a"b', "multi\nline"]

GOOD = {
    "regression": ("regression", "a,b,t\n" + rows(50, "{a!r},{b:.3f},{a:.17g}")),
    "int-labels": ("classification", "a,b,t\n" + rows(50, "{a!r},{i},{i}")),
    "str-labels": (
        "classification",
        "a,b,t\n"
        + "".join(
            f"{x:.5f},{i % 3},{quote(LABELS[i % 5])}\n"
            for i, x in enumerate(np.linspace(-1, 1, 41))
        ),
    ),
    "bool-feature": (
        "classification",
        "a,b,t\n" + "".join(f"{i / 7},{['True', 'False'][i % 2]},{i % 2}\n" for i in range(30)),
    ),
    # Integers in some chunks, floats in others: converted per chunk.
    "int-then-float": (
        "regression",
        "a,b,t\n" + "".join(f"{i if i < 20 else i + 0.25},{-i},{i * 3}\n" for i in range(40)),
    ),
    # A target that is numeric in some chunks and text in others: text throughout.
    "mixed-target": (
        "classification",
        "a,b,t\n" + "".join(f"{i},{i},{'05' if i < 15 else 'k'}\n" for i in range(30)),
    ),
    "bool-target": (
        "classification",
        "a,b,t\n" + "".join(f"{i},{i},{['true', 'False'][i % 3 == 0]}\n" for i in range(30)),
    ),
}

BAD = {
    "nan-feature": (
        "regression",
        "a,b,t\n" + "".join(f"{i},{'' if i == 25 else i},1\n" for i in range(30)),
    ),
    "text-feature": (
        "regression",
        "a,b,t\n" + "".join(f"{i},{'w' if i == 22 else i},1\n" for i in range(30)),
    ),
    # A text feature after a missing one: the in-memory precedence (feature order) wins.
    "precedence": (
        "regression",
        "a,b,t\n"
        + "".join(f"{'' if i == 28 else i},{'w' if i == 2 else i},1\n" for i in range(30)),
    ),
    "bool-and-number": (
        "regression",
        "a,b,t\n" + "".join(f"{i},{'True' if i < 10 else i},1\n" for i in range(30)),
    ),
    "inf-feature": (
        "regression",
        "a,b,t\n" + "".join(f"{i},{'inf' if i == 29 else i},1\n" for i in range(30)),
    ),
    "nan-target": (
        "regression",
        "a,b,t\n" + "".join(f"{i},{i},{'' if i == 27 else i}\n" for i in range(30)),
    ),
    "text-regression-target": (
        "regression",
        "a,b,t\n" + "".join(f"{i},{i},{'q' if i == 27 else i}\n" for i in range(30)),
    ),
    "float-labels": (
        "classification",
        "a,b,t\n" + "".join(f"{i},{i},{i + (0.5 if i == 21 else 0)}\n" for i in range(30)),
    ),
    "long-label": (
        "classification",
        "a,b,t\n" + "".join(f"{i},{i},{'L' * (300 if i == 26 else 3)}\n" for i in range(30)),
    ),
    "many-classes": ("classification", "a,b,t\n" + "".join(f"{i},{i},c{i}\n" for i in range(1005))),
    "missing-target": ("classification", "a,b,u\n1,2,3\n"),
    "duplicate-header": ("classification", "a,a,t\n1,2,3\n"),
}


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(largedata, "CHUNK_ROWS", 7)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "d.csv"
    path.write_text(text, encoding="utf-8")
    return path


def large(tmp_path: Path, path: Path, kind: str) -> LargeDataset:
    out = tmp_path / "entry"
    out.mkdir()
    meta = parse_large(path, kind, "t", (), out)
    (out / "meta.json").write_text(__import__("json").dumps(meta))
    return largedata._read_meta(out)


@pytest.mark.parametrize("name", sorted(GOOD))
def test_chunked_parse_is_bit_identical(tmp_path: Path, name: str) -> None:
    kind, text = GOOD[name]
    path = write(tmp_path, text)
    ref = parse_csv(path, kind, "t", (), 1 << 30)
    got = large(tmp_path, path, kind)
    X, y = got.gather(np.ones(got.n_rows, dtype=bool))
    assert X.tobytes() == ref.X.tobytes() and X.shape == ref.X.shape
    assert y.dtype == ref.y.dtype and y.tobytes() == ref.y.tobytes()
    assert got.labels == ref.labels
    assert got.features == ref.features
    if kind == "classification":
        assert got.classes == tuple(np.unique(ref.y).tolist())


@pytest.mark.parametrize("name", sorted(BAD))
def test_chunked_parse_refuses_like_in_memory(tmp_path: Path, name: str) -> None:
    kind, text = BAD[name]
    path = write(tmp_path, text)
    with pytest.raises(TrainingError) as ref:
        parse_csv(path, kind, "t", (), 1 << 30)
    out = tmp_path / "entry"
    out.mkdir()
    with pytest.raises(TrainingError) as got:
        parse_large(path, kind, "t", (), out)
    assert got.value.reason == ref.value.reason
    if ref.value.reason in ("non-numeric-feature", "missing-value"):
        assert got.value.detail == ref.value.detail  # the same column is named


def test_batches_are_the_mask_rows_in_order(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD["regression"][1])
    got = large(tmp_path, path, "regression")
    X_all, y_all = got.gather(np.ones(got.n_rows, dtype=bool))
    mask = np.zeros(got.n_rows, dtype=bool)
    mask[[0, 3, 4, 5, 17, 18, 30, 31, 32, 33, 34, 35, 36, 49]] = True
    batches = list(got.batches(mask, size=4))
    assert [len(b[1]) for b in batches] == [4, 4, 4, 2]
    assert np.concatenate([b[0] for b in batches]).tobytes() == X_all[mask].tobytes()
    assert np.concatenate([b[1] for b in batches]).tobytes() == y_all[mask].tobytes()


SHAPES = [
    (n, h, p)
    for n in (10, 11, 97, 1000, 5003)
    for h, p in ((0.2, 0.5), (0.01, 0.99), (0.5, 0.1))
    if h + p <= 1 and n * h >= 1 and n * p >= 2
]


@pytest.mark.parametrize(("n", "h", "p"), SHAPES)
def test_masks_equal_partition_indices(n: int, h: float, p: float) -> None:
    hold = holdout_mask(SEED, TASK, n, h)
    assert np.array_equal(np.flatnonzero(hold), holdout_indices(SEED, TASK, n, h))
    part = partition_mask(SEED, TASK, PUB, 3, n, hold, h, p)
    assert np.array_equal(np.flatnonzero(part), partition_indices(SEED, TASK, PUB, 3, n, h, p))


@pytest.mark.parametrize("k", [0, 1, 5, 50, 99, 100, 150])
def test_smallest_mask_breaks_ties_by_index(k: int) -> None:
    rng = np.random.default_rng(k)
    # Few distinct keys, all in one top-bits bucket: ties everywhere.
    keys = (rng.integers(0, 4, size=100).astype(np.uint64) << np.uint64(3)).astype(">u8")
    exclude = rng.random(100) < 0.3
    got = np.flatnonzero(smallest_mask(keys, k, exclude))
    rest = np.flatnonzero(~exclude)
    want = rest[_smallest(keys.astype(np.uint64)[rest], k)]
    assert np.array_equal(got, want)


def test_a_corrupt_cache_entry_is_parsed_again(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD["regression"][1])
    cache = tmp_path / "cache"
    first = largedata.load_large(path, cache, "cid", "regression", "t", (), 1 << 30, 1 << 30)
    X_first, _ = first.gather(np.ones(first.n_rows, dtype=bool))
    with (first.root / "X.f64").open("r+b") as f:
        f.truncate(8)  # a torn file: its size no longer matches the meta
    again = largedata.load_large(path, cache, "cid", "regression", "t", (), 1 << 30, 1 << 30)
    X_again, _ = again.gather(np.ones(again.n_rows, dtype=bool))
    assert X_again.tobytes() == X_first.tobytes()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"a",
        b"a\n",
        b"a\nb",
        b"\n\n",
        b"x" * (1 << 22) + b"\ny",
        b"x" * ((1 << 22) - 1) + b"\n",
    ],
)
def test_counted_lines_are_newlines_plus_an_unterminated_last_line(
    tmp_path: Path, data: bytes
) -> None:
    """The count of docs/tasks.md §2.1, across the counter's 4 MiB read blocks."""
    from p2pml.ml.dataset import _count_rows

    path = tmp_path / "f.csv"
    path.write_bytes(data)
    assert _count_rows(path) == data.count(b"\n") + (not data.endswith(b"\n") and data != b"")
