#!/usr/bin/env python3
"""Benchmark: validating a block of 50 training results (no audits) on 2 cores.

A synthetic regression CSV (50,000 rows x 20 features; ``--quick``: 20,000)
sits in a real embedded IPFS store. Five tasks on it (one per estimator) get
results from ten trainer keys each: 50 results.

Trainer side: each result is produced exactly as ``worker.train_job`` does it
(prepare, fit, evaluate, dump_model), step by step in 2 spawn processes with
one BLAS thread each, so the holdout evaluation of each model
(``worker.evaluate``: holdout rows, predict, metric; the model is in memory)
is timed on its own. Artifacts go into the store.

Validator side: the node's own ``Verifier(parallel=2)`` over ``Trainer``
and a ``TrainingPool(2)``, resolving one request per result: it fetches each
artifact from the store (downloads overlap with the workers' CPU work) and
verifies it in a worker (holdout from the parsed cache, safe model load,
predict, metric). The parsed-dataset cache is warmed first (a validator
parses a dataset once, not once per result; the parse time is printed).

Figures: the issue's figure is the time per result of validating the block
on 2 cores (block wall time / results) against the trainer's own evaluation
time of the same models; target <= 1.5. Printed beside it, stricter: each
result's check alone in one worker (dataset cache hit, pool round trip,
verify_result), against the same evaluation times.

    python scripts/bench_verify.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/ is not a package

from benchlib import figure

from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.types import ResultTx
from p2pml.config import IpfsSettings, TrainingSettings
from p2pml.ml.pool import TrainingPool
from p2pml.ml.trainer import Trainer
from p2pml.ml.verify import ResultClaim
from p2pml.ml.worker import THREAD_ENV
from p2pml.node.verifier import Request, Verifier

SEED = hashlib.sha256(b"bench-verify-block").digest()
TRAINERS = 10
WORKERS = 2


@dataclass(frozen=True)
class Job:
    spec: TaskSpec
    task_id: bytes
    key: bytes
    dataset: str
    cache: str


@dataclass(frozen=True)
class Trained:
    artifact: bytes
    metric: float
    rows: int
    fit_s: float
    eval_s: float


def _init_worker() -> None:
    from p2pml.ml.worker import limit_threads

    global _LIMITS
    _LIMITS = limit_threads()  # one thread, like a pool worker (kept for the process life)


_LIMITS: Any = None


def train_and_time(job: Job) -> Trained:
    """``worker.train_job`` step by step, timing ``evaluate`` alone."""
    from p2pml.ml.artifact import dump_model
    from p2pml.ml.worker import evaluate, fit, prepare

    prep = prepare(
        job.spec, job.task_id, SEED, job.key, 0, Path(job.dataset), Path(job.cache), 10**10
    )
    t0 = time.perf_counter()
    model = fit(job.spec, prep)
    t1 = time.perf_counter()
    metric = evaluate(job.spec, model, prep)
    t2 = time.perf_counter()
    return Trained(dump_model(model), metric, len(prep.partition), t1 - t0, t2 - t1)


def breakdown(job: Job, tr: Trained, cache: Path) -> tuple[float, float, float]:
    """In-process, one thread: verify_result's steps (holdout, safe load, metric) in s."""
    import warnings

    from p2pml.ml.artifact import load_model
    from p2pml.ml.metrics import compute_metric
    from p2pml.ml.partition import derive_random_state
    from p2pml.ml.verify import holdout_of

    t0 = time.perf_counter()
    hold = holdout_of(job.spec, job.task_id, SEED, Path(job.dataset), cache, 10**10)
    rs = derive_random_state(SEED, job.task_id, job.key, 0)
    t1 = time.perf_counter()
    model = load_model(tr.artifact, job.spec.model, job.spec.param_dict, rs, hold.n_features)
    t2 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compute_metric(job.spec.metric, model, hold.X, hold.y)
    return t1 - t0, t2 - t1, time.perf_counter() - t2


class TimedChecker:
    """The node's ``ResultChecker`` (a ``Trainer``), timing each result's check:
    dataset cache hit, pool round trip, and the worker's verify_result."""

    def __init__(self, inner: Trainer) -> None:
        self.inner = inner
        self.seconds: dict[tuple[bytes, bytes], float] = {}

    async def verify(self, claim: ResultClaim, background: bool = False) -> None:
        t = time.perf_counter()
        await self.inner.verify(claim, background)
        self.seconds[(claim.task_id, claim.trainer_pubkey)] = time.perf_counter() - t


