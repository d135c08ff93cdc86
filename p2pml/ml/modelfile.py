"""A downloaded model on the user's disk: the artifact and its model card.

``p2pml model get`` writes two files: ``FILE``, the skops artifact exactly as
stored in IPFS (its bytes hash to the result's model CID), and ``FILE.json``,
the *model card*: which task and result it comes from, the estimator and its
parameters, the protocol ``random_state``, the target, the task's feature
columns in order and, for string labels, each class code's label name. The
artifact itself cannot carry these (its bytes are fixed by the CID the chain
records, and the models are fitted on bare arrays and label codes), so the
card does; ``predict`` needs it to pick and order the CSV's columns and to
name its classes.

Loading always goes through the project's strict reader (never pickle):

* with a card, :func:`p2pml.ml.artifact.load_model` checks the artifact is
  exactly the card's estimator with exactly its parameters and feature count;
* without a card, the estimator is recognised from the artifact's root type,
  which must be one of the allowlisted estimators, and the artifact is read
  with that estimator's trusted types only.

Anything else raises :class:`ModelArtifactError` (a file that is not a safe
artifact) or :class:`InputError` (a card that does not fit): one clear line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from p2pml.errors import InputError, ModelArtifactError
from p2pml.ml.artifact import TRUSTED_TYPES, _open, load_model
from p2pml.ml.estimators import ESTIMATORS, ParamValue, estimator_class
from p2pml.ml.skops_reader import read

CARD_VERSION: Final = 1
CARD_SUFFIX: Final = ".json"


@dataclass(frozen=True)
class ModelCard:
    """What a model was trained for; written beside the artifact as JSON."""

    model: str  # allowlisted estimator name, e.g. "ridge"
    kind: str
    target: str
    features: tuple[str, ...]
    params: Mapping[str, ParamValue] = field(default_factory=dict)
    random_state: int | None = None
    metric: str = ""
    metric_value: float | None = None
    task: str = ""
    result: str = ""
    model_cid: str = ""
    #: Classification with string labels: the label of each class code (the
    #: model is fitted on codes, the rank of a label among the sorted labels).
    labels: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "v": CARD_VERSION,
            "task": self.task,
            "result": self.result,
            "model_cid": self.model_cid,
            "model": self.model,
            "kind": self.kind,
            "params": dict(self.params),
            "random_state": self.random_state,
            "target": self.target,
            "features": list(self.features),
            "metric": self.metric,
            "metric_value": self.metric_value,
            "labels": list(self.labels),
        }

    @classmethod
    def from_json(cls, data: Any, where: str = "model card") -> ModelCard:
        if not isinstance(data, dict) or data.get("v") != CARD_VERSION:
            raise InputError(f"{where}: not a p2pml model card (version {CARD_VERSION})")
        try:
            features = data["features"]
            if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
                raise TypeError("features must be a list of column names")
            if not features:
                raise TypeError("features is empty")
            model = data["model"]
            if model not in ESTIMATORS:
                raise TypeError(f"model {model!r} is not an allowlisted estimator")
            params = data.get("params") or {}
            if not isinstance(params, dict):
                raise TypeError("params must be an object")
            labels = data.get("labels") or []
            if not isinstance(labels, list) or not all(isinstance(v, str) for v in labels):
                raise TypeError("labels must be a list of strings")
            rs = data.get("random_state")
            if rs is not None and type(rs) is not int:
                raise TypeError("random_state must be an integer")
            return cls(
                model=model,
                kind=str(data["kind"]),
                target=str(data["target"]),
                features=tuple(features),
                params={k: _param(v) for k, v in params.items()},
                random_state=rs,
                metric=str(data.get("metric", "")),
                metric_value=data.get("metric_value"),
                task=str(data.get("task", "")),
                result=str(data.get("result", "")),
                model_cid=str(data.get("model_cid", "")),
                labels=tuple(labels),
            )
        except KeyError as exc:
            raise InputError(f"{where}: missing field {exc.args[0]!r}") from None
        except TypeError as exc:
            raise InputError(f"{where}: {exc}") from None


def _param(value: Any) -> Any:
    # JSON has no tuples; the task's params hold tuples for sequences.
    return tuple(value) if isinstance(value, list) else value


def card_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + CARD_SUFFIX)


def read_card(path: Path) -> ModelCard:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a p2pml model card (not UTF-8 JSON)") from None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise InputError(f"{path}: not a p2pml model card (not JSON)") from None
    return ModelCard.from_json(data, str(path))


def write_card(path: Path, card: ModelCard) -> None:
    path.write_text(json.dumps(card.to_json(), indent=2, sort_keys=True) + "\n")


def estimator_of(data: bytes) -> str:
    """The allowlisted estimator an artifact claims to be (its root type)."""
    _members, schema = _open(data)
    if not isinstance(schema, dict):
        raise ModelArtifactError("not a skops artifact (no root object)")
    root = f"{schema.get('__module__')}.{schema.get('__class__')}"
    for name in ESTIMATORS:
        cls = estimator_class(name)
        if f"{cls.__module__}.{cls.__qualname__}" == root:
            return name
    raise ModelArtifactError(f"{root[:120]} is not an allowlisted estimator")


@dataclass(frozen=True)
class LoadedModel:
    estimator: str
    model: Any
    card: ModelCard | None

    @property
    def n_features(self) -> int:
        return int(getattr(self.model, "n_features_in_", 0))

    @property
    def classes(self) -> list[Any] | None:
        """The model's classes, by label name where the card names them."""
        classes = getattr(self.model, "classes_", None)
        return None if classes is None else [self.label(c) for c in classes]

    def label(self, code: Any) -> Any:
        """The label name of a class code (the code itself when unnamed)."""
        labels = self.card.labels if self.card is not None else ()
        code = _plain(code)
        if labels and isinstance(code, int) and 0 <= code < len(labels):
            return labels[code]
        return code


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def load_bytes(data: bytes, card: ModelCard | None = None) -> LoadedModel:
    """Load artifact bytes safely (see the module docstring for the checks)."""
    if card is not None:
        if card.random_state is None:
            raise InputError("model card has no random_state: fetch it with p2pml model get")
        model = load_model(
            data, card.model, card.params, card.random_state, n_features=len(card.features)
        )
        return LoadedModel(card.model, model, card)
    name = estimator_of(data)
    members, schema = _open(data)
    loaded = read(schema, members, TRUSTED_TYPES[name], name)
    model = loaded.obj
    if type(model) is not estimator_class(name):
        raise ModelArtifactError(f"artifact root is a {type(model).__name__}, not {name}")
    n_features = getattr(model, "n_features_in_", None)
    if type(n_features) is not int or n_features < 1:
        raise ModelArtifactError("the model is not fitted (no n_features_in_)")
    if loaded.max_feature >= n_features:
        raise ModelArtifactError("a tree splits on a feature the model does not have")
    return LoadedModel(name, model, None)


def load_file(path: Path, use_card: bool = True) -> LoadedModel:
    """Load ``path`` and, if present beside it, its model card."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    cpath = card_path(path)
    card = read_card(cpath) if use_card and cpath.exists() else None
    try:
        return load_bytes(data, card)
    except ModelArtifactError as exc:
        raise ModelArtifactError(f"{path}: {exc.detail}") from None
