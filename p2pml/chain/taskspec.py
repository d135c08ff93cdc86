"""``TaskSpec``: what a task asks trainers to do, and its wire form.

The chain wraps a TaskSpec with bounty, deadline, publisher key, nonce and
signature. ``to_wire`` gives msgpack-friendly primitives in the canonical
layout documented in ``docs/tasks.md``; ``from_wire`` accepts exactly that
layout (``DecodeError`` otherwise); ``validate`` applies the task rules
(``ValidationError`` with a stable reason). Consensus code: no sklearn, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from p2pml.chain.allowlist import KINDS, ParamValue, check_params, get_estimator
from p2pml.chain.fedspec import FederatedSpec
from p2pml.chain.metrics import get_metric
from p2pml.cidv0 import is_cidv0
from p2pml.errors import DecodeError, ValidationError

WIRE_VERSION: Final = 1
FORMATS: Final = ("csv",)
MAX_ROUNDS: Final = 64
MAX_FEATURES: Final = 4096
MAX_NAME_LEN: Final = 256
MAX_PARAMS: Final = 64
MIN_HOLDOUT: Final = 0.01
MAX_HOLDOUT: Final = 0.5

#: Keys of the wire dict, in canonical (sorted) order.
WIRE_KEYS: Final = (
    "dataset_cid",
    "features",
    "format",
    "holdout_fraction",
    "kind",
    "metric",
    "model",
    "params",
    "partition_fraction",
    "rounds",
    "target",
    "v",
)
#: Present only in a federated task's spec (docs/federated.md, "On the chain"),
#: so the encoding of every other task is unchanged.
FEDERATED_KEY: Final = "federated"

Params = tuple[tuple[str, ParamValue], ...]


def _normalise_params(params: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> Params:
    items = list(params.items()) if isinstance(params, Mapping) else list(params)
    out: list[tuple[str, Any]] = []
    for item in items:
        name, value = item
        if isinstance(value, list):
            value = tuple(value)
        out.append((name, value))
    # Sort by name only; duplicates are kept so validate() can refuse them.
    return tuple(sorted(out, key=lambda kv: str(kv[0])))


@dataclass(frozen=True)
class TaskSpec:
    """The training part of a task. ``params`` is stored sorted by name."""

    dataset_cid: str
    target: str
    model: str
    kind: str
    metric: str
    params: Params = ()
    features: tuple[str, ...] = ()  # empty: every column except the target
    format: str = "csv"
    holdout_fraction: float = 0.2
    partition_fraction: float = 0.5  # of ALL rows; holdout + partition <= 1
    rounds: int = 1
    federated: FederatedSpec | None = None
    _param_map: Mapping[str, ParamValue] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", _normalise_params(self.params))
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "_param_map", dict(self.params))

    @property
    def param_dict(self) -> dict[str, ParamValue]:
        return dict(self._param_map)

    # -- rules -------------------------------------------------------------

    def validate(self) -> None:
        """Raise ``ValidationError`` with a stable reason if a rule fails."""
        if self.format not in FORMATS:
            raise ValidationError("bad-task-format", f"format {self.format!r} (want csv)")
        if not is_cidv0(self.dataset_cid):
            raise ValidationError("bad-task-cid", f"{self.dataset_cid!r} is not a CIDv0 (Qm...)")
        if not _good_name(self.target):
            raise ValidationError("bad-task-target", "target must be a 1..256 char column name")
        self._validate_features()
        if self.kind not in KINDS:
            raise ValidationError("bad-task-kind", f"kind {self.kind!r} not in {KINDS}")
        est = get_estimator(self.model)
        if est.kind != self.kind:
            raise ValidationError(
                "bad-task-kind", f"{self.model} is a {est.kind} estimator, task says {self.kind}"
            )
        metric = get_metric(self.metric)
        if metric.kind != self.kind:
            raise ValidationError(
                "bad-task-metric", f"{self.metric} is a {metric.kind} metric, task is {self.kind}"
            )
        self._validate_params()
        self._validate_fractions()
        if (
            isinstance(self.rounds, bool)
            or not isinstance(self.rounds, int)
            or not 1 <= self.rounds <= MAX_ROUNDS
        ):
            raise ValidationError("bad-task-rounds", f"rounds must be 1..{MAX_ROUNDS}")
        if self.federated is not None:
            self.federated.validate(self.model, len(self.features), self.rounds)

    def _validate_features(self) -> None:
        if len(self.features) > MAX_FEATURES:
            raise ValidationError("bad-task-features", f"more than {MAX_FEATURES} features")
        for f in self.features:
            if not _good_name(f):
                raise ValidationError("bad-task-features", f"bad feature name {f!r}")
        if len(set(self.features)) != len(self.features):
            raise ValidationError("bad-task-features", "duplicate feature names")
        if self.target in self.features:
            raise ValidationError(
                "bad-task-features", f"the target {self.target!r} is also a feature"
            )

    def _validate_params(self) -> None:
        if len(self.params) > MAX_PARAMS:
            raise ValidationError("bad-task-param", f"more than {MAX_PARAMS} parameters")
        names = [name for name, _ in self.params]
        for name in names:
            if not isinstance(name, str):
                raise ValidationError("bad-task-param", f"parameter name {name!r} not a string")
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValidationError("bad-task-param", f"duplicate parameter {dup[0]!r}")
        check_params(self.model, self._param_map)

    def _validate_fractions(self) -> None:
        h, p = self.holdout_fraction, self.partition_fraction
        for name, v in (("holdout_fraction", h), ("partition_fraction", p)):
            if isinstance(v, bool) or not isinstance(v, float) or not math.isfinite(v):
                raise ValidationError("bad-task-fraction", f"{name} must be a finite float")
            if not 0.0 < v < 1.0:
                raise ValidationError("bad-task-fraction", f"{name} must be in (0, 1)")
        if not MIN_HOLDOUT <= h <= MAX_HOLDOUT:
            raise ValidationError(
                "bad-task-fraction", f"holdout_fraction must be in [{MIN_HOLDOUT}, {MAX_HOLDOUT}]"
            )
        if h + p > 1.0:
            raise ValidationError(
                "bad-task-fraction", "holdout_fraction + partition_fraction must be <= 1"
            )

    # -- wire --------------------------------------------------------------

    def to_wire(self) -> dict[str, Any]:
        """Canonical msgpack-friendly dict (see docs/tasks.md)."""
        wire = {
            "dataset_cid": self.dataset_cid,
            "features": list(self.features),
            "format": self.format,
            "holdout_fraction": float(self.holdout_fraction),
            "kind": self.kind,
            "metric": self.metric,
            "model": self.model,
            "params": [[name, _wire_value(value)] for name, value in self.params],
            "partition_fraction": float(self.partition_fraction),
            "rounds": self.rounds,
            "target": self.target,
            "v": WIRE_VERSION,
        }
        if self.federated is not None:
            wire[FEDERATED_KEY] = self.federated.to_wire()
        return dict(sorted(wire.items()))

    @classmethod
    def from_wire(cls, obj: object) -> TaskSpec:
        """Decode the canonical layout; ``DecodeError`` on any schema/type problem.

        Decoding checks shape and types only; call ``validate()`` for the rules.
        """
        if not isinstance(obj, Mapping):
            raise DecodeError("task spec must be a map")
        keys = set(obj) - {FEDERATED_KEY}
        if keys != set(WIRE_KEYS):
            missing = sorted(str(k) for k in set(WIRE_KEYS) - keys)
            extra = sorted(str(k) for k in keys - set(WIRE_KEYS))
            raise DecodeError(f"task spec keys: missing {missing}, unexpected {extra}")
        if _typed(obj, "v", int) != WIRE_VERSION:
            raise DecodeError(f"task spec version {obj['v']!r} unsupported")
        features = _seq(obj["features"], "features")
        for f in features:
            if not isinstance(f, str):
                raise DecodeError("features must be strings")
        params: list[tuple[str, ParamValue]] = []
        for item in _seq(obj["params"], "params"):
            pair = _seq(item, "params item")
            if len(pair) != 2 or not isinstance(pair[0], str):
                raise DecodeError("each param must be [name, value]")
            params.append((pair[0], _decode_value(pair[0], pair[1])))
        names = [n for n, _ in params]
        if names != sorted(names):
            raise DecodeError("params must be sorted by name")
        return cls(
            dataset_cid=_typed(obj, "dataset_cid", str),
            target=_typed(obj, "target", str),
            model=_typed(obj, "model", str),
            kind=_typed(obj, "kind", str),
            metric=_typed(obj, "metric", str),
            params=tuple(params),
            features=tuple(features),
            format=_typed(obj, "format", str),
            holdout_fraction=_typed(obj, "holdout_fraction", float),
            partition_fraction=_typed(obj, "partition_fraction", float),
            rounds=_typed(obj, "rounds", int),
            federated=(
                FederatedSpec.from_wire(obj[FEDERATED_KEY]) if FEDERATED_KEY in obj else None
            ),
        )


def _good_name(name: object) -> bool:
    return isinstance(name, str) and 0 < len(name) <= MAX_NAME_LEN


def _wire_value(value: ParamValue) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _typed(obj: Mapping[Any, Any], key: str, typ: type) -> Any:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, typ):
        raise DecodeError(f"{key} must be {typ.__name__}, got {type(value).__name__}")
    return value


def _seq(value: object, what: str) -> list[Any] | tuple[Any, ...]:
    if not isinstance(value, list | tuple):
        raise DecodeError(f"{what} must be an array")
    return value


def _decode_value(name: str, value: object) -> ParamValue:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return tuple(value)
    raise DecodeError(f"param {name!r}: value must be a primitive or an array of ints")
