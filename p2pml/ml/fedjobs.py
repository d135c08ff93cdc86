"""Worker-process jobs of federated tasks (docs/federated.md, "On the chain").

* ``fed_train_job``: a participant's update for round r: its public shard
  (the partition of round 0: the same rows every round), or for a private
  task every row of its own local file, trained from G_r for the task's
  local epochs with the round's random_state; under local DP on a secret
  Poisson sample and published through ``noise.privatise``; returns the
  canonical encoding and the row count.
* ``fed_check_job``: a peer's update: the artifact decodes against the task's
  layout (``bad-update-shape``/``bad-update-value``) and, for public shards,
  its sample count is the participant's shard size (``bad-update-samples``);
  private updates are accepted by rule (nobody else has the data).
* ``fed_gains_job``: for a task rewarding improvement, each update's gain on
  the validation set over G_r (consensus: the round close carries them).
* ``fed_aggregate_job``: G_{r+1} (and any missing G before it) from G_start
  and each round's update artifacts; optionally the task metric of each new
  G on the task's public validation set (every row) or else its holdout
  (the learning curve).

Run by :mod:`p2pml.ml.pool` like the training jobs: never on the event loop.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pml.chain.taskspec import TaskSpec
from p2pml.errors import TrainingError, ValidationError

log = logging.getLogger(__name__)

#: The shard of a participant is the partition of this round in every round.
SHARD_ROUND = 0


@dataclass(frozen=True)
class FedData:
    """Where a job finds the task's dataset (the trainer's parsed cache)."""

    dataset_path: str
    cache_dir: str
    max_dataset_bytes: int
    # The task's public validation CSV: scored whole, not split into a holdout.
    validation: bool = False


@dataclass(frozen=True)
class FedTrainRequest:
    spec: TaskSpec
    task_id: bytes
    seed: bytes
    participant: bytes
    round: int
    global_model: bytes  # canonical encoding of G_r
    data: FedData | None  # public shards: the task's dataset
    private_file: str = ""  # private task: this node's own CSV (never leaves the node)
    max_private_bytes: int = 512 * 1024**2


@dataclass(frozen=True)
class FedCheckRequest:
    spec: TaskSpec
    task_id: bytes
    seed: bytes
    participant: bytes
    n_samples: int
    artifact: bytes
    data: FedData | None  # None: a private task's update (nothing to re-derive)
    # Round 0: the update's ``base``, which must be hash(G_0) (consensus checks
    # later rounds' bases against the chain; G_0 needs numpy, so it is here).
    base0: bytes | None = None


@dataclass(frozen=True)
class FedAggregateRequest:
    spec: TaskSpec
    task_id: bytes
    seed: bytes
    start: bytes | None  # canonical G to start from; None: G_0
    # per round to compute: [(participant, artifact bytes, n_samples), ...]
    rounds: list[list[tuple[bytes, bytes, int]]]
    data: FedData | None = None  # given: score each new G on the holdout


def _shard(spec: TaskSpec, task_id: bytes, seed: bytes, participant: bytes, data: FedData) -> Any:
    from p2pml.ml.worker import prepare

    return prepare(
        spec,
        task_id,
        seed,
        participant,
        SHARD_ROUND,
        Path(data.dataset_path),
        Path(data.cache_dir),
        data.max_dataset_bytes,
    )


def fed_train_job(req: FedTrainRequest) -> tuple[bytes, int]:
    from p2pml.federated import rounds
    from p2pml.federated.encoding import decode, encode
    from p2pml.federated.local import train_local
    from p2pml.ml.partition import derive_random_state

    spec = req.spec.to_wire()
    layout = rounds.layout_of(spec)
    fed = req.spec.federated
    if fed is None:
        raise TrainingError("federated-estimator", "not a federated task")
    if req.private_file:
        X, y = _private_rows(req)
    else:
        if req.data is None:
            raise TrainingError("dataset-unavailable", "a public-shard update needs the dataset")
        prep = _shard(req.spec, req.task_id, req.seed, req.participant, req.data)
        X, y = prep.data.X[prep.partition], prep.data.y[prep.partition]
    n = len(y)
    start = decode(layout, req.global_model)
    if fed.is_dp and fed.sampling_rate < 1.0:
        from p2pml.federated.noise import secret_sample

        keep = secret_sample(n, fed.sampling_rate)  # secret: the amplification needs it
        X, y = X[keep], y[keep]
    try:
        if len(y) == 0:
            vector = start  # an empty secret sample trains nothing
        else:
            vector = train_local(
                layout,
                req.spec.param_dict,
                start,
                X,
                y,
                rounds.classes_of(spec),
                round=req.round,
                local_epochs=fed.local_epochs,
                participants=fed.participants,
                random_state=derive_random_state(req.seed, req.task_id, req.participant, req.round),
            )
        if fed.is_dp:
            from p2pml.federated.noise import privatise

            vector = privatise(layout, start, vector, fed.clip, fed.noise_multiplier)
    except ValidationError as exc:
        raise TrainingError(exc.reason, exc.detail) from None
    # The whole file's row count, never the secret sample's (docs/federated.md §7.2).
    return encode(layout, vector), n


def _private_rows(req: FedTrainRequest) -> tuple[Any, Any]:
    """Every row of this node's own file, parsed fresh (no cache entry keyed by
    a public CID may hold private data)."""
    from p2pml.ml.dataset import parse_csv

    spec = req.spec
    data = parse_csv(
        Path(req.private_file), spec.kind, spec.target, spec.features, req.max_private_bytes
    )
    if data.labels:
        # String labels would be coded from this file alone, not the task's list.
        raise TrainingError("federated-labels", "a private file's labels must be integers")
    return data.X, data.y


def fed_check_job(req: FedCheckRequest) -> str:
    from p2pml.federated import rounds

    spec = req.spec.to_wire()
    if req.base0 is not None:
        g0 = rounds.initial(spec, req.seed)
        if req.base0 != rounds.round_hash(spec, g0):
            return "update-wrong-base"
    reason = rounds.check_update(spec, req.artifact)
    if reason or req.data is None:  # no data: a private update, accepted by rule
        return reason
    prep = _shard(req.spec, req.task_id, req.seed, req.participant, req.data)
    if req.n_samples != len(prep.partition):
        return "bad-update-samples"
    return ""


def fed_aggregate_job(req: FedAggregateRequest) -> list[tuple[bytes, bytes, float | None]]:
    """``[(hash, encoding, metric or None), ...]``, one per round in ``req.rounds``.

    The node asks without ``data`` (the hash is consensus, the metric is not:
    a publisher's unparsable or slow validation CSV must not make a round
    close undecidable) and scores in a separate :func:`fed_score_job`."""
    from p2pml.federated import rounds
    from p2pml.federated.encoding import decode, encode

    spec = req.spec.to_wire()
    layout = rounds.layout_of(spec)
    current = rounds.initial(spec, req.seed) if req.start is None else decode(layout, req.start)
    out: list[tuple[bytes, bytes, float | None]] = []
    for updates in req.rounds:
        try:
            current = rounds.next_global(spec, current, updates)
        except ValidationError as exc:
            raise TrainingError(exc.reason, exc.detail) from None
        metric = None if req.data is None else _score(req, spec, current, req.data)
        out.append((rounds.round_hash(spec, current), encode(layout, current), metric))
    return out


@dataclass(frozen=True)
class FedScoreRequest:
    spec: TaskSpec
    task_id: bytes
    seed: bytes
    models: list[bytes]  # canonical encodings of the global models to score
    data: FedData


def fed_score_job(req: FedScoreRequest) -> list[float | None]:
    """The task metric of each model on the validation set (or holdout); None
    for a model that cannot be scored. Best effort: a dataset that fails to
    load scores nothing and raises nothing."""
    from p2pml.federated import rounds
    from p2pml.federated.encoding import decode

    spec = req.spec.to_wire()
    layout = rounds.layout_of(spec)
    agg = FedAggregateRequest(req.spec, req.task_id, req.seed, None, [], req.data)
    out: list[float | None] = []
    for encoding in req.models:
        try:
            out.append(_score(agg, spec, decode(layout, encoding), req.data))
        except Exception as exc:  # a publisher's CSV: any failure is "no metric"
            log.info("federated score: %s", exc)
            out.append(None)
    return out


def _score(req: FedAggregateRequest, wire: Any, vector: Any, data: FedData) -> float | None:
    """The task metric of G on the task's validation set (every row) or on its
    holdout rows (docs/tasks.md)."""
    import numpy as np

    from p2pml.federated import rounds
    from p2pml.federated.params import build
    from p2pml.ml.metrics import compute_metric
    from p2pml.ml.partition import holdout_indices
    from p2pml.ml.worker import load_task_dataset

    spec = req.spec
    fed = spec.federated
    if data.validation and fed is not None:
        spec = dataclasses.replace(spec, dataset_cid=fed.validation)  # its own cache entry
    dataset = load_task_dataset(
        spec, Path(data.dataset_path), Path(data.cache_dir), data.max_dataset_bytes
    )
    if data.validation:
        hold = np.arange(dataset.n_rows)
    else:
        hold = holdout_indices(req.seed, req.task_id, dataset.n_rows, spec.holdout_fraction)
    model = build(rounds.layout_of(wire), vector, spec.param_dict, rounds.classes_of(wire))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return float(compute_metric(spec.metric, model, dataset.X[hold], dataset.y[hold]))
        except (ValueError, ArithmeticError):
            return None


@dataclass(frozen=True)
class FedGainsRequest:
    spec: TaskSpec
    task_id: bytes
    seed: bytes
    start: bytes | None  # canonical G_r; None: G_0
    updates: list[tuple[bytes, bytes, int]]  # the round's (participant, artifact, n), in order
    data: FedData  # the task's validation CSV


def fed_gains_job(req: FedGainsRequest) -> list[int]:
    """Each update's gain on the validation set (docs/federated.md §11.5), in the
    round's order, or [] if the set does not load or G_r cannot be scored on it
    (a verdict: the round's share then goes by samples, or equal shares)."""
    import numpy as np

    from p2pml.chain.metrics import higher_is_better
    from p2pml.federated import rounds
    from p2pml.federated.encoding import decode
    from p2pml.ml.worker import load_task_dataset

    spec = req.spec
    fed = spec.federated
    if fed is None or not fed.validation or not req.updates:
        return []
    wire = spec.to_wire()
    layout = rounds.layout_of(wire)
    base = rounds.initial(wire, req.seed) if req.start is None else decode(layout, req.start)
    path = Path(req.data.dataset_path)
    if path.stat().st_size > req.data.max_dataset_bytes:
        # The byte cap is node configuration, not consensus: over it is missing
        # data here (the close waits), never the verdict "unusable".
        raise TrainingError("dataset-too-large", "the validation CSV is over this node's cap")
    try:
        dataset = load_task_dataset(
            dataclasses.replace(spec, dataset_cid=fed.validation),
            path,
            Path(req.data.cache_dir),
            req.data.max_dataset_bytes,
        )
    except Exception as exc:  # a publisher's CSV: any failure to load is the verdict
        log.info("federated gains: validation set unusable: %s", exc)
        return []
    rows = np.arange(dataset.n_rows)
    base_score = _metric_on(spec, wire, base, dataset.X[rows], dataset.y[rows])
    if base_score is None:
        return []
    higher = higher_is_better(spec.metric)
    out: list[int] = []
    for update in req.updates:
        model = rounds.update_model(wire, base, update)
        score = _metric_on(spec, wire, model, dataset.X[rows], dataset.y[rows])
        out.append(rounds.gain(score, base_score, higher))
    return out


def _metric_on(spec: TaskSpec, wire: Any, vector: Any, X: Any, y: Any) -> float | None:
    """The task metric of a parameter vector on (X, y); None if it cannot be
    computed or is not finite."""
    import math

    from p2pml.federated import rounds
    from p2pml.federated.params import build
    from p2pml.ml.metrics import compute_metric

    model = build(rounds.layout_of(wire), vector, spec.param_dict, rounds.classes_of(wire))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value = float(compute_metric(spec.metric, model, X, y))
        except (ValueError, ArithmeticError):
            return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class FedDescribeRequest:
    spec: TaskSpec  # dataset, target, kind (and features, if listed)
    data: FedData


def fed_describe_job(req: FedDescribeRequest) -> tuple[list[str], list[int]]:
    """What a federated spec must fix from the dataset: its feature columns
    (d) and, for a classifier, the sorted distinct label codes (K)."""
    import numpy as np

    from p2pml.ml.worker import load_task_dataset

    data = req.data
    dataset = load_task_dataset(
        req.spec, Path(data.dataset_path), Path(data.cache_dir), data.max_dataset_bytes
    )
    classes: list[int] = []
    if req.spec.kind == "classification":
        classes = [int(c) for c in np.unique(dataset.y)]
    return list(dataset.features), classes
