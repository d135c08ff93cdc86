"""The core's functions as the chain's federated rounds use them.

The chain stores a federated task's spec (wire form) and its round state
(:mod:`p2pml.chain.federated_rounds`); this module turns those into the
core's objects and answers the two questions a verdict oracle is asked:

* is an update artifact a valid vector of the task (``check_update``)?
* which G_{r+1} do the round's updates make (``next_global``), hence which
  hash must the round close commit (``round_hash``)?

Pure: artifacts come in as bytes (the caller fetched them), nothing is read
from disk or the network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from p2pml.errors import ValidationError
from p2pml.federated.aggregate import Rule, Update, aggregate
from p2pml.federated.encoding import Vector, decode, model_hash
from p2pml.federated.layout import Layout
from p2pml.federated.params import Labels, initial_vector


def layout_of(spec: Mapping[str, Any]) -> Layout:
    """The parameter layout of a federated task spec (wire form)."""
    fed = spec["federated"]
    return Layout(spec["model"], len(spec["features"]), len(fed["classes"]))


def classes_of(spec: Mapping[str, Any]) -> Labels:
    return np.asarray(spec["federated"]["classes"], dtype=np.int64)


def rule_of(spec: Mapping[str, Any]) -> Rule:
    """The task's rule: name, trim, clip bound (0.0 on the wire: none) and the
    local DP noise multiplier (aggregation clips DP deltas to the published bound)."""
    fed = spec["federated"]
    clip = fed.get("clip", 0.0)
    return Rule(
        name=fed["aggregation"],
        trim=fed.get("trim", 0),
        clip=clip if clip else None,
        noise_multiplier=fed.get("noise_multiplier", 0.0),
    )


def check_update(spec: Mapping[str, Any], data: bytes) -> str:
    """``""`` if ``data`` is a canonical vector of the task, else the reason
    (``bad-update-shape`` or ``bad-update-value``)."""
    try:
        decode(layout_of(spec), data)
    except ValidationError as exc:
        return exc.reason
    return ""


def initial(spec: Mapping[str, Any], task_seed: bytes) -> Vector:
    """G_0 of the task."""
    return initial_vector(layout_of(spec), task_seed)


def next_global(
    spec: Mapping[str, Any],
    current: Vector,
    updates: Sequence[tuple[bytes, bytes, int]],
) -> Vector:
    """G_{r+1} from G_r and the round's ``(participant, artifact bytes, n)``:
    the core's aggregation (sorted by key, fixed float64 order). A round
    without updates keeps G_r."""
    if not updates:
        return current
    layout = layout_of(spec)
    decoded = [Update(p, decode(layout, data), n) for p, data, n in updates]
    return aggregate(layout, current, decoded, rule_of(spec))


def round_hash(spec: Mapping[str, Any], vector: Vector) -> bytes:
    """What the block closing a round commits: SHA-256 of the canonical encoding."""
    return model_hash(layout_of(spec), vector)


#: Gains are counted in micro-units of the metric (docs/federated.md §11.5).
GAIN_SCALE = 1_000_000.0
MAX_GAIN = 2**53 - 1  # p2pml.chain.types.MAX_GAIN


def update_model(
    spec: Mapping[str, Any], current: Vector, update: tuple[bytes, bytes, int]
) -> Vector:
    """The model one update makes alone: the task's rule applied to G_r and
    this update only (G_r plus its clipped delta), what its gain is scored on."""
    return next_global(spec, current, [update])


def gain(score: float | None, base: float, higher_is_better: bool) -> int:
    """``max(0, floor(d * 10^6))`` with ``d`` the improvement of ``score`` over
    ``base`` in binary64 (``score - base``, or ``base - score`` for an error
    metric), capped at 2^53 - 1; an update whose model cannot be scored gains 0."""
    if score is None:
        return 0
    d = score - base if higher_is_better else base - score
    scaled = d * GAIN_SCALE
    if scaled != scaled or scaled <= 0.0:
        return 0
    if scaled >= MAX_GAIN:
        return MAX_GAIN
    return int(scaled)  # floor: scaled > 0
