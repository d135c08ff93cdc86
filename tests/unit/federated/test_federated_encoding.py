"""Canonical encoding and hash: one encoding per model, strict decoding."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from p2pml.errors import ValidationError
from p2pml.federated.encoding import decode, encode, model_hash
from p2pml.federated.layout import Layout

LAYOUT = Layout("sgd_classifier", 3, 4)  # 4 rows x (3 + 1)


def test_layout_sizes() -> None:
    assert LAYOUT.size == 16
    assert Layout("sgd_classifier", 3, 2).size == 4  # binary: one row
    assert Layout("sgd_regressor", 3).size == 4
    assert Layout("gaussian_nb", 3, 4).size == 4 * 7
    assert Layout("ridge", 3).size == 16 + 4


def test_encoding_is_header_then_float64_little_endian() -> None:
    v = np.arange(16, dtype=np.float64)
    data = encode(LAYOUT, v)
    header = b"P2FL\x01\x0esgd_classifier" + (3).to_bytes(4, "big") + (4).to_bytes(4, "big")
    assert data == header + v.astype("<f8").tobytes()
    assert model_hash(LAYOUT, v) == hashlib.sha256(data).digest()
    assert np.array_equal(decode(LAYOUT, data), v)


def test_negative_zero_encodes_as_positive_zero() -> None:
    v = np.zeros(16)
    w = -np.zeros(16)
    assert np.signbit(w).all()
    assert encode(LAYOUT, w) == encode(LAYOUT, v)
    assert model_hash(LAYOUT, w) == model_hash(LAYOUT, v)


def test_any_change_changes_the_hash() -> None:
    v = np.linspace(-1, 1, 16)
    w = v.copy()
    w[7] = np.nextafter(w[7], 2.0)
    assert model_hash(LAYOUT, v) != model_hash(LAYOUT, w)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d[:-8], "bad-update-shape"),
        (lambda d: d + bytes(8), "bad-update-shape"),
        (lambda d: d.replace(b"sgd_classifier", b"sgd_regressorX"), "bad-update-shape"),
        (lambda d: d[:-8] + np.float64(np.nan).tobytes(), "bad-update-value"),
        (lambda d: d[:-8] + np.float64(-np.inf).tobytes(), "bad-update-value"),
        (lambda d: d[:-8] + np.float64(-0.0).tobytes(), "bad-update-value"),
    ],
)
def test_decode_refuses_with_reasons(mutate: object, reason: str) -> None:
    data = encode(LAYOUT, np.ones(16))
    with pytest.raises(ValidationError) as err:
        decode(LAYOUT, mutate(data))  # type: ignore[operator]
    assert err.value.reason == reason


def test_encode_refuses_bad_vectors() -> None:
    with pytest.raises(ValidationError, match="bad-update-shape"):
        encode(LAYOUT, np.ones(15))
    bad = np.ones(16)
    bad[3] = np.inf
    with pytest.raises(ValidationError, match="bad-update-value"):
        encode(LAYOUT, bad)


@pytest.mark.parametrize(
    "estimator", ["random_forest_classifier", "decision_tree_regressor", "knn_classifier", "lasso"]
)
def test_unfederatable_estimators_are_refused(estimator: str) -> None:
    with pytest.raises(ValidationError) as err:
        Layout(estimator, 3, 2)
    assert err.value.reason == "federated-estimator"
