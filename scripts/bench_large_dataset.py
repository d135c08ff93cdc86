#!/usr/bin/env python
"""Benchmark: a dataset larger than memory, trained with sgd_classifier (issue 17).

Generates a CSV (2 GB by default; ``--size``; ``--quick`` is 700M, about the
least whose 50 % partition is over MAX_CELLS) of 32 float features and a text label, then trains
``sgd_classifier`` on a 50 % partition through a real training worker (``TrainingPool``, the
node's pool, ``RLIMIT_AS`` at ``--memory-mb``): chunked parse into the parsed
cache, holdout/partition masks, one ``partial_fit`` pass in CHUNK_ROWS
batches, holdout metric, skops artifact. "cold" is the first round (parses
the CSV), "warm" a later round (rows read back from the parsed cache).

Printed side by side:

* peak RSS of this process (the asyncio side that owns the pool, as the node
  does) plus the worker's (``VmHWM``; the sum of the two peaks bounds the
  peak of the sum): target <= 500 MB;
* time of the cold job vs a bare chunked ``partial_fit`` loop over the same
  rows (``pandas.read_csv(chunksize=CHUNK_ROWS)``, keep the partition rows,
  ``partial_fit``), single-threaded like the worker: target <= 1.3x; wall
  time, and CPU time (worker vs this process), which a loaded machine skews
  less.

    python scripts/bench_large_dataset.py [--size 2G] [--quick] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/ is not a package

from benchlib import figure

from p2pml.chain.taskspec import TaskSpec
from p2pml.ipfs.cid import cid_of_bytes
from p2pml.ml.largedata import CHUNK_ROWS
from p2pml.ml.pool import TrainingPool
from p2pml.ml.worker import TrainRequest

SEED = hashlib.sha256(b"bench-block").digest()
TASK = hashlib.sha256(b"bench-large-task").digest()
KEY = hashlib.sha256(b"bench-trainer").digest()
FEATURES = 32
MB = 1_000_000


def parse_size(text: str) -> int:
    units = {"K": 10**3, "M": 10**6, "G": 10**9}
    text = text.strip().upper().rstrip("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def generate(path: Path, size: int) -> int:
    """Write about ``size`` bytes of CSV in bounded memory; returns the rows."""
    rng = np.random.default_rng(17)
    w = rng.normal(size=FEATURES)
    blocks = []
    for _ in range(8):  # distinct 8192-row blocks, cycled
        X = rng.normal(size=(8192, FEATURES))
        label = np.where(X @ w + 0.5 * rng.normal(size=8192) > 0, "yes", "no")
        lines = (
            ",".join(f"{v:.6f}" for v in row) + f",{lab}\n"
            for row, lab in zip(X, label, strict=True)
        )
        blocks.append("".join(lines).encode())
    rows = 0
    with path.open("wb") as f:
        f.write((",".join(f"f{i}" for i in range(FEATURES)) + ",label\n").encode())
        written = 0
        i = 0
        while written < size:
            f.write(blocks[i % len(blocks)])
            written += len(blocks[i % len(blocks)])
            rows += 8192
            i += 1
    return rows


def hwm_mb(pid: int | str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / MB
    raise RuntimeError("no VmHWM")


def user_sys() -> tuple[float, float]:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def bare_loop(
    path: Path, mask: np.ndarray, classes: np.ndarray, rs: int
) -> tuple[float, tuple[float, float]]:
    """The baseline: chunked read, keep the partition rows, partial_fit.
    (wall, (user CPU, system CPU)) seconds."""
    import pandas as pd
    from sklearn.linear_model import SGDClassifier
    from threadpoolctl import threadpool_limits

    feats = [f"f{i}" for i in range(FEATURES)]
    lookup = {"no": 0, "yes": 1}
    with threadpool_limits(limits=1):
        t0, c0 = time.perf_counter(), user_sys()
        model = SGDClassifier(loss="log_loss", random_state=rs)
        a = 0
        buf_x: list[np.ndarray] = []
        buf_y: list[np.ndarray] = []
        held = 0
        for df in pd.read_csv(path, chunksize=CHUNK_ROWS):
            keep = mask[a : a + len(df)]
            a += len(df)
            buf_x.append(df.loc[keep, feats].to_numpy(dtype=np.float64))
            buf_y.append(df.loc[keep, "label"].map(lookup).to_numpy(dtype=np.int64))
            held += int(keep.sum())
            while held >= CHUNK_ROWS:
                X, y = np.concatenate(buf_x), np.concatenate(buf_y)
                model.partial_fit(X[:CHUNK_ROWS], y[:CHUNK_ROWS], classes=classes)
                buf_x, buf_y, held = [X[CHUNK_ROWS:]], [y[CHUNK_ROWS:]], held - CHUNK_ROWS
        if held:
            model.partial_fit(np.concatenate(buf_x), np.concatenate(buf_y), classes=classes)
        c1 = user_sys()
        return time.perf_counter() - t0, (c1[0] - c0[0], c1[1] - c0[1])


async def run(args: argparse.Namespace) -> None:
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="p2pml-large-"))
    root.mkdir(parents=True, exist_ok=True)
    csv = root / "large.csv"
    try:
        t0 = time.perf_counter()
        rows = generate(csv, args.size)
        size = csv.stat().st_size
        print(
            f"dataset: {size / MB:,.0f} MB, {rows:,} rows x {FEATURES} features "
            f"(generated in {time.perf_counter() - t0:.1f} s); worker limit {args.memory_mb} MiB",
            flush=True,
        )
        spec = TaskSpec(
            dataset_cid=cid_of_bytes(b"bench-large:%d" % size),  # a cache key here
            target="label",
            model="sgd_classifier",
            kind="classification",
            metric="accuracy",
            params=(("loss", "log_loss"),),
            holdout_fraction=0.2,
            partition_fraction=0.5,
        )
        pool = TrainingPool(1, memory_mb=args.memory_mb)
        await pool.start()
        try:
            await pool.run("info", None, 60)  # warm: imports done, as in a running node
            (pid,) = pool.pids
            times = []
            cpus = []
            for rnd in (0, 1):
                req = TrainRequest(
                    spec, TASK, SEED, KEY, rnd, str(csv), str(root / "parsed"), 1 << 40, 1 << 40
                )
                c0 = (await pool.run("info", None, 60))["cpu_user_sys"]
                t0 = time.perf_counter()
                result = await pool.run("train", req, 3600)
                times.append(time.perf_counter() - t0)
                c1 = (await pool.run("info", None, 60))["cpu_user_sys"]
                cpus.append((c1[0] - c0[0], c1[1] - c0[1]))
                print(
                    f"round {rnd} ({'cold' if rnd == 0 else 'warm'}): {times[-1]:.1f} s "
                    f"(CPU {sum(cpus[-1]):.1f} s: user {cpus[-1][0]:.1f} "
                    f"+ system {cpus[-1][1]:.1f}), "
                    f"{result.train_rows:,} rows, accuracy {result.metric:.4f}",
                    flush=True,
                )
            worker_mb = hwm_mb(pid)
        finally:
            await pool.close()
        parent_mb = hwm_mb("self")
        from p2pml.ml.partition import derive_random_state
        from p2pml.ml.rowselect import holdout_mask, partition_mask

        hold = holdout_mask(SEED, TASK, rows, 0.2)
        mask = partition_mask(SEED, TASK, KEY, 0, rows, hold, 0.2, 0.5)
        rs = derive_random_state(SEED, TASK, KEY, 0)
        bare, (bare_user, bare_sys) = bare_loop(csv, mask, np.array([0, 1]), rs)
        bare_cpu = bare_user + bare_sys
        cold_cpu = sum(cpus[0])
        load = os.getloadavg()[0]
        print(
            f"bare loop: {bare:.1f} s (CPU {bare_cpu:.1f} s: user {bare_user:.1f} + "
            f"system {bare_sys:.1f}); load average {load:.2f} on {os.cpu_count()} CPUs",
            flush=True,
        )
        total = parent_mb + worker_mb
        print()
        figure(
            "large dataset: peak RSS node+worker",
            f"{total:,.0f} MB",
            "<= 500 MB",
            f"node {parent_mb:,.0f} MB + worker {worker_mb:,.0f} MB; CSV {size / MB:,.0f} MB",
        )
        figure(
            "large dataset: cold job vs bare partial_fit loop",
            f"{times[0] / bare:.2f}x",
            "<= 1.3x",
            f"job {times[0]:.1f} s, bare loop {bare:.1f} s",
            measured=times[0] / bare,
        )
        figure(
            "large dataset: cold job vs bare loop, CPU time",
            f"{cold_cpu / bare_cpu:.2f}x",
            "<= 1.3x",
            f"job {cold_cpu:.1f} s, bare loop {bare_cpu:.1f} s",
            measured=cold_cpu / bare_cpu,
        )
        figure(
            "large dataset: cold job vs bare loop, user CPU",
            f"{cpus[0][0] / bare_user:.2f}x",
            "",
            f"job {cpus[0][0]:.1f} s, bare loop {bare_user:.1f} s "
            "(system time is mostly the kernel growing the page cache for the parsed cache)",
            measured=cpus[0][0] / bare_user,
        )
        figure(
            "large dataset: warm job vs bare partial_fit loop",
            f"{times[1] / bare:.2f}x",
            "<= 1.3x",
            f"job {times[1]:.1f} s (rows from the parsed cache), bare loop {bare:.1f} s",
            measured=times[1] / bare,
        )
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=parse_size, default=2 * 10**9, help="CSV bytes (2G)")
    ap.add_argument("--quick", action="store_true", help="--size 700M")
    ap.add_argument("--memory-mb", type=int, default=1024, help="worker RLIMIT_AS (MiB)")
    ap.add_argument("--dir", help="work directory (kept); default a temporary one")
    args = ap.parse_args()
    if args.quick:
        args.size = 700 * MB
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
