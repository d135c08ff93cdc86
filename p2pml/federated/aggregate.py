"""Deterministic aggregation: G_{r+1} from G_r and the round's accepted updates.

Every step is float64 arithmetic in the order docs/federated.md fixes, so any
node recomputes the same bits and the same hash:

1. updates sorted by participant public key (bytes, ascending);
2. linear family: deltas ``D_k = w_k - G_r``; clipped to L2 norm ``C`` if the
   task sets one (norm = sqrt of the exactly rounded sum of squares);
   under local DP (noise multiplier ``z > 0``) the published deltas carry the
   participants' own noise, so they are clipped to :func:`published_bound`
   instead of ``C``;
3. the rule: ``fedavg`` (weights ``n_k / N``, or ``1 / m`` under DP, summed
   left to right), ``median`` or ``trimmed_mean`` (per coordinate, over the
   sorted values), or ``sum`` (exact-merge families: the statistics add up);
4. ``G_{r+1} = G_r + aggregate``, negative zeros made positive.

No noise is added here: under DP each participant adds its own secret noise
before publishing (:mod:`p2pml.federated.noise`), and aggregation is a
deterministic function of the published bytes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from p2pml.errors import ValidationError
from p2pml.federated.encoding import Vector, canonical, check_vector
from p2pml.federated.layout import AVERAGED, NB, Layout
from p2pml.federated.params import sample_count

FEDAVG: Final = "fedavg"
MEDIAN: Final = "median"
TRIMMED_MEAN: Final = "trimmed_mean"
SUM: Final = "sum"
RULES: Final = (FEDAVG, MEDIAN, TRIMMED_MEAN, SUM)


@dataclass(frozen=True)
class Update:
    """One participant's contribution to a round."""

    participant: bytes  # 32-byte Ed25519 public key
    vector: Vector
    n_samples: int


@dataclass(frozen=True)
class Rule:
    """How a task combines updates: the rule, its trim count, the clipping
    bound ``C`` and the local DP noise multiplier ``z`` (0: no DP; each
    participant adds N(0, (z C)^2) to its own clipped delta)."""

    name: str = FEDAVG
    trim: int = 0
    clip: float | None = None
    noise_multiplier: float = 0.0


def l2_norm(vector: Vector) -> float:
    """sqrt(fsum(x_i * x_i)): exactly rounded sum, so independent of BLAS."""
    with np.errstate(over="ignore"):  # an overflowing square makes the norm inf: refused
        squares = vector * vector
    try:
        return math.sqrt(math.fsum(squares.tolist()))
    except OverflowError:  # finite squares whose exact sum overflows
        return math.inf


def clip(vector: Vector, bound: float) -> Vector:
    """``vector`` scaled to L2 norm at most ``bound``; ``bad-update-value`` if its
    norm is not finite."""
    norm = l2_norm(vector)
    if not math.isfinite(norm):
        raise ValidationError("bad-update-value", "the update's norm overflows")
    if norm <= bound:
        return vector
    return vector * (bound / norm)


#: Standard deviations of slack in :func:`published_bound`: a Gaussian vector's norm
#: exceeds ``sigma (sqrt(size) + t)`` with probability below ``exp(-t^2 / 2)`` (1.5e-8).
NOISE_SLACK: Final = 6.0


def published_bound(clip_bound: float, noise_multiplier: float, size: int) -> float:
    """The norm a DP delta is clipped to at aggregation: ``C (1 + z (sqrt(size) + 6))``.

    An honest published delta is a vector of norm at most ``C`` plus
    N(0, (z C)^2 I), so it stays below this bound except with probability
    under 1.5e-8 and passes unchanged; a participant who skips the noise, or
    sends something larger, weighs no more than an honest noisy update."""
    return clip_bound * (1.0 + noise_multiplier * (math.sqrt(float(size)) + NOISE_SLACK))


def fedavg(deltas: Sequence[Vector], weights: Sequence[float]) -> Vector:
    """sum_k weights[k] * deltas[k], left to right, product then sum (no FMA)."""
    total = np.zeros_like(deltas[0])
    for delta, weight in zip(deltas, weights, strict=True):
        total = total + weight * delta
    return total