def make_csv(path: Path, rows: int, features: int = 20) -> None:
    import numpy as np

    rng = np.random.default_rng(7)
    X = rng.normal(size=(rows, features))
    y = X @ rng.normal(size=features) + np.sin(X[:, 0] * 3) * 2 + rng.normal(scale=0.5, size=rows)
    header = ",".join([f"x{i}" for i in range(features)] + ["y"])
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", header=header, comments="", fmt="%.8g")


def cases(quick: bool) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("ridge", {}),
        ("decision_tree_regressor", {"max_depth": 12}),
        ("random_forest_regressor", {"n_estimators": 10 if quick else 20, "max_depth": 10}),
        ("hist_gradient_boosting_regressor", {"max_iter": 50}),
        ("mlp_regressor", {"hidden_layer_sizes": (32,), "max_iter": 5 if quick else 10}),
    ]


async def run(quick: bool) -> None:
    from p2pml.ipfs import open_dataset_store
    from p2pml.ml.worker import prepare

    rows = 20_000 if quick else 50_000
    os.environ.update(THREAD_ENV)  # before any spawn child imports numpy
    with tempfile.TemporaryDirectory(prefix="p2pml-bench-verify-") as tmp:
        root = Path(tmp)
        csv = root / "data.csv"
        make_csv(csv, rows)
        store = open_dataset_store(IpfsSettings(mode="embedded", timeout=600), root / "ipfs")
        await store.start()
        pool = TrainingPool(WORKERS)
        try:
            cid = await store.add(csv)
            dataset = await store.fetch(cid)
            jobs: list[Job] = []
            for model, params in cases(quick):
                spec = TaskSpec(
                    dataset_cid=cid,
                    target="y",
                    model=model,
                    kind="regression",
                    metric="r2",
                    params=tuple(params.items()),
                    holdout_fraction=0.2,
                    partition_fraction=0.5,
                    rounds=1,
                )
                task_id = hashlib.sha256(b"bench-verify-task-" + model.encode()).digest()
                for i in range(TRAINERS):
                    key = hashlib.sha256(b"bench-verify-trainer-%d" % i).digest()
                    jobs.append(Job(spec, task_id, key, str(dataset), str(root / "trainer-parsed")))
            print(
                f"dataset: {rows:,} rows x 20 features, {csv.stat().st_size / 1e6:.1f} MB CSV, "
                f"holdout 20%, partition 50%; {len(jobs)} results "
                f"({len(cases(quick))} tasks x {TRAINERS} trainers)"
            )

            # Trainer side. Parse once first so neither side pays the CSV parse per result.
            prepare(jobs[0].spec, jobs[0].task_id, SEED, jobs[0].key, 0, dataset,
                    Path(jobs[0].cache), 10**10)  # fmt: skip
            ctx = get_context("spawn")
            with ProcessPoolExecutor(WORKERS, mp_context=ctx, initializer=_init_worker) as ex:
                loop = asyncio.get_running_loop()
                trained = await asyncio.gather(
                    *(loop.run_in_executor(ex, train_and_time, j) for j in jobs)
                )
            cids = [await store.add_bytes(t.artifact) for t in trained]

            # Validator side: the node's path with a fresh parsed cache, warmed once.
            vcache = root / "verifier-parsed"
            t0 = time.perf_counter()
            prepare(jobs[0].spec, jobs[0].task_id, SEED, jobs[0].key, 0, dataset, vcache, 10**10)
            parse_s = time.perf_counter() - t0
            settings = TrainingSettings(enabled=True, max_job_seconds=600.0)
            checker = TimedChecker(Trainer(store, pool, settings, cache_dir=vcache))
            verifier = Verifier(store, checker, parallel=WORKERS)
            await pool.start()
            await asyncio.gather(*(pool.run("info", None, 120) for _ in range(WORKERS)))
            reqs = [
                Request(
                    ResultTx(j.task_id, SEED, 0, j.key, tr.metric, c, tr.rows, 1, 1_000),
                    j.spec.to_wire(),
                    SEED,
                    audit=False,
                )
                for j, tr, c in zip(jobs, trained, cids, strict=True)
            ]
            t0 = time.perf_counter()
            missing = await verifier.resolve(reqs)
            wall = time.perf_counter() - t0
            stats = verifier.stats
            if missing or stats.failed or stats.verified != len(jobs):
                raise SystemExit(f"verification did not pass: {missing} missing, {stats}")
            lat = [checker.seconds[(j.task_id, j.key)] for j in jobs]
            t0 = time.perf_counter()
            for _ in range(20):
                await pool.run("sleep", 0.0, 120)
            ipc = (time.perf_counter() - t0) / 20
            # Each verify fetches the dataset and the artifact: time those cache hits alone.
            t0 = time.perf_counter()
            for _ in range(5):
                await store.fetch(cid)
            fetch_ds = (time.perf_counter() - t0) / 5
            t0 = time.perf_counter()
            for c in cids[:10]:
                await store.fetch(c)
            fetch_art = (time.perf_counter() - t0) / 10
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=1):
                # Twice per estimator, keeping the second: the first pays imports.
                parts = []
                for k in range(len(cases(quick))):
                    breakdown(jobs[k * TRAINERS], trained[k * TRAINERS], vcache)
                    parts.append(breakdown(jobs[k * TRAINERS], trained[k * TRAINERS], vcache))
        finally:
            await pool.close()
            await store.close()

    n = len(jobs)
    ev = [t.eval_s for t in trained]
    print(f"(validator parses the CSV once: {parse_s:.2f} s, not counted below)")
    print(
        f"(per verify, outside the worker: empty pool job round trip {ipc * 1e3:.1f} ms; "
        f"store.fetch cache hit of the dataset {fetch_ds * 1e3:.1f} ms, "
        f"of an artifact {fetch_art * 1e3:.1f} ms)"
    )
    print(
        f"{'estimator':34} {'fit':>8} {'trainer eval':>13} {'verify':>9} {'ratio':>6} {'KB':>6}"
        "   verify steps in-process: holdout / safe load / metric"
    )
    for k, (model, _) in enumerate(cases(quick)):
        sl = slice(k * TRAINERS, (k + 1) * TRAINERS)
        e, v = statistics.mean(ev[sl]), statistics.mean(lat[sl])
        fit_s = statistics.mean(t.fit_s for t in trained[sl])
        kb = statistics.mean(len(t.artifact) for t in trained[sl]) / 1024
        print(
            f"{model:34} {fit_s * 1e3:6.0f}ms {e * 1e3:11.1f}ms {v * 1e3:7.1f}ms "
            f"{v / e:6.2f} {kb:6.0f}   " + " / ".join(f"{x * 1e3:.1f}" for x in parts[k]) + " ms"
        )
        figure(
            f"verify {model}: per result / trainer eval",
            f"{v / e:.2f}x",
            "",
            f"verify {v * 1e3:.1f} ms vs trainer eval {e * 1e3:.1f} ms",
            show=False,
        )
    mean_v, mean_e = statistics.mean(lat), statistics.mean(ev)
    print()
    figure(
        f"verify block of {n} results, wall (2 workers)",
        f"{wall:.2f} s",
        "",
        f"trainer evals of the same models: {sum(ev):.2f} s CPU",
    )
    figure(
        "verify time per result, block on 2 cores (wall / results)",
        f"{wall / n * 1e3:.1f} ms",
        "",
        f"trainer eval {mean_e * 1e3:.1f} ms per model",
    )
    figure(
        "  ratio to trainer eval",
        f"{wall / n / mean_e:.2f}x",
        "<= 1.5",
        "eval = worker.evaluate(): holdout rows+predict+r2, model in memory, 2 procs",
    )
    figure(
        "verify time per result, one worker (mean check)",
        f"{mean_v * 1e3:.1f} ms",
        "",
        "dataset cache hit + pool round trip + verify_result",
    )
    figure(
        "  ratio to trainer eval (stricter)",
        f"{mean_v / mean_e:.2f}x",
        "",
        "no parallelism credited",
    )
    figure("block throughput (results/s)", f"{n / wall:.1f}", "", f"{WORKERS} pool workers")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20,000 rows, smaller models")
    asyncio.run(run(ap.parse_args().quick))


if __name__ == "__main__":
    main()
