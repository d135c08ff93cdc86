"""Fitted models as bytes in a safe format (skops), and their checked loading.

A model from a peer is never unpickled. The artifact is a skops zip; loading:

1. checks the container (zip magic, member count, uncompressed size: no zip
   bombs, a ``schema.json``, only ``.npy`` members besides it);
2. builds the object with :mod:`p2pml.ml.skops_reader`, which refuses any
   type that is not on the explicit trusted list of the task's estimator (our
   own list, stricter than skops' defaults) and any skops loader it does not
   implement, naming the offender, before importing anything; and checks the
   node arrays of every tree (several times faster than ``skops.io.loads``,
   which validators would otherwise pay per result);
3. checks the object is exactly the task's estimator class, that its
   parameters equal the task's plus the protocol ``random_state``, and that
   no tree splits on a feature the model does not have.

Writing uses ``skops.io.dumps``. Worker-side only (imports sklearn lazily).
"""

from __future__ import annotations

import json
import numbers
import struct
import zipfile
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from p2pml.errors import ModelArtifactError
from p2pml.ml.budgets import MAX_SCHEMA_BYTES
from p2pml.ml.estimators import ESTIMATORS, ParamValue, estimator_class, protocol_params
from p2pml.ml.skops_reader import read, read_members

MAX_ARTIFACT_BYTES: Final = 256 * 1024**2
MAX_UNPACKED_BYTES: Final = 1024**3
MAX_MEMBERS: Final = 100_000

_BASE: Final = (
    "builtins.dict",
    "builtins.list",
    "builtins.str",
    "builtins.tuple",
    "numpy.ndarray",
    "numpy.float64",
    "numpy.int64",
    "numpy.uint64",
)
_TREE_R: Final = ("sklearn.tree._classes.DecisionTreeRegressor", "sklearn.tree._tree.Tree")
_TREE_C: Final = ("sklearn.tree._classes.DecisionTreeClassifier", "sklearn.tree._tree.Tree")
_LOSS: Final = "sklearn._loss."
_REG_LOSSES: Final = (
    _LOSS + "_loss.CyAbsoluteError",
    _LOSS + "_loss.CyHalfSquaredError",
    _LOSS + "_loss.CyHuberLoss",
    _LOSS + "_loss.CyHalfPoissonLoss",
    _LOSS + "_loss.CyHalfGammaLoss",
    _LOSS + "link.IdentityLink",
    _LOSS + "link.LogLink",
    _LOSS + "link.Interval",
    _LOSS + "loss.AbsoluteError",
    _LOSS + "loss.HalfSquaredError",
    _LOSS + "loss.HuberLoss",
    _LOSS + "loss.HalfPoissonLoss",
    _LOSS + "loss.HalfGammaLoss",
)
_CLF_LOSSES: Final = (
    _LOSS + "_loss.CyHalfMultinomialLoss",
    _LOSS + "_loss.CyHalfBinomialLoss",
    _LOSS + "link.Interval",
    _LOSS + "link.MultinomialLogit",
    _LOSS + "link.LogitLink",
    _LOSS + "loss.HalfMultinomialLoss",
    _LOSS + "loss.HalfBinomialLoss",
)
_HGB: Final = (
    "numpy.random._generator.Generator",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
)
_KNN: Final = (
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.neighbors._kd_tree.KDTree",
)
_MLP: Final = (
    "numpy.random.mtrand.RandomState",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
)
_SGD_FAST: Final = "sklearn.linear_model._sgd_fast."
#: The loss object SGDClassifier keeps after fitting (built from plain numbers;
#: predict never calls it). SGDRegressor keeps none.
_SGD_CLF_LOSSES: Final = (
    *(_SGD_FAST + c for c in ("Hinge", "ModifiedHuber", "SquaredHinge")),
    _LOSS + "_loss.CyHalfBinomialLoss",
)
_EXTRA: Final[dict[str, tuple[str, ...]]] = {
    "linear_regression": ("sklearn.linear_model._base.LinearRegression",),
    "ridge": ("sklearn.linear_model._ridge.Ridge",),
    "lasso": ("sklearn.linear_model._coordinate_descent.Lasso",),
    "logistic_regression": ("sklearn.linear_model._logistic.LogisticRegression",),
    "decision_tree_regressor": _TREE_R,
    "decision_tree_classifier": _TREE_C,
    "random_forest_regressor": ("sklearn.ensemble._forest.RandomForestRegressor", *_TREE_R),
    "random_forest_classifier": ("sklearn.ensemble._forest.RandomForestClassifier", *_TREE_C),
    "gradient_boosting_regressor": (
        "sklearn.ensemble._gb.GradientBoostingRegressor",
        "sklearn.dummy.DummyRegressor",
        "numpy.random.mtrand.RandomState",
        *_TREE_R,
        *_REG_LOSSES,
    ),
    "gradient_boosting_classifier": (
        "sklearn.ensemble._gb.GradientBoostingClassifier",
        "sklearn.dummy.DummyClassifier",
        "numpy.random.mtrand.RandomState",
        *_TREE_R,
        *_CLF_LOSSES,
    ),
    "hist_gradient_boosting_regressor": (
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
        *_HGB,
        *_REG_LOSSES,
    ),
    "hist_gradient_boosting_classifier": (
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
        "sklearn.preprocessing._label.LabelEncoder",
        *_HGB,
        *_CLF_LOSSES,
    ),
    "knn_regressor": ("sklearn.neighbors._regression.KNeighborsRegressor", *_KNN),
    "knn_classifier": ("sklearn.neighbors._classification.KNeighborsClassifier", *_KNN),
    "mlp_regressor": ("sklearn.neural_network._multilayer_perceptron.MLPRegressor", *_MLP),
    "mlp_classifier": (
        "sklearn.neural_network._multilayer_perceptron.MLPClassifier",
        "sklearn.preprocessing._label.LabelBinarizer",
        *_MLP,
    ),
    "sgd_regressor": ("sklearn.linear_model._stochastic_gradient.SGDRegressor",),
    "sgd_classifier": (
        "sklearn.linear_model._stochastic_gradient.SGDClassifier",
        *_SGD_CLF_LOSSES,
    ),
    "gaussian_nb": ("sklearn.naive_bayes.GaussianNB",),
}

