#!/usr/bin/env python
"""Benchmark: a batch of training jobs on a 2-worker Dask cluster vs the local pool.

A synthetic regression CSV (20,000 rows x 20 features; ``--quick``: 5,000)
sits in a local content-addressed store, as after a dataset fetch. The same
batch of 20 training rounds (random forest, each on its own chain-seeded
partition) goes through ``Trainer.train_round`` twice, side by side in one
run: on the local pool of 2 worker processes, and on a ``LocalCluster`` of 2
Dask worker processes (one thread each, everything on 127.0.0.1) through
``DaskPool``. Both executors are started and warmed (one round each, the
dataset parsed into each worker's cache) before timing, as in a running node.
Each batch runs ``--repeat`` times, alternating executors; the best time of
each counts (least disturbed by other load on the machine).

Prints jobs/s of each, the ratio Dask/local (target >= 0.9: the engine costs
little), jobs/s per Dask worker (the projected linear speed-up: N workers on N
free cores give about N times that), and checks that both executors produced
the same metrics round for round.

    python scripts/bench_dask.py [--quick] [--jobs 20] [--repeat 2]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/ is not a package

from bench_training import _Store, make_csv
from benchlib import figure

from p2pml.chain.taskspec import TaskSpec
from p2pml.config import TrainingSettings
from p2pml.ml.dask_pool import DaskPool
from p2pml.ml.jobpool import JobPool
from p2pml.ml.pool import TrainingPool
from p2pml.ml.trainer import Trainer
from p2pml.ml.worker import THREAD_ENV

SEED = hashlib.sha256(b"bench-dask-block").digest()
TASK = hashlib.sha256(b"bench-dask-task").digest()
WORKERS = 2


def trainer_key(i: int) -> bytes:
    return hashlib.sha256(b"bench-dask-trainer-%d" % i).digest()


async def batch(trainer: Trainer, spec: TaskSpec, jobs: int) -> tuple[float, list[float]]:
    t0 = time.perf_counter()
    outs = await asyncio.gather(
        *(trainer.train_round(spec, TASK, SEED, trainer_key(i), 0) for i in range(jobs))
    )
    return time.perf_counter() - t0, [o.metric for o in outs]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    rows = 5_000 if args.quick else 20_000
    repeat = 1 if args.quick else args.repeat

    from distributed import LocalCluster

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "store").mkdir()
        csv = root / "data.csv"
        make_csv(csv, rows)
        store = _Store(root / "store")
        cid = await store.add_bytes(csv.read_bytes())
        spec = TaskSpec(
            dataset_cid=cid,
            target="y",
            model="random_forest_regressor",
            kind="regression",
            metric="r2",
            params=(("n_estimators", 10), ("max_depth", 8)),
            holdout_fraction=0.2,
            partition_fraction=0.5,
            rounds=1,
        )
        async with LocalCluster(
            host="127.0.0.1",
            processes=True,
            n_workers=WORKERS,
            threads_per_worker=1,
            dashboard_address="127.0.0.1:0",
            asynchronous=True,
            env=THREAD_ENV,
        ) as cluster:
            settings = TrainingSettings(
                enabled=True,
                workers=WORKERS,
                max_concurrent_jobs=args.jobs,
                max_job_seconds=600.0,
                executor="dask",
                dask_scheduler=cluster.scheduler_address,
            )
            local = TrainingPool(WORKERS)
            await local.start()
            dask = DaskPool(settings, fallback=TrainingPool(1))
            if not await dask.connect():
                raise SystemExit(f"cannot reach the cluster: {dask.reason}")
            pools: dict[str, JobPool] = {"local": local, "dask": dask}
            trainers = {
                name: Trainer(store, p, settings, root / f"parsed-{name}")  # type: ignore[arg-type]
                for name, p in pools.items()
            }
            # Warm: a round per worker parses the CSV into each worker's cache.
            for t in trainers.values():
                await batch(t, spec, WORKERS)
            best: dict[str, float] = {}
            metrics: dict[str, list[float]] = {}
            for _ in range(repeat):
                for name, t in trainers.items():
                    took, metrics[name] = await batch(t, spec, args.jobs)
                    best[name] = min(best.get(name, took), took)
            assert dask.fallbacks == 0 and dask.jobs_on_local == 0, dask.describe()
            await dask.close()
            await local.close()

    rate = {name: args.jobs / s for name, s in best.items()}
    print(f"{args.jobs} training jobs ({rows} rows, random forest), {WORKERS} workers each:")
    figure(f"local pool: {args.jobs} jobs", f"{best['local']:.2f} s")
    figure(f"Dask cluster: {args.jobs} jobs", f"{best['dask']:.2f} s")
    figure("local pool throughput", f"{rate['local']:.2f} jobs/s")
    figure("Dask throughput", f"{rate['dask']:.2f} jobs/s", baseline=f"{rate['local']:.2f} jobs/s")
    figure("Dask / local throughput", f"{rate['dask'] / rate['local']:.2f}x", ">= 0.9")
    figure(
        "jobs/s per Dask worker (linear projection: x N workers)",
        f"{rate['dask'] / WORKERS:.2f} jobs/s",
    )
    same = metrics["local"] == metrics["dask"]
    figure("same metrics on both executors", "yes" if same else "NO", "yes")
    if not same:
        raise SystemExit("the executors disagree")


if __name__ == "__main__":
    asyncio.run(main())
