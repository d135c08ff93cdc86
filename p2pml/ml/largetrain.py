"""Training and verification on large datasets (docs/tasks.md §2.1).

Runs in worker processes. The dataset stays on disk (:mod:`p2pml.ml.largedata`);
holdout and partition are row masks (:mod:`p2pml.ml.rowselect`). How a
partition is trained is a protocol rule, a function of the task and the
dataset only, so trainer and verifier take the same path:

* partition rows x features <= ``MAX_CELLS``: the rows are gathered in memory
  and the estimator is fitted as on a small dataset (``fit``);
* else, an estimator that learns incrementally (:func:`learns_incrementally`)
  makes one pass of ``partial_fit`` over the partition rows in ascending
  order, in batches of ``CHUNK_ROWS`` rows (classifiers get the dataset's
  label codes as ``classes``);
* else the round is refused: ``partition-too-large``.

Holdout outputs are predicted a batch of ``CHUNK_ROWS`` holdout rows at a time
and the metric is computed on the concatenated outputs.

Worker memory on the ``partial_fit`` path: the idle worker, plus ~10 bytes a
dataset row (row keys and masks), ~8 bytes a holdout row (labels, predictions;
x classes for log_loss), and a few times one batch (CHUNK_ROWS x features x 8
bytes) and the model; never the partition or the file.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from p2pml.chain.taskspec import TaskSpec
from p2pml.errors import ModelArtifactError, TrainingError, ValidationError
from p2pml.ml.dataset import MAX_CELLS, PARSED_CACHE_MAX_BYTES, cache_key
from p2pml.ml.estimators import CLASSIFICATION
from p2pml.ml.largedata import CHUNK_ROWS as CHUNK_ROWS  # re-exported: partial_fit batches
from p2pml.ml.largedata import LargeDataset, Mask, is_large, load_large

#: Estimators with ``partial_fit`` (MLPs unless their solver is lbfgs).
INCREMENTAL: Final = frozenset(
    {"sgd_classifier", "sgd_regressor", "gaussian_nb", "mlp_classifier", "mlp_regressor"}
)


def learns_incrementally(spec: TaskSpec) -> bool:
    if spec.model not in INCREMENTAL:
        return False
    return not (spec.model.startswith("mlp") and spec.param_dict.get("solver") == "lbfgs")


def train_mode(spec: TaskSpec, train_rows: int, n_features: int) -> str:
    """``"fit"`` or ``"partial_fit"``; ``TrainingError("partition-too-large")``."""
    cells = train_rows * n_features
    if cells <= MAX_CELLS:
        return "fit"
    if learns_incrementally(spec):
        return "partial_fit"
    raise TrainingError(
        "partition-too-large",
        f"{train_rows} rows x {n_features} features = {cells} cells > {MAX_CELLS}, "
        f"and {spec.model} cannot learn incrementally",
    )


def large_dataset_of(
    spec: TaskSpec,
    dataset_path: Path,
    cache_dir: Path,
    max_dataset_bytes: int,
    cache_max_bytes: int | None = None,
) -> LargeDataset | None:
    """The task's dataset if it is large (parsed or from the cache), else None."""
    small = cache_dir / cache_key(spec.dataset_cid, spec.kind, spec.target, spec.features)
    if (small / "meta.json").exists():
        return None
    args = (spec.dataset_cid, spec.kind, spec.target, spec.features, max_dataset_bytes)
    limit = PARSED_CACHE_MAX_BYTES if cache_max_bytes is None else cache_max_bytes
    from p2pml.ml.largedata import _read_meta, large_cache_key

    try:
        return _read_meta(cache_dir / large_cache_key(*args[:4]))
    except (OSError, ValueError, KeyError):
        pass
    if not is_large(dataset_path):
        return None
    return load_large(dataset_path, cache_dir, *args, limit)


@dataclass(frozen=True)
class LargePrepared:
    data: LargeDataset
    holdout: Mask
    partition: Mask
    random_state: int