#: estimator name -> the only types its artifact may contain.
TRUSTED_TYPES: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {name: frozenset(_BASE + _EXTRA[name]) for name in ESTIMATORS}
)


def dump_model(model: Any) -> bytes:
    """Serialise a fitted model (skops, uncompressed: cheap to inspect)."""
    import skops.io as sio

    data: bytes = sio.dumps(model)
    return data


def artifact_types(data: bytes) -> tuple[frozenset[str], frozenset[str]]:
    """(types, skops loaders) named in the artifact's schema, after container checks."""
    _members, schema = _open(data)
    return _schema_types(schema)


def _open(
    data: bytes, max_schema_bytes: int = MAX_SCHEMA_BYTES
) -> tuple[dict[str, memoryview], Any]:
    """Container checks; the stored members and the parsed schema.

    The schema's size is checked before parsing it: ``json.loads`` costs
    ~20 bytes of memory per byte of skops JSON.
    """
    if len(data) > MAX_ARTIFACT_BYTES:
        raise ModelArtifactError(f"artifact is {len(data)} bytes > {MAX_ARTIFACT_BYTES}")
    if not data.startswith(b"PK\x03\x04"):
        raise ModelArtifactError("not a skops (zip) artifact")
    try:
        members, zf = read_members(data)
        with zf:
            infos = zf.infolist()
            if len(infos) > MAX_MEMBERS:
                raise ModelArtifactError("too many members")
            if sum(i.file_size for i in infos) > MAX_UNPACKED_BYTES:
                raise ModelArtifactError("unpacked size over the limit")
            if "schema.json" not in members:
                raise ModelArtifactError("no schema.json")
            if len(members["schema.json"]) > max_schema_bytes:
                raise ModelArtifactError(
                    f"schema.json is {len(members['schema.json'])} bytes > {max_schema_bytes}"
                )
            for name in members:
                if name != "schema.json" and (not name.endswith(".npy") or "/" in name):
                    raise ModelArtifactError(f"unexpected member {name!r}")
            schema = json.loads(bytes(members["schema.json"]))
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise ModelArtifactError(f"malformed artifact: {e}") from None
    except (ValueError, EOFError, NotImplementedError, RuntimeError, struct.error) as e:
        # RuntimeError covers RecursionError from a deeply nested schema.json.
        raise ModelArtifactError(f"malformed artifact: {type(e).__name__}: {e}") from None
    return members, schema


