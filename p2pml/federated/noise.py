"""Local differential privacy: the participant's secret noise on its own update.

Before publishing, a participant in a DP task clips its delta from G_r to the
task's bound ``C`` and adds Gaussian noise of standard deviation ``z * C``
drawn from the operating system's CSPRNG (``os.urandom``): nothing on the
chain or in the task determines it, so no observer can regenerate and
subtract it. A task may also set a local sampling rate ``q``: each round the
participant trains on a Poisson sample of its own rows, chosen from the same
secret source (the privacy amplification by sampling needs the sample to be
secret). Aggregation then runs on the published bytes only, so every node
still derives the same G_{r+1} (docs/federated.md section 7).

Standard normals come from Box-Muller over 53-bit uniforms in (0, 1); numpy's
generators are not used here because their state is predictable from outputs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from p2pml.federated.aggregate import clip
from p2pml.federated.encoding import Vector, canonical, check_vector
from p2pml.federated.layout import Layout

#: Where secret randomness comes from: ``n`` bytes. Only tests replace it, to show
#: that a predictable source makes the noise removable.
Entropy = Callable[[int], bytes]


def _uniform_open(count: int, entropy: Entropy) -> Vector:
    """``count`` uniforms in the open interval (0, 1): 53 random bits plus one half ulp."""
    raw = np.frombuffer(entropy(8 * count), dtype="<u8")
    uniforms: Vector = ((raw >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    return uniforms


def secret_normal(size: int, entropy: Entropy = os.urandom) -> Vector:
    """``size`` independent N(0, 1) draws from the CSPRNG (Box-Muller)."""
    half = (size + 1) // 2
    u = _uniform_open(2 * half, entropy)
    radius = np.sqrt(-2.0 * np.log(u[:half]))
    angle = 2.0 * math.pi * u[half:]
    draws: Vector = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:size]
    return draws


def secret_sample(n_rows: int, rate: float, entropy: Entropy = os.urandom) -> npt.NDArray[np.bool_]:
    """A secret Poisson sample of ``n_rows`` rows: each row kept with probability ``rate``."""
    if not 0 < rate <= 1:
        raise ValueError(f"sampling rate {rate}")
    if rate == 1:
        return np.ones(n_rows, dtype=np.bool_)
    mask: npt.NDArray[np.bool_] = _uniform_open(n_rows, entropy) < rate
    return mask


def privatise(
    layout: Layout,
    global_vector: Vector,
    vector: Vector,
    clip_bound: float,
    noise_multiplier: float,
    entropy: Entropy = os.urandom,
) -> Vector:
    """What a participant publishes: ``G_r + clip(w - G_r, C) + N(0, (z C)^2 I)``."""
    check_vector(layout, global_vector)
    check_vector(layout, vector)
    if not (math.isfinite(clip_bound) and clip_bound > 0 and noise_multiplier > 0):
        raise ValueError("local DP needs a clip bound C > 0 and a noise multiplier z > 0")
    delta = clip(vector - global_vector, clip_bound)
    sigma = noise_multiplier * clip_bound
    return canonical(global_vector + delta + sigma * secret_normal(layout.size, entropy))
