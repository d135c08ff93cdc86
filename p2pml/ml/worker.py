"""Code that runs inside training worker processes.

The job functions here are called by :mod:`p2pml.ml.pool`'s child loop, never
on the event loop: CSV parsing, fitting, evaluation and (de)serialising models
all happen here. Heavy libraries are imported inside functions so the parent
can import the request/response types cheaply.

Determinism: one thread per process (see ``THREAD_ENV`` and
:func:`limit_threads`), rows in ascending index order, and the protocol
``random_state`` make two runs of the same (task, trainer, round) produce
bitwise-identical predictions.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from p2pml.chain.taskspec import TaskSpec
from p2pml.errors import TrainingError, ValidationError

#: Environment of every worker process, in place before the child imports
#: numpy (OpenBLAS/MKL/OpenMP read these once, at library load).
THREAD_ENV: Final = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "BLIS_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}


@dataclass(frozen=True)
class TrainRequest:
    spec: TaskSpec
    task_id: bytes
    seed: bytes
    trainer_pubkey: bytes
    round: int
    dataset_path: str
    cache_dir: str
    max_dataset_bytes: int
    cache_max_bytes: int = 2 * 1024**3  # the parsed cache's byte limit


@dataclass(frozen=True)
class TrainResult:
    artifact: bytes
    metric: float
    train_rows: int
    train_ms: int


@dataclass(frozen=True)
class Prepared:
    """A dataset with the rows a (task, trainer, round) must use."""

    data: Any  # p2pml.ml.dataset.Dataset
    holdout: Any  # int64 row indices, ascending
    partition: Any  # int64 row indices, ascending
    random_state: int


def limit_threads() -> Any:
    """Pin BLAS/OpenMP pools to one thread at runtime too (keep the returned object)."""
    os.environ.update(THREAD_ENV)
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def load_task_dataset(
    spec: TaskSpec,
    dataset_path: Path,
    cache_dir: Path,
    max_dataset_bytes: int,
    cache_max_bytes: int | None = None,
) -> Any:
    """The task's dataset (``p2pml.ml.dataset.Dataset``), parsed or from the cache."""
    from p2pml.ml.dataset import PARSED_CACHE_MAX_BYTES, load_dataset

    return load_dataset(
        dataset_path,
        cache_dir,
        spec.dataset_cid,
        spec.kind,
        spec.target,
        spec.features,
        max_dataset_bytes,
        PARSED_CACHE_MAX_BYTES if cache_max_bytes is None else cache_max_bytes,
    )


def prepare(
    spec: TaskSpec,
    task_id: bytes,
    seed: bytes,
    trainer_pubkey: bytes,
    round: int,
    dataset_path: Path,
    cache_dir: Path,
    max_dataset_bytes: int,
    cache_max_bytes: int | None = None,
) -> Prepared:
    """Parse (or reuse) the dataset and derive holdout, partition, random_state."""
    from p2pml.ml.partition import derive_random_state, holdout_indices, partition_indices

    data = load_task_dataset(spec, dataset_path, cache_dir, max_dataset_bytes, cache_max_bytes)
    try:
        part = partition_indices(
            seed,
            task_id,
            trainer_pubkey,
            round,
            data.n_rows,
            spec.holdout_fraction,
            spec.partition_fraction,
        )
    except ValidationError as e:
        raise TrainingError(e.reason, e.detail) from None
    hold = holdout_indices(seed, task_id, data.n_rows, spec.holdout_fraction)
    rs = derive_random_state(seed, task_id, trainer_pubkey, round)
    return Prepared(data, hold, part, rs)


def fit(spec: TaskSpec, prep: Prepared) -> Any:
    """Fit the task's estimator on the partition rows (ascending index order)."""
    from p2pml.ml.estimators import build_estimator

    model = build_estimator(spec.model, spec.param_dict, prep.random_state)
    X = prep.data.X[prep.partition]
    y = prep.data.y[prep.partition]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning etc.: not failures
            model.fit(X, y)
    except (ValueError, ArithmeticError) as e:
        raise TrainingError("fit-failed", f"{type(e).__name__}: {e}") from None
    return model


def evaluate(spec: TaskSpec, model: Any, prep: Prepared) -> float:
    """The task's metric of ``model`` on the holdout rows."""
    import math

    from p2pml.ml.metrics import compute_metric

    X = prep.data.X[prep.holdout]
    y = prep.data.y[prep.holdout]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = compute_metric(spec.metric, model, X, y)
    except (ValueError, ArithmeticError) as e:
        raise TrainingError("metric-undefined", f"{type(e).__name__}: {e}") from None
    if not math.isfinite(value):
        raise TrainingError("metric-undefined", f"{spec.metric} is {value} on the holdout")
    return value


def train_job(req: TrainRequest) -> TrainResult:
    """One training round: parse/partition, fit, evaluate, serialise."""
    from p2pml.ml.artifact import dump_model
    from p2pml.ml.coldtrain import train_cold
    from p2pml.ml.largetrain import large_dataset_of, train_large

    cold = train_cold(req)  # a large dataset's first round: trained while parsed
    if cold is not None:
        return TrainResult(*cold)
    large = large_dataset_of(
        req.spec,
        Path(req.dataset_path),
        Path(req.cache_dir),
        req.max_dataset_bytes,
        req.cache_max_bytes,
    )
    if large is not None:  # over MAX_CELLS: chunked, on disk (docs/tasks.md §2.1)
        return TrainResult(*train_large(req, large))
    prep = prepare(
        req.spec,
        req.task_id,
        req.seed,
        req.trainer_pubkey,
        req.round,
        Path(req.dataset_path),
        Path(req.cache_dir),
        req.max_dataset_bytes,
        req.cache_max_bytes,
    )
    t0 = time.perf_counter()
    model = fit(req.spec, prep)
    train_ms = round((time.perf_counter() - t0) * 1000)
    metric = evaluate(req.spec, model, prep)
    return TrainResult(dump_model(model), metric, len(prep.partition), train_ms)


def info_job(_: object) -> dict[str, Any]:
    """Diagnostics: thread settings as the worker sees them (used by tests/API)."""
    from threadpoolctl import threadpool_info

    exec_env: dict[str, str] = {}
    with contextlib.suppress(OSError):  # Linux: the environment the process was exec'd with
        for item in Path("/proc/self/environ").read_bytes().split(b"\0"):
            key, _, value = item.decode(errors="replace").partition("=")
            if key in THREAD_ENV:
                exec_env[key] = value
    import resource

    return {
        "pid": os.getpid(),
        "rlimit_as": resource.getrlimit(resource.RLIMIT_AS),
        "rlimit_cpu": resource.getrlimit(resource.RLIMIT_CPU),
        "cpu_seconds": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]),
        "cpu_user_sys": tuple(resource.getrusage(resource.RUSAGE_SELF)[:2]),
        "exec_env": exec_env,
        "env": {k: os.environ.get(k) for k in THREAD_ENV},
        "pools": [(i.get("internal_api"), i.get("num_threads")) for i in threadpool_info()],
    }


def alloc_job(mib: int) -> int:
    """Touch ``mib`` MiB of memory: exercises the memory limit without any data."""
    block = bytearray(mib * 1024 * 1024)
    block[::4096] = b"x" * len(block[::4096])
    return len(block)


def sleep_job(seconds: float) -> float:
    """Busy-wait ``seconds`` of CPU: exercises time limits without any data."""
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
    return seconds