def holdout_of_large(spec: TaskSpec, task_id: bytes, seed: bytes, data: LargeDataset) -> Mask:
    from p2pml.ml.partition import check_sizes
    from p2pml.ml.rowselect import holdout_mask

    try:
        check_sizes(data.n_rows, spec.holdout_fraction, spec.partition_fraction)
    except ValidationError as e:
        raise TrainingError(e.reason, e.detail) from None
    return holdout_mask(seed, task_id, data.n_rows, spec.holdout_fraction)


def prepare_large(
    spec: TaskSpec,
    task_id: bytes,
    seed: bytes,
    trainer_pubkey: bytes,
    round: int,
    data: LargeDataset,
    holdout: Mask | None = None,
) -> LargePrepared:
    from p2pml.ml.partition import derive_random_state
    from p2pml.ml.rowselect import partition_mask

    hold = holdout if holdout is not None else holdout_of_large(spec, task_id, seed, data)
    part = partition_mask(
        seed,
        task_id,
        trainer_pubkey,
        round,
        data.n_rows,
        hold,
        spec.holdout_fraction,
        spec.partition_fraction,
    )
    rs = derive_random_state(seed, task_id, trainer_pubkey, round)
    return LargePrepared(data, hold, part, rs)


def fit_large(spec: TaskSpec, prep: LargePrepared) -> Any:
    """Fit the task's estimator on the partition by the protocol's path."""
    from p2pml.ml.estimators import build_estimator

    data = prep.data
    mode = train_mode(spec, int(prep.partition.sum()), data.n_features)
    model = build_estimator(spec.model, spec.param_dict, prep.random_state)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning etc.: not failures
            if mode == "fit":
                X, y = data.gather(prep.partition)
                model.fit(X, y)
                return model
            extra: dict[str, Any] = {}
            if spec.kind == CLASSIFICATION:
                extra["classes"] = np.asarray(data.classes, dtype=np.int64)
            for X, y in data.batches(prep.partition, CHUNK_ROWS):
                model.partial_fit(X, y, **extra)
    except (ValueError, ArithmeticError) as e:
        raise TrainingError("fit-failed", f"{type(e).__name__}: {e}") from None
    return model


def holdout_outputs(
    spec: TaskSpec, model: Any, data: LargeDataset, holdout: Mask, audit: bool = False
) -> tuple[Any, list[Any]]:
    """(holdout labels, [predictions, probabilities if the metric or an audit needs them])."""
    from p2pml.ml.metrics import get_metric

    want_proba = get_metric(spec.metric).needs_proba
    ys: list[Any] = []
    preds: list[Any] = []
    probas: list[Any] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for X, y in data.batches(holdout, CHUNK_ROWS):
            ys.append(y)
            if not want_proba or audit:
                preds.append(model.predict(X))
            if want_proba:
                probas.append(model.predict_proba(X))
    out = [np.concatenate(preds)] if preds else []
    if probas:
        out.append(np.concatenate(probas))
    return np.concatenate(ys), out


def metric_large(spec: TaskSpec, model: Any, y: Any, outputs: list[Any]) -> float:
    from p2pml.ml.metrics import get_metric, metric_of_outputs

    if get_metric(spec.metric).needs_proba:
        return metric_of_outputs(spec.metric, y, None, outputs[-1], model.classes_)
    return metric_of_outputs(spec.metric, y, outputs[0], None, None)


def train_large(req: Any, data: LargeDataset) -> tuple[bytes, float, int, int]:
    """``worker.train_job`` on a large dataset (``req`` is a ``TrainRequest``):
    (artifact, metric, train rows, train ms)."""
    spec = req.spec
    prep = prepare_large(spec, req.task_id, req.seed, req.trainer_pubkey, req.round, data)
    t0 = time.perf_counter()
    model = fit_large(spec, prep)
    train_ms = round((time.perf_counter() - t0) * 1000)
    return evaluate_large(spec, model, data, prep.holdout, int(prep.partition.sum()), train_ms)


