"""Issue 14, attacks 1-4: hostile artifacts and datasets against real worker processes.

Each test reproduces the attack as measured on the old code and asserts the
verdict, the wall time to reach it (scaled by P2PML_TIMEOUT_FACTOR) and the
worker's peak RSS (VmHWM of the worker process, a fresh pool per test).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import pytest_asyncio

from p2pml.chain.taskspec import TaskSpec
from p2pml.config import TrainingSettings
from p2pml.errors import TrainingError, ValidationError
from p2pml.ml.artifact import dump_model
from p2pml.ml.estimators import build_estimator
from p2pml.ml.partition import derive_random_state, holdout_indices, partition_indices
from p2pml.ml.pool import TrainingPool
from p2pml.ml.trainer import Trainer
from p2pml.ml.verify import verify_result_async
from tests.framework.waiting import TIMEOUT_FACTOR

from .conftest import DirStore

pytestmark = pytest.mark.asyncio(loop_scope="function")

SEED = hashlib.sha256(b"block").digest()
TASK = hashlib.sha256(b"task").digest()
EVE = hashlib.sha256(b"eve").digest()
ROWS = 5000  # holdout 0.2: 1000 rows
FEATURES = 4
#: Wall time of any verdict below (seconds, times the suite's factor).
VERDICT_SECONDS = 20.0
#: Growth of a worker's peak RSS while it reaches a verdict.
RSS_GROWTH_BOUND = 150 * 1024**2
MIB = 1024**2


@pytest_asyncio.fixture
async def pool() -> AsyncIterator[TrainingPool]:
    p = TrainingPool(1, memory_mb=2048)
    await p.start()
    await p.run("info", None, 120 * TIMEOUT_FACTOR)  # imports done: the baseline
    yield p
    await p.close()


def peak_rss(pool: TrainingPool) -> int:
    """Peak resident set of the (single) worker so far, from /proc (VmHWM)."""
    (pid,) = pool.pids
    assert psutil.pid_exists(pid)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def regression_csv(path: Path, labels: bool = False) -> Path:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(ROWS, FEATURES))
    y = X @ np.arange(1, FEATURES + 1) + rng.normal(scale=0.1, size=ROWS)
    if labels:
        y = (y > 0).astype(np.int64)
    lines = ["f0,f1,f2,f3,y"] + [
        ",".join(f"{v:.6g}" for v in (*x, t)) for x, t in zip(X, y, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def spec_for(cid: str, model: str, params: dict[str, Any], kind: str = "regression") -> TaskSpec:
    return TaskSpec(
        dataset_cid=cid,
        target="y",
        model=model,
        kind=kind,
        metric="r2" if kind == "regression" else "accuracy",
        params=tuple(params.items()),
        holdout_fraction=0.2,
        partition_fraction=0.5,
        rounds=1,
    )


def honest_model(csv: Path, spec: TaskSpec) -> Any:
    data = np.loadtxt(csv, delimiter=",", skiprows=1)
    X, y = data[:, :FEATURES], data[:, FEATURES]
    if spec.kind == "classification":
        y = y.astype(np.int64)
    part = partition_indices(SEED, TASK, EVE, 0, ROWS, spec.holdout_fraction, 0.5)
    rs = derive_random_state(SEED, TASK, EVE, 0)
    return build_estimator(spec.model, spec.param_dict, rs).fit(X[part], y[part])


def rewrite_schema(artifact: bytes, edit: Callable[[dict[str, Any]], Any]) -> bytes:
    """The artifact with its schema.json edited (stored members, as skops writes)."""
    src = zipfile.ZipFile(io.BytesIO(artifact))
    schema = json.loads(src.read("schema.json"))
    edit(schema)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for name in src.namelist():
            body = json.dumps(schema).encode() if name == "schema.json" else src.read(name)
            dst.writestr(name, body)
    return out.getvalue()


def chain_tree(depth: int) -> Any:
    """A regression tree every row walks ``depth`` levels down (a chain of splits
    whose threshold sends every row left), well formed for the strict reader."""
    from sklearn.tree._tree import NODE_DTYPE, Tree

    n = 2 * depth + 1
    nodes = np.zeros(n, dtype=NODE_DTYPE)
    inner = np.arange(depth)
    nodes["left_child"] = -1
    nodes["right_child"] = -1
    nodes["feature"] = -2
    nodes["threshold"] = -2.0
    nodes["left_child"][inner] = np.where(inner + 1 < depth, inner + 1, 2 * depth)
    nodes["right_child"][inner] = depth + inner
    nodes["feature"][inner] = 0
    nodes["threshold"][inner] = 1e300
    nodes["n_node_samples"] = 1
    nodes["weighted_n_node_samples"] = 1.0
    tree = Tree(FEATURES, np.array([1], dtype=np.intp), 1)
    state = {
        "max_depth": depth,
        "node_count": n,
        "nodes": nodes,
        "values": np.zeros((n, 1, 1)),
    }
    tree.__setstate__(state)
    return tree


async def verify(
    pool: TrainingPool, store: DirStore, spec: TaskSpec, artifact: bytes, tmp: Path
) -> tuple[ValidationError, float, int]:
    """Verify a hostile result: (the error, seconds taken, worker peak RSS growth)."""
    before = peak_rss(pool)
    t0 = time.perf_counter()
    with pytest.raises(ValidationError) as err:
        await verify_result_async(
            pool,
            spec,
            TASK,
            SEED,
            EVE,
            0,
            await store.fetch(spec.dataset_cid),
            artifact,
            0.5,
            False,
            cache_dir=tmp / "parsed",
            timeout=VERDICT_SECONDS * 3 * TIMEOUT_FACTOR,
        )
    seconds, growth = time.perf_counter() - t0, peak_rss(pool) - before
    print(f"verdict {err.value.reason} in {seconds:.2f} s, worker peak RSS +{growth / MIB:.0f} MiB")
    return err.value, seconds, growth


@pytest.mark.parametrize(
    ("n_estimators", "references", "depth"),
    # The first breaks the reader's byte budget (references charged as copies),
    # the second stays under it and breaks the depth budget.
    [(10, 5000, 20_000), (500, 500, 5_000)],
    ids=["references-beyond-n_estimators", "deep-tree-within-n_estimators"],
)
async def test_attack1_slow_forest_of_memo_references(
    tmp_path: Path, pool: TrainingPool, n_estimators: int, references: int, depth: int
) -> None:
    store = DirStore(tmp_path / "store")
    csv = regression_csv(tmp_path / "data.csv")
    spec = spec_for(await store.add(csv), "random_forest_regressor", {"n_estimators": n_estimators})
    forest = honest_model(csv, spec)
    forest.estimators_[0].tree_ = chain_tree(depth)
    forest.estimators_ = forest.estimators_[:1]
    artifact = dump_model(forest)

    def repeat_first(schema: dict[str, Any]) -> None:
        trees = schema["content"]["content"]["estimators_"]["content"]
        # Tiny nodes naming the first tree's id: the reader used to return
        # the memoised tree for each before any check.
        trees += [{"__id__": trees[0]["__id__"]}] * (references - 1)

    hostile = rewrite_schema(artifact, repeat_first)
    assert len(hostile) < 5 * MIB  # 1000 rows x depth x refs: 2.5e9 to 1e11 node visits
    err, seconds, rss = await verify(pool, store, spec, hostile, tmp_path)
    assert err.reason == "bad-result-model", err
    assert "over budget" in err.detail, err
    assert seconds < VERDICT_SECONDS * TIMEOUT_FACTOR
    assert rss < RSS_GROWTH_BOUND


async def test_attack2_tree_with_a_thousand_outputs_of_a_thousand_classes(
    tmp_path: Path, pool: TrainingPool
) -> None:
    from sklearn.tree._tree import NODE_DTYPE, Tree

    store = DirStore(tmp_path / "store")
    csv = regression_csv(tmp_path / "data.csv", labels=True)
    spec = spec_for(await store.add(csv), "decision_tree_classifier", {}, "classification")
    model = honest_model(csv, spec)
    outputs = classes = 1000
    tree = Tree(FEATURES, np.full(outputs, classes, dtype=np.intp), outputs)
    leaf = np.zeros(1, dtype=NODE_DTYPE)
    leaf["left_child"] = leaf["right_child"] = -1
    leaf["feature"] = -2
    tree.__setstate__(
        {"max_depth": 0, "node_count": 1, "nodes": leaf, "values": np.ones((1, outputs, classes))}
    )
    model.tree_ = tree
    model.n_outputs_ = outputs
    model.classes_ = [np.arange(classes)] * outputs
    model.n_classes_ = [classes] * outputs
    artifact = dump_model(model)
    assert len(artifact) < 9 * MIB  # predict_proba: 1000 rows x 1000 x 1000 float64 = 8 GB
    err, seconds, rss = await verify(pool, store, spec, artifact, tmp_path)
    assert err.reason == "bad-result-model", err
    # From the budget, not from a MemoryError (which depends on the node's memory).
    assert "over budget" in err.detail, err
    assert seconds < VERDICT_SECONDS * TIMEOUT_FACTOR
    assert rss < RSS_GROWTH_BOUND


async def test_attack2_huge_schema_is_refused_before_parsing(
    tmp_path: Path, pool: TrainingPool
) -> None:
    store = DirStore(tmp_path / "store")
    csv = regression_csv(tmp_path / "data.csv")
    spec = spec_for(await store.add(csv), "ridge", {})
    artifact = dump_model(honest_model(csv, spec))

    def bloat(schema: dict[str, Any]) -> None:
        # ~14 MiB of small JSON objects: ~300 MB once parsed.
        schema["padding"] = [{"a": i} for i in range(1_400_000)]

    hostile = rewrite_schema(artifact, bloat)
    assert len(hostile) > 13 * MIB
    err, seconds, rss = await verify(pool, store, spec, hostile, tmp_path)
    assert err.reason == "bad-result-model", err
    assert "schema.json" in err.detail
    assert seconds < VERDICT_SECONDS * TIMEOUT_FACTOR
    assert rss < 64 * MIB  # the artifact's own copies, never the parsed JSON


async def test_attack3_array_n_features_is_a_verdict_not_a_job_failure(
    tmp_path: Path, pool: TrainingPool
) -> None:
    store = DirStore(tmp_path / "store")
    csv = regression_csv(tmp_path / "data.csv")
    spec = spec_for(await store.add(csv), "ridge", {})
    model = honest_model(csv, spec)
    model.n_features_in_ = np.array([FEATURES, FEATURES])
    # Used to raise ValueError in the worker: "job-failed", pending, re-run forever.
    err, seconds, rss = await verify(pool, store, spec, dump_model(model), tmp_path)
    assert err.reason == "bad-result-model", err
    assert seconds < VERDICT_SECONDS * TIMEOUT_FACTOR
    assert rss < RSS_GROWTH_BOUND


async def test_attack4_csv_label_bomb(tmp_path: Path, pool: TrainingPool) -> None:
    store = DirStore(tmp_path / "store")
    rows = ["x,y"] + [f"{i},{'ab'[i % 2]}" for i in range(5000)]
    rows.append("5000," + "L" * 75_000)  # every row as wide as this label: 1.5 GB of labels
    path = tmp_path / "bomb.csv"
    path.write_text("\n".join(rows) + "\n")
    assert path.stat().st_size < 0.2 * MIB
    spec = spec_for(await store.add(path), "decision_tree_classifier", {}, "classification")
    trainer = Trainer(
        store, pool, TrainingSettings(enabled=True, max_job_seconds=60.0), tmp_path / "parsed"
    )
    before = peak_rss(pool)
    t0 = time.perf_counter()
    with pytest.raises(TrainingError) as err:
        await trainer.train_round(spec, TASK, SEED, EVE, 0)
    assert err.value.reason == "label-too-long", err.value
    assert time.perf_counter() - t0 < VERDICT_SECONDS * TIMEOUT_FACTOR
    assert peak_rss(pool) - before < RSS_GROWTH_BOUND
    assert not list((tmp_path / "parsed").glob("*/y.npy"))  # nothing cached


async def test_honest_forest_passes_the_budgets(tmp_path: Path, pool: TrainingPool) -> None:
    """The budgets do not refuse the models they are meant to let through."""
    store = DirStore(tmp_path / "store")
    csv = regression_csv(tmp_path / "data.csv")
    spec = spec_for(await store.add(csv), "random_forest_regressor", {"n_estimators": 20})
    trainer = Trainer(
        store, pool, TrainingSettings(enabled=True, max_job_seconds=120.0), tmp_path / "parsed"
    )
    out = await trainer.train_round(spec, TASK, SEED, EVE, 0)
    artifact = (await store.fetch(out.model_cid)).read_bytes()
    await trainer.verify(spec, TASK, SEED, EVE, 0, artifact, out.metric, audit=True)
    assert len(holdout_indices(SEED, TASK, ROWS, 0.2)) == 1000
