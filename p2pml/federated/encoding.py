"""The canonical bytes of a federated model and the hash a block commits.

Layout (docs/federated.md, "Canonical encoding")::

    b"P2FL"  u8 version (1)  u8 len(name)  name (ASCII)
    u32 BE n_features  u32 BE n_classes
    MLPs only: u8 number of hidden layers, u32 BE each hidden layer size
    size x float64 little-endian

No NaN, no infinity, no negative zero: each value has exactly one encoding,
so equal models have equal bytes and equal hashes. The same bytes are the
artifact of an update and of a global model; nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Final

import numpy as np
import numpy.typing as npt

from p2pml.errors import ValidationError
from p2pml.federated.layout import MLP, Layout

Vector = npt.NDArray[np.float64]

MAGIC: Final = b"P2FL"
VERSION: Final = 1
_DIMS: Final = struct.Struct(">II")


def canonical(vector: Vector) -> Vector:
    """A float64 copy with negative zero replaced by positive zero (``x + 0.0``)."""
    return np.asarray(vector, dtype=np.float64) + 0.0


def check_vector(layout: Layout, vector: Vector) -> None:
    """``bad-update-shape`` unless a flat vector of ``layout.size`` values;
    ``bad-update-value`` if any value is NaN or infinite."""
    if vector.dtype != np.float64 or vector.ndim != 1 or vector.shape[0] != layout.size:
        raise ValidationError(
            "bad-update-shape",
            f"expected {layout.size} float64 values, got {vector.dtype} {vector.shape}",
        )
    if not np.isfinite(vector).all():
        raise ValidationError("bad-update-value", "NaN or infinite parameter")


def _header(layout: Layout) -> bytes:
    name = layout.estimator.encode("ascii")
    head = (
        MAGIC + bytes([VERSION, len(name)]) + name + _DIMS.pack(layout.n_features, layout.n_classes)
    )
    if layout.family == MLP:
        head += bytes([len(layout.hidden)]) + b"".join(struct.pack(">I", h) for h in layout.hidden)
    return head


def encode(layout: Layout, vector: Vector) -> bytes:
    """The canonical bytes of ``vector`` (checked against ``layout``)."""
    vector = canonical(vector)
    check_vector(layout, vector)
    return _header(layout) + vector.astype("<f8").tobytes()


def decode(layout: Layout, data: bytes) -> Vector:
    """The vector of canonical ``data`` for ``layout``, or a ValidationError.

    A header or length that does not match the task is ``bad-update-shape``;
    NaN, infinity or a negative zero is ``bad-update-value``.
    """
    header = _header(layout)
    if not data.startswith(header) or len(data) != len(header) + 8 * layout.size:
        raise ValidationError(
            "bad-update-shape",
            f"not a {layout.estimator} model of {layout.n_features} features, "
            f"{layout.n_classes} classes ({len(data)} bytes)",
        )
    vector = np.frombuffer(data, dtype="<f8", offset=len(header)).astype(np.float64)
    check_vector(layout, vector)
    if np.signbit(vector[vector == 0.0]).any():
        raise ValidationError("bad-update-value", "negative zero is not canonical")
    return vector


def model_hash(layout: Layout, vector: Vector) -> bytes:
    """SHA-256 of the canonical encoding: what the block closing a round commits."""
    return hashlib.sha256(encode(layout, vector)).digest()
