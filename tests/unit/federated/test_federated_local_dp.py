"""Local DP: each participant's own secret noise on its clipped update.

The first slice drew DP noise from a chain-seeded generator, so anyone reading
the chain could regenerate and subtract it. These tests run that attack
against what a participant now publishes, and pin the noise's scale, the
determinism of aggregation over published bytes and the published-norm bound.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from p2pml.errors import ValidationError
from p2pml.federated.aggregate import Rule, Update, aggregate, clip, l2_norm, published_bound
from p2pml.federated.encoding import decode, encode, model_hash
from p2pml.federated.layout import Layout
from p2pml.federated.noise import privatise, secret_normal, secret_sample

SEED, TASK = bytes(range(32)), bytes(range(32, 64))
LAYOUT = Layout("sgd_classifier", 30, 10)  # 310 parameters


def key(i: int) -> bytes:
    return bytes([i]) * 32


def chain_noise(round: int, size: int, sigma: float) -> np.ndarray:  # type: ignore[type-arg]
    """What an observer derives from chain data alone: the first slice's noise
    (SHA-256 of a domain, the task seed, the task id and the round, into numpy's PCG64)."""
    seed = hashlib.sha256(b"p2pml/fed-noise/v1" + SEED + TASK + round.to_bytes(4, "big")).digest()
    generator = np.random.Generator(np.random.PCG64(int.from_bytes(seed, "big")))
    draws: np.ndarray = generator.standard_normal(size)  # type: ignore[type-arg]
    return draws * sigma


def chain_entropy(round: int):  # type: ignore[no-untyped-def]
    """A predictable randomness source derived from chain data (what the fix removes)."""
    counter = [0]

    def entropy(n: int) -> bytes:
        out = hashlib.shake_256(SEED + TASK + round.to_bytes(4, "big") + bytes(counter)).digest(n)
        counter[0] += 1
        return out

    return entropy


def honest_update(rng: int) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    g = np.random.default_rng(rng).normal(size=LAYOUT.size)
    return g, g + 0.02 * np.random.default_rng(rng + 1).normal(size=LAYOUT.size)


def test_subtracting_chain_derivable_noise_no_longer_recovers_the_update() -> None:
    g, w = honest_update(3)
    c, z = 1.0, 2.0
    clipped = g + clip(w - g, c)
    published = privatise(LAYOUT, g, w, c, z)
    # The old attack: regenerate the noise from chain data and subtract it.
    for guess in (chain_noise(0, LAYOUT.size, z * c), chain_noise(0, LAYOUT.size, z * c / 5)):
        error = l2_norm(published - guess - clipped)
        # What is left is the participant's secret noise: norm about z C sqrt(310) = 35.
        assert error > 0.5 * z * c * math.sqrt(LAYOUT.size)
    # The same attack does work whenever the noise is derivable from chain data,
    # which is why the randomness must be the participant's own.
    predictable = privatise(LAYOUT, g, w, c, z, entropy=chain_entropy(0))
    regenerated = privatise(LAYOUT, g, g, c, z, entropy=chain_entropy(0)) - g
    assert np.allclose(predictable - regenerated, clipped, atol=1e-9)


def test_noise_is_fresh_and_has_scale_z_times_c() -> None:
    g, w = honest_update(5)
    c, z = 0.5, 3.0
    one, two = privatise(LAYOUT, g, w, c, z), privatise(LAYOUT, g, w, c, z)
    assert not np.array_equal(one, two)
    noise = np.concatenate([privatise(LAYOUT, g, w, c, z) - g - clip(w - g, c) for _ in range(200)])
    assert abs(noise.mean()) < 0.02 * z * c
    assert math.isclose(noise.std(), z * c, rel_tol=0.02)
    draws = secret_normal(100_001)
    assert draws.shape == (100_001,) and abs(draws.mean()) < 0.01
    assert math.isclose(draws.std(), 1.0, rel_tol=0.01)
    assert abs(float(np.mean(draws**4)) - 3.0) < 0.1  # Gaussian kurtosis, not uniform


def test_secret_sample_has_the_rate_and_differs_each_time() -> None:
    a, b = secret_sample(20_000, 0.1), secret_sample(20_000, 0.1)
    assert abs(a.mean() - 0.1) < 0.01 and not np.array_equal(a, b)
    assert secret_sample(7, 1.0).all()
    with pytest.raises(ValueError):
        secret_sample(7, 0.0)


def test_aggregation_is_a_function_of_the_published_bytes() -> None:
    """Every node derives the same G_{r+1} from the same published updates."""
    rule = Rule("fedavg", clip=1.0, noise_multiplier=2.0)
    g, _ = honest_update(7)
    published = []
    for i in range(1, 6):
        _, w = honest_update(10 * i)
        published.append(encode(LAYOUT, privatise(LAYOUT, g, g + (w - g), 1.0, 2.0)))
    nodes = [
        model_hash(
            LAYOUT,
            aggregate(
                LAYOUT,
                g,
                [Update(key(i), decode(LAYOUT, b), 50) for i, b in enumerate(order)],
                rule,
            ),
        )
        for order in (published, published)
    ]
    assert nodes[0] == nodes[1]


def test_honest_noisy_updates_pass_the_published_bound_and_outsized_ones_are_clipped() -> None:
    c, z = 1.0, 2.0
    bound = published_bound(c, z, LAYOUT.size)
    g = np.zeros(LAYOUT.size)
    for i in range(100):
        w = privatise(LAYOUT, g, g + np.full(LAYOUT.size, 1.0), c, z)
        assert l2_norm(w - g) < bound, i
    rule = Rule("fedavg", clip=c, noise_multiplier=z)
    huge = Update(key(1), np.full(LAYOUT.size, 1e6), 1)
    result = aggregate(LAYOUT, g, [huge], rule)
    assert l2_norm(result - g) == pytest.approx(bound)
    # Without a noise multiplier the task's C applies as before.
    assert l2_norm(aggregate(LAYOUT, g, [huge], Rule("fedavg", clip=c)) - g) == pytest.approx(c)
    with pytest.raises(ValidationError) as err:
        aggregate(LAYOUT, g, [huge], Rule("fedavg", noise_multiplier=z))
    assert err.value.reason == "federated-aggregation"


def test_dp_fedavg_weighs_participants_equally() -> None:
    g = np.zeros(LAYOUT.size)
    small = Update(key(1), np.full(LAYOUT.size, 0.01), 1)
    big = Update(key(2), np.full(LAYOUT.size, 0.03), 1000)
    result = aggregate(LAYOUT, g, [small, big], Rule("fedavg", clip=1.0, noise_multiplier=1.0))
    assert np.allclose(result, 0.02)


def test_a_participant_trains_on_a_secret_sample_and_publishes_noisy_clipped_updates() -> None:
    from sklearn.datasets import load_digits

    from p2pml.federated.local import train_dp, train_local
    from p2pml.federated.params import initial_vector

    X, y = load_digits(return_X_y=True)
    X, y = X[:200] / 16.0, y[:200].astype(np.int64)
    layout = Layout("sgd_classifier", 64, 10)
    g = initial_vector(layout, SEED)
    kw = {"round": 0, "local_epochs": 1, "random_state": 4, "participants": 5}
    classes = np.arange(10, dtype=np.int64)
    runs = [
        train_dp(layout, {}, g, X, y, classes, **kw, clip_bound=1.0, noise_multiplier=1e-9)  # type: ignore[arg-type]
        for _ in range(2)
    ]
    plain = train_local(layout, {}, g, X, y, classes, **kw)  # type: ignore[arg-type]
    # Negligible noise, no sampling: the clipped plain update.
    assert np.allclose(runs[0], g + clip(plain - g, 1.0), atol=1e-6)
    sampled = [
        train_dp(
            layout,
            {},
            g,
            X,
            y,
            classes,
            **kw,  # type: ignore[arg-type]
            clip_bound=1.0,
            noise_multiplier=1e-9,
            local_sampling=0.3,
        )
        for _ in range(2)
    ]
    assert not np.allclose(sampled[0], sampled[1], atol=1e-6)  # a fresh secret sample each time
    noisy = train_dp(layout, {}, g, X, y, classes, **kw, clip_bound=1.0, noise_multiplier=2.0)  # type: ignore[arg-type]
    assert l2_norm(noisy - runs[0]) > 10.0
