"""Verification of training results: "results are consensus rules".

:func:`verify_result` is deterministic given its inputs and runs inside a
worker process (:func:`verify_result_async` sends it to the pool). It raises
``ValidationError`` with:

* ``bad-result-dataset``: the task's dataset cannot be used (then no result
  for the task can be valid);
* ``bad-result-model``: the artifact is not a safe model of the task's
  estimator class with the task's parameters and the protocol random_state,
  breaks a cost budget (:mod:`p2pml.ml.budgets`), or raises anything while
  loading or predicting on the holdout;
* ``bad-result-rows``: the claimed train_rows is not the partition size;
* ``bad-result-metric``: the holdout metric differs from the claim beyond
  ``metrics.METRIC_REL_TOL``/``METRIC_ABS_TOL``;
* ``bad-result-audit`` (``audit=True``): re-training on the trainer's derived
  partition with the protocol random_state does not reproduce the artifact's
  holdout predictions.

These are verdicts: deterministic, the same on every node. Whatever depends
on this node instead (``MemoryError`` under the worker's address-space limit,
a timeout, a crash) is never turned into a verdict: it leaves the job as a
``TrainingError`` (an infrastructure failure, "pending" for the caller).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from p2pml.chain.taskspec import TaskSpec
from p2pml.errors import ModelArtifactError, TrainingError, ValidationError
from p2pml.ml.scheduling import Priority

#: Audit comparison of re-trained vs claimed predictions. Equal bits on one
#: machine (tests assert that); the tolerance only absorbs ulp-level BLAS/SIMD
#: differences between machines. A model fitted on other rows differs by far more.
AUDIT_REL_TOL: Final = 1e-9
AUDIT_ABS_TOL: Final = 1e-12


@dataclass(frozen=True)
class ResultClaim:
    """One result to check against its task: what its trainer claims, and
    what fixes the partition it had to use. The node's verifier builds it;
    the same object travels to the worker that checks it."""

    spec: TaskSpec
    task_id: bytes
    seed: bytes
    trainer_pubkey: bytes
    round: int
    artifact: bytes
    claimed_metric: float
    claimed_train_rows: int | None = None
    audit: bool = False


@dataclass(frozen=True)
class VerifyRequest:
    """A claim and where this node keeps what checking it needs."""

    claim: ResultClaim
    dataset_path: str
    cache_dir: str
    max_dataset_bytes: int
    cache_max_bytes: int | None = None  # the parsed cache's byte limit (None: default)


def verify_result(
    claim: ResultClaim,
    dataset_path: Path,
    *,
    cache_dir: Path | None = None,
    max_dataset_bytes: int = 512 * 1024**2,
    cache_max_bytes: int | None = None,
) -> None:
    """Check one result; return None if valid, raise ``ValidationError`` if not.

    CPU-heavy: call it in a worker (see :func:`verify_result_async`).
    """
    import numpy as np

    from p2pml.ml.artifact import load_model
    from p2pml.ml.budgets import TaskShape, check_model, schema_cap
    from p2pml.ml.metrics import compute_metric, metric_matches
    from p2pml.ml.partition import derive_random_state, partition_size

    spec, task_id, seed, round = claim.spec, claim.task_id, claim.seed, claim.round
    trainer_pubkey, artifact_bytes, audit = claim.trainer_pubkey, claim.artifact, claim.audit
    claimed_metric, claimed_train_rows = claim.claimed_metric, claim.claimed_train_rows
    spec.validate()
    cache = cache_dir if cache_dir is not None else Path(str(dataset_path) + ".parsed")
    from p2pml.ml.largetrain import large_dataset_of, verify_large

    try:
        large = large_dataset_of(spec, dataset_path, cache, max_dataset_bytes, cache_max_bytes)
    except TrainingError as e:
        raise ValidationError("bad-result-dataset", f"{e.reason}: {e.detail}") from None
    if large is not None:  # over MAX_CELLS: chunked, on disk (docs/tasks.md §2.1)
        verify_large(claim, large, _same)
        return
    try:
        hold = holdout_of(
            spec, task_id, seed, dataset_path, cache, max_dataset_bytes, cache_max_bytes
        )
    except TrainingError as e:
        raise ValidationError("bad-result-dataset", f"{e.reason}: {e.detail}") from None
    rows = partition_size(hold.n_rows, spec.partition_fraction)
    if claimed_train_rows is not None and claimed_train_rows != rows:
        raise ValidationError(
            "bad-result-rows", f"claimed {claimed_train_rows} rows, the partition has {rows}"
        )
    random_state = derive_random_state(seed, task_id, trainer_pubkey, round)
    n_classes = 0 if hold.classes is None else len(hold.classes)
    try:
        model = load_model(
            artifact_bytes,
            spec.model,
            spec.param_dict,
            random_state,
            n_features=hold.n_features,
            max_schema_bytes=schema_cap(spec.model, dict(spec.param_dict), n_classes),
        )
        shape = TaskShape(
            spec.model,
            model.get_params(deep=False),
            len(hold.y),
            rows,
            hold.n_features,
            hold.classes,
        )
        check_model(model, shape)
    except ModelArtifactError as e:
        raise ValidationError("bad-result-model", e.detail) from None
    except MemoryError:
        raise  # this node's memory limit, not a property of the result
    except Exception as e:  # deterministic: the same bytes fail the same way everywhere
        raise ValidationError("bad-result-model", f"cannot load: {type(e).__name__}") from None
    X_hold, y_hold = hold.X, hold.y
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = compute_metric(spec.metric, model, X_hold, y_hold)
            claimed_out = _outputs(spec, model, X_hold) if audit else None
    except MemoryError:
        raise
    except Exception as e:  # a loaded-but-broken model must not crash the validator
        raise ValidationError("bad-result-model", f"cannot predict: {type(e).__name__}") from None
    if not metric_matches(claimed_metric, value):
        raise ValidationError(
            "bad-result-metric", f"claimed {claimed_metric!r}, holdout {spec.metric} is {value!r}"
        )
    if not audit:
        return
    from p2pml.ml.worker import fit, prepare

    try:
        prep = prepare(
            spec,
            task_id,
            seed,
            trainer_pubkey,
            round,
            dataset_path,
            cache,
            max_dataset_bytes,
            cache_max_bytes,
        )
    except TrainingError as e:
        raise ValidationError("bad-result-dataset", f"{e.reason}: {e.detail}") from None
    try:
        again = fit(spec, prep)
    except TrainingError as e:
        raise ValidationError("bad-result-audit", f"re-training failed: {e}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        redone = _outputs(spec, again, X_hold)
    assert claimed_out is not None
    for a, b in zip(claimed_out, redone, strict=True):
        if not _same(np, a, b):
            raise ValidationError(
                "bad-result-audit",
                "re-training on the derived partition gives different holdout predictions",
            )


@dataclass(frozen=True)
class Holdout:
    """A task's holdout rows, copied out of the dataset (read-only)."""

    X: Any
    y: Any
    n_rows: int  # of the whole dataset
    n_features: int
    classes: Any | None  # sorted label codes of the whole dataset; None: regression


