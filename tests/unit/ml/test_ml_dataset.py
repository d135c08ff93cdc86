"""CSV parsing reasons and the parsed-dataset cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from p2pml.errors import TrainingError
from p2pml.ml.dataset import load_dataset, parse_csv

LIMIT = 10 * 1024**2


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "data.csv"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def reason(
    path: Path,
    kind: str = "regression",
    target: str = "y",
    features: tuple[str, ...] = (),
    limit: int = LIMIT,
) -> str:
    with pytest.raises(TrainingError) as e:
        parse_csv(path, kind, target, tuple(features), limit)
    return e.value.reason + "|" + e.value.detail


def test_parse_regression(tmp_path: Path) -> None:
    path = write(tmp_path, "a,b,y\n1,2.5,3\n4,5,6.5\n")
    d = parse_csv(path, "regression", "y", (), LIMIT)
    assert d.X.dtype == np.float64 and d.X.flags.c_contiguous
    assert d.X.tolist() == [[1.0, 2.5], [4.0, 5.0]]
    assert d.y.tolist() == [3.0, 6.5] and d.features == ("a", "b")
    d2 = parse_csv(path, "regression", "y", ("b",), LIMIT)
    assert d2.X.tolist() == [[2.5], [5.0]]


def test_parse_classification_labels(tmp_path: Path) -> None:
    d = parse_csv(write(tmp_path, "a,y\n1,cat\n2,dog\n3,cat\n"), "classification", "y", (), LIMIT)
    # Factorised: int64 codes in sorted label order, the names kept beside them.
    assert d.y.dtype == np.int64 and d.y.tolist() == [0, 1, 0]
    assert d.labels == ("cat", "dog")
    d = parse_csv(write(tmp_path, "a,y\n1,1.0\n2,0\n3,2\n"), "classification", "y", (), LIMIT)
    assert d.y.dtype == np.int64 and d.y.tolist() == [1, 0, 2]


@pytest.mark.parametrize(
    ("text", "kind", "target", "features", "want"),
    [
        (b"a,y\n1,2\n\xff\xfe,3\n", "regression", "y", (), "bad-csv"),
        ("", "regression", "y", (), "bad-csv"),
        ('a,y\n1,"2\n', "regression", "y", (), "bad-csv"),
        ("a,a,y\n1,2,3\n", "regression", "y", (), "bad-csv"),
        ("a,b\n1,2\n", "regression", "label", (), "missing-target|no column 'label'"),
        ("a,y\n1,2\n", "regression", "y", ("a", "zz"), "missing-feature|no column 'zz'"),
        ("y\n1\n2\n", "regression", "y", (), "missing-feature"),
        ("a,b,y\n1,x,2\n2,z,3\n", "regression", "y", (), "non-numeric-feature|column 'b'"),
        ("a,y\n1,2\n,3\n", "regression", "y", (), "missing-value|column 'a'"),
        ("a,y\n1,2\n2,\n", "regression", "y", (), "missing-value"),
        ("a,y\n1,x\n2,z\n", "regression", "y", (), "non-numeric-target"),
        ("a,y\n1,0.5\n2,1.25\n", "classification", "y", (), "continuous-target|"),
    ],
)
def test_bad_inputs(
    tmp_path: Path, text: str | bytes, kind: str, target: str, features: tuple[str, ...], want: str
) -> None:
    got = reason(write(tmp_path, text), kind, target, features)
    assert got.startswith(want), got


def test_too_large(tmp_path: Path) -> None:
    path = write(tmp_path, "a,y\n" + "1,2\n" * 100)
    assert reason(path, limit=100).startswith("dataset-too-large")


def test_cache_parses_once_and_memory_maps(tmp_path: Path) -> None:
    path = write(tmp_path, "a,b,y\n1,2,3\n4,5,6\n7,8,9\n")
    cache = tmp_path / "cache"
    d1 = load_dataset(path, cache, "cid1", "regression", "y", (), LIMIT)
    assert len(list(cache.iterdir())) == 1
    path.write_text("garbage that would not parse \x00\n")  # same CID: must not be re-read
    d2 = load_dataset(path, cache, "cid1", "regression", "y", (), LIMIT)
    assert isinstance(d2.X, np.memmap) and np.array_equal(d1.X, d2.X)
    assert np.array_equal(d1.y, d2.y) and d2.features == ("a", "b")
    # Another key (target/features/CID) is another entry, parsed from the file.
    with pytest.raises(TrainingError):
        load_dataset(path, cache, "cid2", "regression", "y", (), LIMIT)


def test_cache_never_pickles_labels(tmp_path: Path) -> None:
    path = write(tmp_path, "a,y\n1,cat\n2,dog\n")
    cache = tmp_path / "cache"
    load_dataset(path, cache, "c", "classification", "y", (), LIMIT)
    (entry,) = cache.iterdir()
    y = np.load(entry / "y.npy", allow_pickle=False)  # would raise for an object array
    assert y.dtype == np.int64 and y.tolist() == [0, 1]
    again = load_dataset(path, cache, "c", "classification", "y", (), LIMIT)
    assert again.labels == ("cat", "dog")


def test_corrupt_cache_entry_is_rebuilt(tmp_path: Path) -> None:
    path = write(tmp_path, "a,y\n1,2\n3,4\n")
    cache = tmp_path / "cache"
    load_dataset(path, cache, "c", "regression", "y", (), LIMIT)
    (entry,) = cache.iterdir()
    (entry / "X.npy").write_bytes(b"not numpy")
    d = load_dataset(path, cache, "c", "regression", "y", (), LIMIT)
    assert d.X.tolist() == [[1.0], [3.0]]


def test_long_label_is_refused_before_any_label_array(tmp_path: Path) -> None:
    from p2pml.ml.dataset import MAX_LABEL_CHARS

    ok = "a,y\n1,cat\n2," + "d" * MAX_LABEL_CHARS + "\n"
    assert parse_csv(write(tmp_path, ok), "classification", "y", (), LIMIT).y.dtype == np.int64
    bomb = "a,y\n1,cat\n2," + "d" * (MAX_LABEL_CHARS + 1) + "\n"
    with pytest.raises(TrainingError) as e:
        parse_csv(write(tmp_path, bomb), "classification", "y", (), LIMIT)
    assert e.value.reason == "label-too-long"


def test_rows_times_columns_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import p2pml.ml.dataset as dataset

    path = write(tmp_path, "a,b,y\n" + "1,2,3\n" * 10)  # 11 lines x 3 columns
    monkeypatch.setattr(dataset, "MAX_CELLS", 33)
    assert parse_csv(path, "regression", "y", (), LIMIT).n_rows == 10
    monkeypatch.setattr(dataset, "MAX_CELLS", 32)
    with pytest.raises(TrainingError) as e:
        parse_csv(path, "regression", "y", (), LIMIT)
    assert e.value.reason == "dataset-too-large"


def test_parsed_cache_evicts_least_recently_used(tmp_path: Path) -> None:
    import os

    cache = tmp_path / "cache"
    paths = []
    for i in range(3):
        (tmp_path / str(i)).mkdir()
        paths.append(write(tmp_path / str(i), "a,y\n" + f"{i},1\n" * 1000))
    entry_bytes = 0
    names = []
    for i, p in enumerate(paths[:2]):
        load_dataset(p, cache, f"cid{i}", "regression", "y", (), LIMIT)
        (name,) = {e.name for e in cache.iterdir()} - set(names)
        names.append(name)
        entry_bytes = sum(f.stat().st_size for f in (cache / name).iterdir())
        os.utime(cache / name / "meta.json", ns=(i * 10**9, i * 10**9))  # deterministic order
    # Use the older entry: it becomes the most recent, so the other one goes.
    load_dataset(paths[0], cache, "cid0", "regression", "y", (), LIMIT, 2 * entry_bytes + 10)
    load_dataset(paths[2], cache, "cid2", "regression", "y", (), LIMIT, 2 * entry_bytes + 10)
    left = {e.name for e in cache.iterdir()}
    assert names[0] in left and names[1] not in left and len(left) == 2
    # An entry alone over the limit stays: the job that parsed it needs it now.
    load_dataset(paths[1], cache, "cid1", "regression", "y", (), LIMIT, 1)
    assert len(list(cache.iterdir())) == 1


def test_eviction_removes_scratch_dirs_of_killed_workers(tmp_path: Path) -> None:
    import os

    from p2pml.ml.dataset import STALE_TMP_SECONDS, evict

    cache = tmp_path / "cache"
    old, fresh = cache / ".tmp-old", cache / ".tmp-fresh"
    for d in (old, fresh):
        d.mkdir(parents=True)
        (d / "X.npy").write_bytes(b"x" * 100)
    past = os.stat(old).st_mtime - STALE_TMP_SECONDS - 10
    os.utime(old, (past, past))
    evict(cache, 10**9)
    assert not old.exists() and fresh.exists()  # a parse in progress is left alone
