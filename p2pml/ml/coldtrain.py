"""The first round on a large dataset: train while parsing (docs/tasks.md §2.1).

A round whose dataset is not in the parsed cache yet would otherwise parse the
CSV into the cache and then read the partition rows back for ``partial_fit``.
Here one pass does both: the masks are computed from the counted rows before
parsing, and each chunk the parser writes has its partition rows fed to
``partial_fit`` in the protocol's batches (:class:`p2pml.ml.largedata.Rebatcher`),
so the cold round costs about one parse plus one fit.

The model must equal the two-pass path's bit for bit (verifiers re-train and
compare), so this is only an optimisation that can give up: the batches are
the same rows in the same order, and the label codes given to ``partial_fit``
are fixed when the first batch is fed, from the labels seen so far. If the
parse does not confirm every guess (its row count equals the counted one, the
final label codes equal the fixed ones, no chunk was left out, ``partial_fit``
raised nothing), the model is dropped and the round is trained from the cache
as a later round is (:func:`p2pml.ml.largetrain.train_large`).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import numpy as np

from p2pml.chain.taskspec import TaskSpec
from p2pml.errors import TrainingError, ValidationError
from p2pml.ml import largedata, largetrain
from p2pml.ml.dataset import PARSED_CACHE_MAX_BYTES, _count_rows, _header, cache_key
from p2pml.ml.estimators import CLASSIFICATION
from p2pml.ml.largedata import LargeDataset, Mask, Rebatcher, large_cache_key


class PartitionFeed:
    """A :class:`p2pml.ml.largedata.ChunkTap` that trains on the partition rows."""

    def __init__(self, spec: TaskSpec, holdout: Mask, partition: Mask, random_state: int) -> None:
        from p2pml.ml.estimators import build_estimator

        self.model = build_estimator(spec.model, spec.param_dict, random_state)
        self.holdout = holdout
        self.partition = partition
        self.classification = spec.kind == CLASSIFICATION
        self.cut = Rebatcher(largetrain.CHUNK_ROWS)  # the batches of fit_large
        self.next_row = 0
        self.broken = False
        self.fit_seconds = 0.0
        # Label codes, fixed at the first partial_fit from the labels seen so far.
        self.labels: Mapping[str, int] = {}
        self.seen: AbstractSet[int] = set()
        self.names: tuple[str, ...] | None = None  # string labels, sorted
        self.lut: Any = None  # provisional code -> rank among ``names``
        self.classes: Any = None

    def chunk(
        self, start: int, X: Any, y: Any, labels: Mapping[str, int], classes: AbstractSet[int]
    ) -> None:
        if self.broken:
            return
        m = len(y)
        if start != self.next_row or start + m > len(self.partition):
            self.broken = True  # a chunk left out, or more rows than counted
            return
        self.next_row += m
        self.labels, self.seen = labels, classes
        if self.classes is not None and self._codes_grew():
            self.broken = True  # a label after the codes were fixed: they are wrong
            return
        keep = self.partition[start : start + m]
        if keep.any():
            for batch in self.cut.push(X[:, keep].T, y[keep]):  # columns are contiguous
                self._fit(*batch)

    def finish(self, data: LargeDataset) -> Any:
        """The model if every guess held, else None (train from the cache)."""
        if self.broken or data.n_rows != len(self.partition) or self.next_row != data.n_rows:
            return None
        if self.classification:
            if self.classes is None:
                self._fix_codes()
            if tuple(int(c) for c in self.classes) != data.classes:
                return None
            if self.names is not None and self.names != data.labels:
                return None
        for batch in self.cut.rest():
            self._fit(*batch)
        return None if self.broken else self.model

    def _codes_grew(self) -> bool:
        if self.names is not None:
            return len(self.labels) != len(self.names)
        return len(self.seen) != len(self.classes)

    def _fix_codes(self) -> None:
        if self.labels:  # string labels: codes are ranks among the sorted labels
            self.names = tuple(sorted(self.labels))
            self.lut = np.empty(len(self.names), dtype=np.int64)
            for r, name in enumerate(self.names):
                self.lut[self.labels[name]] = r
            self.classes = np.arange(len(self.names), dtype=np.int64)
        else:  # integer labels are their own codes
            self.classes = np.asarray(sorted(self.seen), dtype=np.int64)

    def _fit(self, X: Any, y: Any) -> None:
        if self.broken:
            return
        t0 = time.perf_counter()
        extra: dict[str, Any] = {}
        if self.classification:
            if self.classes is None:
                self._fix_codes()
            if self.lut is not None:
                y = self.lut[y]
            extra["classes"] = self.classes
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # as fit_large
                self.model.partial_fit(X, y, **extra)
        except (ValueError, ArithmeticError):
            self.broken = True  # fit_large repeats it and reports "fit-failed"
        self.fit_seconds += time.perf_counter() - t0


def train_cold(req: Any) -> tuple[bytes, float, int, int] | None:
    """``worker.train_job`` on a large dataset not in the parsed cache yet:
    (artifact, metric, train rows, train ms); None if the dataset is not
    large or is already parsed (the caller takes the usual path)."""
    spec = req.spec
    path, cache_dir = Path(req.dataset_path), Path(req.cache_dir)
    args = (spec.dataset_cid, spec.kind, spec.target, spec.features)
    if (cache_dir / cache_key(*args) / "meta.json").exists():
        return None
    if (cache_dir / large_cache_key(*args) / "meta.json").exists():
        return None
    lines = _count_rows(path)  # counted once: the path choice, the limit, the masks
    header = _header(path)
    if not largedata.is_large_count(lines, len(header)):
        return None
    limit = PARSED_CACHE_MAX_BYTES if req.cache_max_bytes is None else req.cache_max_bytes
    feed = _feed_for(spec, req, lines - 1, header)
    data = largedata.load_large(path, cache_dir, *args, req.max_dataset_bytes, limit, feed, lines)
    model = None if feed is None else feed.finish(data)
    data = dataclasses.replace(data, streamed=True)  # read once more, for the holdout
    if feed is None or model is None:
        return largetrain.train_large(req, data)
    rows = int(feed.partition.sum())
    train_ms = round(feed.fit_seconds * 1000)
    return largetrain.evaluate_large(spec, model, data, feed.holdout, rows, train_ms)


def _feed_for(spec: TaskSpec, req: Any, n: int, header: list[str]) -> PartitionFeed | None:
    """A feed if ``n`` rows would be trained by ``partial_fit``, else None."""
    from p2pml.ml.dataset import resolve_features
    from p2pml.ml.partition import check_sizes, derive_random_state, partition_size
    from p2pml.ml.rowselect import holdout_mask, partition_mask

    try:
        d = len(resolve_features(header, spec.target, spec.features))
        check_sizes(n, spec.holdout_fraction, spec.partition_fraction)
        mode = largetrain.train_mode(spec, partition_size(n, spec.partition_fraction), d)
    except (TrainingError, ValidationError):
        return None  # the parse or the usual path reports it, in its order
    if mode != "partial_fit":
        return None
    hold = holdout_mask(req.seed, req.task_id, n, spec.holdout_fraction)
    part = partition_mask(
        req.seed,
        req.task_id,
        req.trainer_pubkey,
        req.round,
        n,
        hold,
        spec.holdout_fraction,
        spec.partition_fraction,
    )
    rs = derive_random_state(req.seed, req.task_id, req.trainer_pubkey, req.round)
    return PartitionFeed(spec, hold, part, rs)