def evaluate_large(
    spec: TaskSpec, model: Any, data: LargeDataset, holdout: Mask, rows: int, train_ms: int
) -> tuple[bytes, float, int, int]:
    """The holdout metric of a fitted model and its artifact: ``train_large``'s result."""
    from p2pml.ml.artifact import dump_model

    try:
        y, outputs = holdout_outputs(spec, model, data, holdout)
        value = metric_large(spec, model, y, outputs)
    except (ValueError, ArithmeticError) as e:
        raise TrainingError("metric-undefined", f"{type(e).__name__}: {e}") from None
    if not math.isfinite(value):
        raise TrainingError("metric-undefined", f"{spec.metric} is {value} on the holdout")
    return dump_model(model), value, rows, train_ms


def verify_large(claim: Any, data: LargeDataset, same: Callable[[Any, Any, Any], bool]) -> None:
    """``verify.verify_result`` on a large dataset (``claim`` is a ``ResultClaim``);
    the same verdicts and reasons. ``same(np, a, b)``: the audit's comparison."""
    from p2pml.ml.artifact import load_model
    from p2pml.ml.budgets import TaskShape, check_model, schema_cap
    from p2pml.ml.metrics import metric_matches
    from p2pml.ml.partition import derive_random_state, partition_size

    spec = claim.spec
    try:
        hold = holdout_of_large(spec, claim.task_id, claim.seed, data)
    except TrainingError as e:
        raise ValidationError("bad-result-dataset", f"{e.reason}: {e.detail}") from None
    rows = partition_size(data.n_rows, spec.partition_fraction)
    if claim.claimed_train_rows is not None and claim.claimed_train_rows != rows:
        raise ValidationError(
            "bad-result-rows", f"claimed {claim.claimed_train_rows} rows, the partition has {rows}"
        )
    try:
        train_mode(spec, rows, data.n_features)
    except TrainingError as e:  # no honest trainer could produce this result
        raise ValidationError("bad-result-dataset", f"{e.reason}: {e.detail}") from None
    random_state = derive_random_state(claim.seed, claim.task_id, claim.trainer_pubkey, claim.round)
    classes = np.asarray(data.classes, dtype=np.int64) if spec.kind == CLASSIFICATION else None
    n_classes = 0 if classes is None else len(classes)
    try:
        model = load_model(
            claim.artifact,
            spec.model,
            spec.param_dict,
            random_state,
            n_features=data.n_features,
            max_schema_bytes=schema_cap(spec.model, dict(spec.param_dict), n_classes),
        )
        shape = TaskShape(
            spec.model,
            model.get_params(deep=False),
            int(hold.sum()),
            rows,
            data.n_features,
            classes,
        )
        check_model(model, shape)
    except ModelArtifactError as e:
        raise ValidationError("bad-result-model", e.detail) from None
    except MemoryError:
        raise
    except Exception as e:
        raise ValidationError("bad-result-model", f"cannot load: {type(e).__name__}") from None
    try:
        y, outputs = holdout_outputs(spec, model, data, hold, audit=claim.audit)
        value = metric_large(spec, model, y, outputs)
    except MemoryError:
        raise
    except OSError:
        raise  # this node's disk, not the result
    except Exception as e:
        raise ValidationError("bad-result-model", f"cannot predict: {type(e).__name__}") from None
    if not metric_matches(claim.claimed_metric, value):
        raise ValidationError(
            "bad-result-metric",
            f"claimed {claim.claimed_metric!r}, holdout {spec.metric} is {value!r}",
        )
    if not claim.audit:
        return
    prep = prepare_large(
        spec, claim.task_id, claim.seed, claim.trainer_pubkey, claim.round, data, hold
    )
    try:
        again = fit_large(spec, prep)
    except TrainingError as e:
        raise ValidationError("bad-result-audit", f"re-training failed: {e}") from None
    _, redone = holdout_outputs(spec, again, data, hold, audit=True)
    for a, b in zip(outputs, redone, strict=True):
        if not same(np, a, b):
            raise ValidationError(
                "bad-result-audit",
                "re-training on the derived partition gives different holdout predictions",
            )