#: Holdouts kept per worker process. A block's results are mostly for a few
#: tasks, and gathering the rows out of the memory-mapped dataset cost more
#: than predicting on them for small models.
HOLDOUT_CACHE_SIZE: Final = 2
_holdouts: OrderedDict[tuple[Any, ...], Holdout] = OrderedDict()


def holdout_of(
    spec: TaskSpec,
    task_id: bytes,
    seed: bytes,
    dataset_path: Path,
    cache_dir: Path,
    max_dataset_bytes: int,
    cache_max_bytes: int | None = None,
) -> Holdout:
    """The task's holdout, from this process's cache or the parsed dataset.

    ``TrainingError`` if the dataset cannot be used for the task.
    """
    from p2pml.ml.estimators import CLASSIFICATION
    from p2pml.ml.partition import check_sizes, holdout_indices
    from p2pml.ml.worker import load_task_dataset

    # The CID fixes the bytes, so the key needs no file identity.
    key: tuple[Any, ...] = (
        *(spec.dataset_cid, spec.kind, spec.target, spec.features),
        *(seed, task_id, spec.holdout_fraction, spec.partition_fraction),
    )
    hit = _holdouts.get(key)
    if hit is not None:
        _holdouts.move_to_end(key)
        return hit
    data = load_task_dataset(spec, dataset_path, cache_dir, max_dataset_bytes, cache_max_bytes)
    try:
        check_sizes(data.n_rows, spec.holdout_fraction, spec.partition_fraction)
    except ValidationError as e:
        raise TrainingError(e.reason, e.detail) from None
    rows = holdout_indices(seed, task_id, data.n_rows, spec.holdout_fraction)
    X, y = data.X[rows], data.y[rows]
    X.setflags(write=False)
    y.setflags(write=False)
    classes = None
    if spec.kind == CLASSIFICATION:
        import numpy as np

        classes = np.unique(data.y)
    hold = Holdout(X, y, data.n_rows, int(data.X.shape[1]), classes)
    _holdouts[key] = hold
    while len(_holdouts) > HOLDOUT_CACHE_SIZE:
        _holdouts.popitem(last=False)
    return hold


def _outputs(spec: TaskSpec, model: Any, X: Any) -> list[Any]:
    out = [model.predict(X)]
    if spec.metric == "log_loss":
        out.append(model.predict_proba(X))
    return out


def _same(np: Any, a: Any, b: Any) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if np.array_equal(a, b):
        return True
    if a.dtype.kind != "f":
        return False
    return bool(np.all(np.abs(a - b) <= AUDIT_ABS_TOL + AUDIT_REL_TOL * np.abs(b)))


def verify_job(req: VerifyRequest) -> None:
    """Pool entry point."""
    verify_result(
        req.claim,
        Path(req.dataset_path),
        cache_dir=Path(req.cache_dir),
        max_dataset_bytes=req.max_dataset_bytes,
        cache_max_bytes=req.cache_max_bytes,
    )


async def verify_result_async(
    pool: Any,
    claim: ResultClaim,
    dataset_path: Path,
    *,
    cache_dir: Path | None = None,
    max_dataset_bytes: int = 512 * 1024**2,
    cache_max_bytes: int | None = None,
    timeout: float = 600.0,
    priority: Priority = Priority.BLOCK,
) -> None:
    """:func:`verify_result` in the training pool (``p2pml.ml.pool.TrainingPool``),
    waiting for a worker in ``priority``'s class.

    Raises ``ValidationError`` for an invalid result, ``TrainingError``
    ("job-timeout", "worker-crashed") if verification itself could not finish.
    """
    claim = dataclasses.replace(claim, claimed_metric=float(claim.claimed_metric))
    cache = cache_dir if cache_dir is not None else Path(str(dataset_path) + ".parsed")
    req = VerifyRequest(claim, str(dataset_path), str(cache), max_dataset_bytes, cache_max_bytes)
    await pool.run("verify", req, timeout, priority)
