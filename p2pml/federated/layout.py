"""Which estimators federate, and the shape of their parameter vector.

Every federated model, global or update, is one flat float64 vector whose
layout depends only on the estimator name, the number of features ``d`` and
the task's class list (``K`` classes); docs/federated.md specifies it:

* ``linear`` (sgd_classifier, logistic_regression, sgd_regressor): ``coef_``
  row-major then ``intercept_``; ``m`` rows, ``m = 1`` for a regressor or a
  binary classifier, else ``K``.
* ``nb`` (gaussian_nb): sufficient statistics per class, merged by summing:
  counts (K), then the per-class feature sums (K x d), then the per-class sums
  of squares (K x d).
* ``ols`` (linear_regression, ridge): ``A^T A`` ((d+1) x (d+1)) then ``A^T y``
  (d+1), where ``A`` is the data with a leading column of ones.
* ``mlp`` (mlp_classifier, mlp_regressor): with layer units
  ``u = [d, *hidden_layer_sizes, out]`` (``out`` = K for K > 2 classes, else 1):
  every ``coefs_[i]`` (``u[i] x u[i+1]``, row-major) in layer order, then every
  ``intercepts_[i]`` (``u[i+1]``): scikit-learn's own packing order.

Tree models and k-NN cannot be averaged (``federated-estimator``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from p2pml.errors import ValidationError

LINEAR: Final = "linear"
NB: Final = "nb"
OLS: Final = "ols"
MLP: Final = "mlp"

#: estimator name -> family. Everything else is refused.
FAMILIES: Final = {
    "sgd_classifier": LINEAR,
    "sgd_regressor": LINEAR,
    "logistic_regression": LINEAR,
    "gaussian_nb": NB,
    "linear_regression": OLS,
    "ridge": OLS,
    "mlp_classifier": MLP,
    "mlp_regressor": MLP,
}
CLASSIFIERS: Final = frozenset(
    {"sgd_classifier", "logistic_regression", "gaussian_nb", "mlp_classifier"}
)
#: Families whose rounds average parameters (the others merge statistics exactly).
AVERAGED: Final = frozenset({LINEAR, MLP})
#: scikit-learn's default hidden_layer_sizes, used when a task leaves it unset.
DEFAULT_HIDDEN: Final = (100,)
MAX_HIDDEN_LAYERS: Final = 8

#: Bounds that keep a vector small enough to check and hash cheaply.
MAX_FEATURES: Final = 100_000
MAX_CLASSES: Final = 1_000
MAX_SIZE: Final = 10_000_000


def family_of(estimator: str) -> str:
    """The family of ``estimator`` or ``ValidationError("federated-estimator")``."""
    family = FAMILIES.get(estimator)
    if family is None:
        raise ValidationError(
            "federated-estimator",
            f"{estimator!r} cannot be federated (supported: {', '.join(sorted(FAMILIES))})",
        )
    return family


@dataclass(frozen=True)
class Layout:
    """The parameter vector of one federated task."""

    estimator: str
    n_features: int
    n_classes: int = 0  # K; 0 for a regressor
    hidden: tuple[int, ...] = ()  # MLP hidden layer sizes; () for every other family

    def __post_init__(self) -> None:
        family = family_of(self.estimator)
        if (family == MLP) != bool(self.hidden) or len(self.hidden) > MAX_HIDDEN_LAYERS:
            raise ValidationError("bad-update-shape", f"hidden layers {self.hidden!r}")
        if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.hidden):
            raise ValidationError("bad-update-shape", f"hidden layers {self.hidden!r}")
        if not 1 <= self.n_features <= MAX_FEATURES:
            raise ValidationError("bad-update-shape", f"{self.n_features} features")
        if self.estimator in CLASSIFIERS:
            if not 2 <= self.n_classes <= MAX_CLASSES:
                raise ValidationError("bad-update-shape", f"{self.n_classes} classes")
        elif self.n_classes != 0:
            raise ValidationError("bad-update-shape", f"a regressor with {self.n_classes} classes")
        if self.size > MAX_SIZE:
            raise ValidationError("bad-update-shape", f"{self.size} parameters")

    @property
    def encoded_bytes(self) -> int:
        """Length of this layout's canonical encoding (docs/federated.md §4): the
        header (magic, version, name, d, K, MLP hidden sizes) then 8 bytes a value.
        Pure arithmetic, so consensus can bound artifacts without numpy."""
        head = len(b"P2FL") + 2 + len(self.estimator) + 8
        if self.family == MLP:
            head += 1 + 4 * len(self.hidden)
        return head + 8 * self.size

    @property
    def family(self) -> str:
        return FAMILIES[self.estimator]

    @property
    def rows(self) -> int:
        """``m``: rows of ``coef_`` (linear family only)."""
        return self.n_classes if self.n_classes > 2 else 1

    @property
    def units(self) -> tuple[int, ...]:
        """MLP layer widths: inputs, hidden layers, outputs."""
        return (self.n_features, *self.hidden, self.n_classes if self.n_classes > 2 else 1)

    @property
    def size(self) -> int:
        d, k = self.n_features, self.n_classes
        if self.family == MLP:
            u = self.units
            return sum(a * b for a, b in itertools.pairwise(u)) + sum(u[1:])
        if self.family == LINEAR:
            return self.rows * (d + 1)
        if self.family == NB:
            return k * (1 + 2 * d)
        return (d + 1) * (d + 1) + (d + 1)


def task_layout(
    estimator: str, n_features: int, n_classes: int, params: Mapping[str, object]
) -> Layout:
    """The layout of a task: for an MLP its ``hidden_layer_sizes`` (default (100,))."""
    hidden: tuple[int, ...] = ()
    if family_of(estimator) == MLP:
        raw = params.get("hidden_layer_sizes", DEFAULT_HIDDEN)
        values = tuple(raw) if isinstance(raw, list | tuple) else (raw,)
        if not all(isinstance(h, int) for h in values):
            raise ValidationError("bad-task-param", f"hidden_layer_sizes {raw!r}")
        hidden = tuple(int(h) for h in values)
    return Layout(estimator, n_features, n_classes, hidden)
