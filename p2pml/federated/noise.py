"""Chain-seeded Gaussian noise for DP-FedAvg: every node draws the same numbers.

seed = SHA-256(b"p2pml/fed-noise/v1" || task seed (32) || task id (32) || round u32 BE);
generator = numpy ``Generator(PCG64(int.from_bytes(seed, "big")))`` (numpy's
SeedSequence hashes that integer into PCG64's state); noise =
``generator.standard_normal(size) * sigma`` (numpy's ziggurat). numpy's exact
version is a network parameter (chain/params.py RUNTIME), so the stream is fixed.

Anyone who knows the chain can draw the same noise and subtract it: see
docs/federated.md, "What the DP option protects".
"""

from __future__ import annotations

import hashlib
from typing import Final

import numpy as np

from p2pml.federated.encoding import Vector

NOISE_DOMAIN: Final = b"p2pml/fed-noise/v1"


def noise_seed(task_seed: bytes, task_id: bytes, round: int) -> bytes:
    """The 32-byte seed of round ``round``'s noise."""
    if len(task_seed) != 32 or len(task_id) != 32 or not 0 <= round < 2**32:
        raise ValueError("task_seed and task_id are 32 bytes; round is a u32")
    return hashlib.sha256(NOISE_DOMAIN + task_seed + task_id + round.to_bytes(4, "big")).digest()


def gaussian_noise(seed: bytes, size: int, sigma: float) -> Vector:
    """``size`` draws of N(0, sigma^2) from the generator ``seed`` names."""
    if len(seed) != 32:
        raise ValueError("noise seed must be 32 bytes")
    generator = np.random.Generator(np.random.PCG64(int.from_bytes(seed, "big")))
    draws: Vector = generator.standard_normal(size, dtype=np.float64)
    return draws * sigma
