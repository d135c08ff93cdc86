"""Aggregation rules against hand-computed examples, clipping, order, refusals."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from p2pml.errors import ValidationError
from p2pml.federated.aggregate import Rule, Update, aggregate, clip, l2_norm
from p2pml.federated.encoding import model_hash
from p2pml.federated.layout import Layout

REG = Layout("sgd_regressor", 1)  # vector = [coef, intercept]
G = np.array([1.0, 0.0])


def key(i: int) -> bytes:
    return bytes([i]) * 32


def upd(i: int, w: list[float], n: int = 1) -> Update:
    return Update(key(i), np.array(w, dtype=np.float64), n)


A, B, C, D = upd(1, [2, 1], 1), upd(2, [4, 0], 3), upd(3, [0, -2]), upd(4, [11, 5])


def test_fedavg_weights_by_sample_count() -> None:
    # deltas [1, 1] x 1/4 and [3, 0] x 3/4 -> [2.5, 0.25]
    assert aggregate(REG, G, [A, B], Rule("fedavg")).tolist() == [3.5, 0.25]


def test_median_odd_and_even() -> None:
    # deltas [1, 1], [3, 0], [-1, -2] -> per coordinate median [1, 0]
    assert aggregate(REG, G, [A, B, C], Rule("median")).tolist() == [2.0, 0.0]
    # with [10, 5]: coordinate 0 sorted -1 1 3 10 -> (1 + 3) / 2; coordinate 1: (0 + 1) / 2
    assert aggregate(REG, G, [A, B, C, D], Rule("median")).tolist() == [3.0, 0.5]


def test_trimmed_mean_drops_trim_from_each_side() -> None:
    # coordinate 0: -1 [1 3] 10 -> 2; coordinate 1: -2 [0 1] 5 -> 0.5
    assert aggregate(REG, G, [A, B, C, D], Rule("trimmed_mean", trim=1)).tolist() == [3.0, 0.5]
    # trim 0 is the plain mean: [13/4, 4/4]
    assert aggregate(REG, G, [A, B, C, D], Rule("trimmed_mean")).tolist() == [4.25, 1.0]
    # A round that closed short of 2 trim + 1 updates is trimmed less: the
    # median (it was refused, and the round could never close).
    for ups in ([A, B], [A, B, C], [A]):
        short = aggregate(REG, G, ups, Rule("trimmed_mean", trim=2))
        assert short.tolist() == aggregate(REG, G, ups, Rule("median")).tolist()


def test_order_of_arrival_does_not_matter() -> None:
    rng = random.Random(7)
    layout = Layout("sgd_classifier", 20, 5)
    g = np.random.default_rng(1).normal(size=layout.size)
    ups = [
        Update(key(i), g + np.random.default_rng(i).normal(size=layout.size), 10 + i)
        for i in range(7)
    ]
    for rule in (Rule("fedavg"), Rule("median", clip=3.0), Rule("trimmed_mean", 2, 3.0)):
        first = model_hash(layout, aggregate(layout, g, ups, rule))
        shuffled = ups[:]
        rng.shuffle(shuffled)
        assert model_hash(layout, aggregate(layout, g, shuffled, rule)) == first


def test_robust_rules_ignore_a_scaled_and_a_zero_update() -> None:
    layout = Layout("sgd_regressor", 3)
    g = np.array([1.0, 2.0, 3.0, 4.0])
    honest = [Update(key(i), g + 0.5 + 0.01 * i, 100) for i in range(4)]
    scaled = Update(key(9), g - 10.0 * 0.5, 100)  # -10x an honest delta
    zeros = Update(key(8), np.zeros(4), 100)  # "no training", and a big jump back to 0
    for attacker in (scaled, zeros):
        for rule in (Rule("median", clip=100.0), Rule("trimmed_mean", 1, 100.0)):
            result = aggregate(layout, g, [*honest, attacker], rule)
            assert np.all(np.abs(result - (g + 0.5)) <= 0.03), (rule, attacker, result)
    # Plain averaging is dragged the wrong way by the scaled update: what the rules prevent.
    dragged = aggregate(layout, g, [*honest, scaled], Rule("fedavg"))
    assert np.all(dragged < g)


def test_clipping_scales_to_the_bound() -> None:
    assert clip(np.array([3.0, 4.0]), 1.0).tolist() == pytest.approx([0.6, 0.8])
    assert clip(np.array([0.3, 0.4]), 1.0).tolist() == [0.3, 0.4]
    with pytest.raises(ValidationError, match="bad-update-value"):
        clip(np.array([1e200, 1e200]), 1.0)
    # The rule clips deltas, not parameters: [3, 4] from G is [0.6, 0.8] from G.
    far = Update(key(1), G + np.array([3.0, 4.0]), 1)
    assert aggregate(REG, G, [far], Rule("fedavg", clip=1.0)) == pytest.approx([1.6, 0.8])


@settings(max_examples=200, deadline=None)
@given(
    arrays(np.float64, st.integers(1, 50), elements=st.floats(-1e100, 1e100)),
    st.floats(1e-6, 1e6),
)
def test_clipped_norm_never_exceeds_the_bound(v: np.ndarray, bound: float) -> None:
    assert l2_norm(clip(v, bound)) <= bound * (1 + 1e-12)


def test_updates_are_checked() -> None:
    cases = [
        ([upd(1, [1, 2]), upd(1, [3, 4])], "bad-update-duplicate"),
        ([Update(key(1), np.array([1.0, 2.0]), 0)], "bad-update-value"),
        ([Update(key(1), np.array([1.0, 2.0]), 2.5)], "bad-update-value"),  # type: ignore[arg-type]
        ([Update(key(1), np.array([1.0, np.nan]), 1)], "bad-update-value"),
        ([Update(key(1), np.array([1.0, 2.0, 3.0]), 1)], "bad-update-shape"),
        ([Update(b"short", np.array([1.0, 2.0]), 1)], "bad-update-shape"),
        ([], "federated-too-few-updates"),
    ]
    for updates, reason in cases:
        with pytest.raises(ValidationError) as err:
            aggregate(REG, G, updates, Rule("fedavg"))
        assert err.value.reason == reason
    with pytest.raises(ValidationError) as err:
        aggregate(REG, G, [A], Rule("sum"))
    assert err.value.reason == "federated-aggregation"


def test_statistics_merge_by_sum_and_are_checked() -> None:
    nb = Layout("gaussian_nb", 1, 2)  # counts (2), sums (2), squares (2)
    a = Update(key(1), np.array([2.0, 1.0, 3.0, 4.0, 5.0, 16.0]), 3)
    b = Update(key(2), np.array([1.0, 0.0, 2.0, 0.0, 4.0, 0.0]), 1)
    merged = aggregate(nb, np.zeros(6), [a, b], Rule("sum"))
    assert merged.tolist() == [3.0, 1.0, 5.0, 4.0, 9.0, 16.0]
    with pytest.raises(ValidationError) as err:
        aggregate(nb, np.zeros(6), [a, b], Rule("fedavg"))
    assert err.value.reason == "federated-aggregation"
    lying = Update(key(3), np.array([1.5, 0.0, 2.0, 0.0, 4.0, 0.0]), 1)
    with pytest.raises(ValidationError, match="bad-update-value"):
        aggregate(nb, np.zeros(6), [a, lying], Rule("sum"))
    wrong_count = Update(key(3), np.array([1.0, 0.0, 2.0, 0.0, 4.0, 0.0]), 5)
    with pytest.raises(ValidationError, match="bad-update-value"):
        aggregate(nb, np.zeros(6), [a, wrong_count], Rule("sum"))
    negative = Update(key(3), np.array([1.0, 0.0, 2.0, 0.0, -4.0, 0.0]), 1)
    with pytest.raises(ValidationError, match="bad-update-value"):
        aggregate(nb, np.zeros(6), [a, negative], Rule("sum"))
    ols = Layout("linear_regression", 1)  # [[n, sx], [sx, sxx]], [sy, sxy]
    good = Update(key(1), np.array([2.0, 3.0, 3.0, 5.0, 1.0, 2.0]), 2)
    assert aggregate(ols, np.zeros(6), [good], Rule("sum")).tolist() == good.vector.tolist()
    for bad in ([2.0, 3.0, 3.0, -5.0, 1.0, 2.0], [2.5, 3.0, 3.0, 5.0, 1.0, 2.0]):
        with pytest.raises(ValidationError, match="bad-update-value"):
            aggregate(ols, np.zeros(6), [Update(key(1), np.array(bad), 2)], Rule("sum"))


def test_a_norm_that_overflows_is_refused() -> None:
    with pytest.raises(ValidationError, match="bad-update-value"):
        clip(np.full(4, 1e154), 1.0)  # squares finite, their sum is not