def median(deltas: Sequence[Vector]) -> Vector:
    """Per coordinate: the middle value, or (a + b) / 2 of the two middle values."""
    ordered = np.sort(np.stack(deltas), axis=0)
    m = len(deltas)
    if m % 2:
        result: Vector = ordered[m // 2]
        return result
    middle: Vector = (ordered[m // 2 - 1] + ordered[m // 2]) / 2.0
    return middle


def trimmed_mean(deltas: Sequence[Vector], trim: int) -> Vector:
    """Per coordinate: drop ``t = min(trim, (m - 1) // 2)`` lowest and highest
    values, then the sum of the rest in ascending order divided by their count.

    The trim shrinks for a round that closed with ``m <= 2 trim`` updates (its
    window ended short of the participants), which makes it the median: a rule
    that refused such a round would leave it unclosable."""
    m = len(deltas)
    trim = min(trim, (m - 1) // 2)
    ordered = np.sort(np.stack(deltas), axis=0)
    total = np.zeros_like(ordered[0])
    for row in ordered[trim : m - trim]:
        total = total + row
    mean: Vector = total / float(m - 2 * trim)
    return mean


def check_update(layout: Layout, update: Update) -> None:
    """The rule checks every update passes before it counts (docs: "Refusals")."""
    if len(update.participant) != 32:
        raise ValidationError("bad-update-shape", "participant key must be 32 bytes")
    check_vector(layout, update.vector)
    if np.signbit(update.vector[update.vector == 0.0]).any():
        raise ValidationError("bad-update-value", "negative zero is not canonical")
    n = update.n_samples
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n < 2**53:
        raise ValidationError("bad-update-value", f"sample count {update.n_samples!r}")
    if layout.family not in AVERAGED:
        _check_statistics(layout, update)


def _check_statistics(layout: Layout, update: Update) -> None:
    v, k, d = update.vector, layout.n_classes, layout.n_features
    if layout.family == NB:
        counts, squares = v[:k], v[k + k * d :]
    else:
        p = d + 1
        counts, squares = v[:1], np.diagonal(v[: p * p].reshape(p, p))
    if (counts < 0).any() or (counts != np.floor(counts)).any():
        raise ValidationError("bad-update-value", "row counts must be whole and non-negative")
    if (squares < 0).any():
        raise ValidationError("bad-update-value", "a sum of squares is negative")
    if sample_count(layout, update.vector) != update.n_samples:
        raise ValidationError("bad-update-value", "statistics do not match the sample count")


def aggregate(
    layout: Layout,
    global_vector: Vector,
    updates: Sequence[Update],
    rule: Rule,
) -> Vector:
    """G_{r+1}, from the published bytes alone."""
    check_vector(layout, global_vector)
    if not updates:
        raise ValidationError("federated-too-few-updates", "no update to aggregate")
    for update in updates:
        check_update(layout, update)
    ordered = sorted(updates, key=lambda u: u.participant)
    if any(a.participant == b.participant for a, b in itertools.pairwise(ordered)):
        raise ValidationError("bad-update-duplicate", "two updates from one participant")
    if layout.family not in AVERAGED:
        if rule.name != SUM:
            raise ValidationError("federated-aggregation", f"{layout.estimator} merges by sum")
        return canonical(fedavg([u.vector for u in ordered], [1.0] * len(ordered)))
    deltas = [u.vector - global_vector for u in ordered]
    dp = rule.noise_multiplier > 0
    if dp:
        if rule.clip is None:
            raise ValidationError("federated-aggregation", "local DP needs a clip bound C")
        bound = published_bound(rule.clip, rule.noise_multiplier, layout.size)
        deltas = [clip(d, bound) for d in deltas]
    elif rule.clip is not None:
        deltas = [clip(d, rule.clip) for d in deltas]
    m = len(deltas)
    if rule.name == FEDAVG:
        total = sum(u.n_samples for u in ordered)
        weights = [1.0 / m] * m if dp else [u.n_samples / total for u in ordered]
        combined = fedavg(deltas, weights)
    elif rule.name == MEDIAN:
        combined = median(deltas)
    elif rule.name == TRIMMED_MEAN:
        combined = trimmed_mean(deltas, rule.trim)
    else:
        raise ValidationError("federated-aggregation", f"{rule.name!r} for {layout.estimator}")
    return canonical(global_vector + combined)