def _schema_types(schema: Any) -> tuple[frozenset[str], frozenset[str]]:
    types: set[str] = set()
    loaders: set[str] = set()
    _walk(schema, types, loaders, 0)
    return frozenset(types), frozenset(loaders)


def _walk(node: Any, types: set[str], loaders: set[str], depth: int) -> None:
    if depth > 200:
        raise ModelArtifactError("schema nested too deeply")
    if isinstance(node, dict):
        module, cls = node.get("__module__"), node.get("__class__")
        if module is not None or cls is not None:
            types.add(f"{module}.{cls}")
        if "__loader__" in node:
            loaders.add(str(node["__loader__"]))
        for value in node.values():
            _walk(value, types, loaders, depth + 1)
    elif isinstance(node, list):
        for value in node:
            _walk(value, types, loaders, depth + 1)


def load_model(
    data: bytes,
    estimator: str,
    params: Mapping[str, ParamValue],
    random_state: int,
    n_features: int | None = None,
    max_schema_bytes: int = MAX_SCHEMA_BYTES,
) -> Any:
    """Load an artifact that must be ``estimator`` with exactly these parameters.

    Raises ``ModelArtifactError`` (reason "bad-model-artifact") otherwise.
    """
    members, schema = _open(data, max_schema_bytes)
    # The reader refuses any type outside the estimator's trusted set, and any
    # loader it does not implement, before importing anything.
    loaded = read(schema, members, TRUSTED_TYPES[estimator], estimator)
    model = loaded.obj
    cls = estimator_class(estimator)
    if type(model) is not cls:
        raise ModelArtifactError(f"artifact is a {type(model).__name__}, task wants {cls.__name__}")
    want = cls(**protocol_params(estimator, params, random_state)).get_params(deep=False)
    try:
        got = model.get_params(deep=False)
    except Exception as e:
        raise ModelArtifactError(f"cannot read parameters: {e}") from None
    for key in sorted(set(want) | set(got)):
        if _norm(want.get(key, _MISSING)) != _norm(got.get(key, _MISSING)):
            raise ModelArtifactError(
                f"parameter {key!r} is {got.get(key, _MISSING)!r}, "
                f"task wants {want.get(key, _MISSING)!r}"
            )
    width = getattr(model, "n_features_in_", 0)
    # An int, not anything comparable: an array here made ``!=`` raise ValueError.
    if isinstance(width, bool) or not isinstance(width, numbers.Integral):
        raise ModelArtifactError("n_features_in_ is not an integer")
    width = int(width)
    if n_features is not None and width != n_features:
        raise ModelArtifactError(f"model is not fitted on {n_features} features")
    if loaded.max_feature >= width:
        raise ModelArtifactError("a tree splits on a feature the model does not have")
    return model


_MISSING: Final = "<missing>"


def _norm(value: Any) -> Any:
    # skops may restore tuples as lists; numpy scalars compare by value.
    if isinstance(value, list | tuple):
        return ("seq", tuple(_norm(v) for v in value))
    if hasattr(value, "item") and callable(value.item):
        try:
            return (type(value.item()).__name__, value.item())
        except (ValueError, TypeError):
            return ("obj", repr(value))
    return (type(value).__name__, value)
