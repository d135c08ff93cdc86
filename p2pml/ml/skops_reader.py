"""A strict, fast reader of skops artifacts (the loading half of the safe format).

Artifacts are written by ``skops.io.dumps`` (protocol 2, stored zip members).
Validators load one per result, and ``skops.io.loads`` spent 3-4x a model's
holdout prediction time in its generic audit tree and in ``np.load`` per
member (a 50-tree boosting model has ~300 arrays). This reader builds the
same objects in one pass over ``schema.json`` and is stricter:

* only the loaders p2pml models use; every node's ``module.class`` must be
  in the caller's trusted set before anything is imported or called;
* members must be stored (not compressed) and lie inside the artifact;
  arrays are read from them with numpy's header grammar (``literal_eval``,
  object dtypes refused) and copied, so nothing aliases the input;
* decision trees (``sklearn.tree._tree.Tree``), histogram-boosting
  predictors and KD/ball trees are checked for well-formed node arrays:
  children after their parent and inside the array, rows inside the data,
  features inside the model, no categorical features, bounded sizes.
  scikit-learn walks these without bounds checks, so a crafted tree could
  otherwise crash or hang a validator (skops leaves ``Tree`` untrusted by
  default for this reason). The largest feature index used is reported for
  the caller to compare with the model's input width.

The zip CRC is not checked: integrity comes from the artifact's CID.
Anything malformed raises :class:`ModelArtifactError`.
"""

from __future__ import annotations

import ast
import functools
import importlib
import io
import json
import math
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from p2pml.errors import ModelArtifactError

SKOPS_PROTOCOL: Final = 2
MAX_NPY_HEADER: Final = 10_000  # numpy's own default limit
MAX_DEPTH: Final = 200
#: Bytes of arrays and tree nodes an artifact may make us allocate (the unpacked
#: limit of the container; a Tree copies its state, so shared state counts again).
MAX_BUILT_BYTES: Final = 1024**3
#: Schema nodes an artifact may make us build. A memo reference (a repeated
#: ``__id__``) counts the whole object it stands for again, bytes and nodes:
#: thousands of references to one big tree cost what thousands of trees cost.
MAX_BUILT_NODES: Final = 2_000_000
BIT_GENERATORS: Final = frozenset({"MT19937", "PCG64", "PCG64DXSM", "Philox", "SFC64"})
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length
_NPY_MAGIC: Final = b"\x93NUMPY"
_TREE: Final = "sklearn.tree._tree.Tree"
#: Modules whose classes a ``LossNode`` may name (SGD keeps its own Cython losses).
_LOSS_MODULES: Final = ("sklearn._loss.", "sklearn.linear_model._sgd_fast.")
_HGB_PREDICTOR: Final = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"


@dataclass(frozen=True)
class Loaded:
    """The object read, and what the caller still has to check against the task."""

    obj: Any
    #: Largest feature index any tree in the model reads (-1: none).
    max_feature: int


def read_members(data: bytes) -> tuple[dict[str, memoryview], zipfile.ZipFile]:
    """Name -> content of every stored member (views into ``data``)."""
    view = memoryview(data)
    zf = zipfile.ZipFile(io.BytesIO(data))
    members: dict[str, memoryview] = {}
    for info in zf.infolist():
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            raise ModelArtifactError(f"member {info.filename!r} is compressed or encrypted")
        head = info.header_offset
        if head < 0 or head + _LOCAL_HEADER.size > len(data):
            raise ModelArtifactError("member header outside the artifact")
        sig, name_len, extra_len = _LOCAL_HEADER.unpack_from(data, head)
        start = head + _LOCAL_HEADER.size + name_len + extra_len
        end = start + info.compress_size
        if sig != b"PK\x03\x04" or info.compress_size != info.file_size or end > len(data):
            raise ModelArtifactError(f"member {info.filename!r} is malformed")
        if info.filename in members:
            raise ModelArtifactError(f"duplicate member {info.filename!r}")
        members[info.filename] = view[start:end]
    return members, zf


def read(schema: Any, members: dict[str, memoryview], trusted: frozenset[str], what: str) -> Loaded:
    """Build the object ``schema`` describes; types outside ``trusted`` (the
    trusted set of ``what``, for messages) and unknown loaders are refused."""
    if not isinstance(schema, dict) or schema.get("protocol") != SKOPS_PROTOCOL:
        raise ModelArtifactError(f"unsupported skops protocol (want {SKOPS_PROTOCOL})")
    builder = _Builder(members, trusted, what)
    try:
        obj = builder.build(schema, 0)
    except ModelArtifactError:
        raise
    except RecursionError:
        raise ModelArtifactError("schema nested too deeply") from None
    except Exception as e:  # malformed content surfaces as many types
        raise ModelArtifactError(f"cannot load: {type(e).__name__}: {e}") from None
    return Loaded(obj, builder.max_feature)


class _Builder:
    def __init__(self, members: dict[str, memoryview], trusted: frozenset[str], what: str) -> None:
        self._members = members
        self._trusted = trusted
        self._what = what
        self._memo: dict[int, Any] = {}
        self._building: set[int] = set()
        self._read: set[str] = set()
        self._budget = MAX_BUILT_BYTES
        self._nodes = MAX_BUILT_NODES
        # __id__ -> (bytes, nodes) its build spent, charged again per reference
        self._cost: dict[int, tuple[int, int]] = {}
        self.max_feature = -1
        self._loaders: dict[str, Callable[[dict[str, Any], int], Any]] = {
            "JsonNode": self._json,
            "DictNode": self._dict,
            "ListNode": self._list,
            "TupleNode": self._tuple,
            "TypeNode": self._type_node,
            "NdArrayNode": self._ndarray,
            "ObjectNode": self._object,
            "TreeNode": self._tree,
            "LossNode": self._reduce,
            "RandomStateNode": self._random_state,
            "RandomGeneratorNode": self._generator,
        }

    def build(self, node: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise ModelArtifactError("schema nested too deeply")
        if not isinstance(node, dict):
            raise ModelArtifactError("schema node is not an object")
        ident = node.get("__id__")
        # skops memoises by the dumped object's id: a repeated id is the same object.
        if ident is not None:
            if ident in self._memo:
                self._charge(*self._cost[ident])
                return self._memo[ident]
            if ident in self._building:
                raise ModelArtifactError("schema refers to an object inside itself")
            self._building.add(ident)
        self._charge(0, 1)
        spent = (self._budget, self._nodes)
        name = f"{node['__module__']}.{node['__class__']}"
        if name not in self._trusted:
            raise ModelArtifactError(f"untrusted types for {self._what}: {name}")
        kind = node["__loader__"]
        loader = self._loaders.get(kind)
        if loader is None:
            raise ModelArtifactError(f"untrusted skops loaders: {kind}")
        if kind == "LossNode" and not name.startswith(_LOSS_MODULES):
            # _reduce calls the class with artifact arguments: losses only.
            raise ModelArtifactError(f"{name} cannot be loaded as a loss")
        obj = loader(node, depth + 1)
        # Checked by what was built, not by the loader the node names.
        check = _checks().get(type(obj))
        if check is not None:
            check(self, obj)
        if ident is not None:
            self._building.discard(ident)
            self._memo[ident] = obj
            self._cost[ident] = (spent[0] - self._budget, spent[1] - self._nodes + 1)
        return obj

    def _spend(self, nbytes: int) -> None:
        self._charge(nbytes, 0)

    def _charge(self, nbytes: int, nodes: int) -> None:
        self._budget -= nbytes
        self._nodes -= nodes
        if self._budget < 0:
            raise ModelArtifactError(f"over budget: model needs more than {MAX_BUILT_BYTES} bytes")
        if self._nodes < 0:
            raise ModelArtifactError(f"over budget: model has more than {MAX_BUILT_NODES} objects")

    def _import(self, node: dict[str, Any]) -> Any:
        # build() checked the name against the trusted set before we get here.
        return _import(node["__module__"], node["__class__"])

    def _json(self, node: dict[str, Any], depth: int) -> Any:
        content = node["content"]
        if not isinstance(content, str):
            raise ModelArtifactError("JsonNode content is not a string")
        return json.loads(content)

    def _dict(self, node: dict[str, Any], depth: int) -> dict[Any, Any]:
        if self._import(node) is not dict:
            raise ModelArtifactError("DictNode of a type other than dict")
        key_types = self.build(node["key_types"], depth)
        content = node["content"]
        if not isinstance(key_types, list) or not isinstance(content, dict):
            raise ModelArtifactError("malformed DictNode")
        if len(key_types) != len(content):
            raise ModelArtifactError("DictNode key types do not match its keys")
        out: dict[Any, Any] = {}
        for key_type, (key, value) in zip(key_types, content.items(), strict=True):
            if key_type is not str and key_type is not int:
                raise ModelArtifactError("dict keys must be str or int")
            out[key_type(key)] = self.build(value, depth)
        return out

    def _items(self, node: dict[str, Any], depth: int) -> list[Any]:
        content = node["content"]
        if not isinstance(content, list):
            raise ModelArtifactError(f"malformed {node['__loader__']}")
        return [self.build(item, depth) for item in content]

    def _list(self, node: dict[str, Any], depth: int) -> list[Any]:
        if self._import(node) is not list:
            raise ModelArtifactError("ListNode of a type other than list")
        return self._items(node, depth)

    def _tuple(self, node: dict[str, Any], depth: int) -> tuple[Any, ...]:
        if self._import(node) is not tuple:
            raise ModelArtifactError("TupleNode of a type other than tuple")
        return tuple(self._items(node, depth))

    def _type_node(self, node: dict[str, Any], depth: int) -> type:
        cls = self._import(node)
        if not isinstance(cls, type):
            raise ModelArtifactError("TypeNode does not name a type")
        return cls

    def _ndarray(self, node: dict[str, Any], depth: int) -> Any:
        kind = node["type"]
        cls = self._import(node)
        if kind == "numpy":
            member = self._members.get(node["file"]) if isinstance(node["file"], str) else None
            if member is None:
                raise ModelArtifactError("array member missing")
            if node["file"] in self._read:
                # skops writes one member per array: a second reference would
                # copy it again (a way to multiply memory).
                raise ModelArtifactError("array member referenced twice")
            self._read.add(node["file"])
            array = _read_npy(member)
            self._spend(array.nbytes)
            if cls is np.ndarray:
                return array
            if not (isinstance(cls, type) and issubclass(cls, np.generic)) or array.ndim:
                raise ModelArtifactError("malformed numpy scalar")
            return cls(array)
        if kind == "json" and cls is np.ndarray:
            # Object arrays (gradient boosting's grid of trees): ``tolist()`` items.
            items = self._items(node, depth)
            shape = self.build(node["shape"], depth)
            if not (isinstance(shape, list | tuple) and shape and all(map(_is_size, shape))):
                raise ModelArtifactError("malformed object array shape")
            if len(shape) == 1:
                out = np.empty(len(items), dtype=object)
                for i, item in enumerate(items):
                    out[i] = item
            else:
                out = np.array(items, dtype=object)
            if out.shape != tuple(shape):
                raise ModelArtifactError("object array shape does not match its items")
            return out
        raise ModelArtifactError(f"unsupported array storage {kind!r}")

    def _object(self, node: dict[str, Any], depth: int) -> Any:
        # The only loader that builds arbitrary (trusted) classes, so the one
        # that can build a boosting model or bin mapper.
        instance = self._object_from(node, depth)
        categorical = getattr(instance, "is_categorical_", None)
        if categorical is not None and np.asarray(categorical).any():
            # Boosting's known-category bitsets are filled without bounds checks.
            raise ModelArtifactError("categorical features are not supported")
        return instance

    def _object_from(self, node: dict[str, Any], depth: int) -> Any:
        cls = self._import(node)
        if not isinstance(cls, type):
            raise ModelArtifactError("ObjectNode does not name a class")
        new: Any = cls.__new__  # bypasses __init__, as skops does; the state is set below
        instance = new(cls)
        content = node.get("content")
        if content is not None:
            attrs = self.build(content, depth)
            if attrs is not None:
                if hasattr(instance, "__setstate__"):
                    instance.__setstate__(attrs)
                elif isinstance(attrs, dict):
                    instance.__dict__.update(attrs)
                else:
                    raise ModelArtifactError("object state is not a dict")
        return instance

    def _reduce(self, node: dict[str, Any], depth: int, constructor: Any = None) -> Any:
        ctor = constructor if constructor is not None else self._import(node)
        args = self.build(node["__reduce__"]["args"], depth)
        if not isinstance(args, tuple | list):
            raise ModelArtifactError("constructor arguments are not a sequence")
        instance = ctor(*args)
        attrs = self.build(node["content"], depth)
        if attrs:
            if not hasattr(instance, "__setstate__"):
                raise ModelArtifactError(f"{type(instance).__name__} has no state to set")
            instance.__setstate__(attrs)
        return instance

    def _tree(self, node: dict[str, Any], depth: int) -> Any:
        from sklearn.tree._tree import Tree

        if f"{node['__module__']}.{node['__class__']}" != _TREE:
            raise ModelArtifactError("TreeNode of a type other than Tree")
        return self._reduce(node, depth, constructor=_checked_tree_args(Tree))

    def _random_state(self, node: dict[str, Any], depth: int) -> Any:
        cls = self._import(node)
        if cls is not np.random.RandomState:
            raise ModelArtifactError("RandomStateNode of a type other than RandomState")
        rs = cls()
        rs.set_state(self.build(node["content"], depth))
        return rs

    def _generator(self, node: dict[str, Any], depth: int) -> Any:
        cls = self._import(node)
        if cls is not np.random.Generator:
            raise ModelArtifactError("RandomGeneratorNode of a type other than Generator")
        content = node["content"]
        bit_state = self.build(content["bit_generator"], depth)
        seed_state = self.build(content["seed_seq"], depth)
        if not isinstance(bit_state, dict) or not isinstance(seed_state, dict):
            raise ModelArtifactError("malformed random generator state")
        pool_size = seed_state.get("pool_size", 4)
        if not (_is_size(pool_size) and 4 <= pool_size <= 64):  # numpy's default is 4
            raise ModelArtifactError("seed sequence pool size out of range")
        name = bit_state.get("bit_generator")
        if name not in BIT_GENERATORS:
            raise ModelArtifactError(f"unknown bit generator {name!r}")
        bit_generator = getattr(np.random, name)(np.random.SeedSequence(**seed_state))
        bit_generator.state = bit_state
        return cls(bit_generator)

    # -- structure checks: scikit-learn's Cython walks these without bounds checks --

    def _check_tree(self, tree: Any) -> None:
        n = int(tree.node_count)
        left = np.asarray(tree.children_left)
        right = np.asarray(tree.children_right)
        feature = np.asarray(tree.feature)
        if n < 1 or left.shape != (n,) or right.shape != (n,) or feature.shape != (n,):
            raise ModelArtifactError("decision tree has no nodes or ragged node arrays")
        self._check_nodes(left, right, feature, left == -1, int(tree.n_features), "decision tree")
        if not ((left == -1) == (right == -1)).all():
            raise ModelArtifactError("decision tree has a node with one child")
        self._spend(n * TREE_NODE_BYTES + np.asarray(tree.value).nbytes)  # its own copy

    def _check_hgb_predictor(self, predictor: Any) -> None:
        nodes = getattr(predictor, "nodes", None)
        if not isinstance(nodes, np.ndarray) or nodes.ndim != 1 or nodes.dtype.names is None:
            raise ModelArtifactError("boosting predictor without a node array")
        for field in ("left", "right", "feature_idx", "is_leaf", "is_categorical"):
            if field not in nodes.dtype.names:
                raise ModelArtifactError(f"boosting predictor nodes lack {field!r}")
        if len(nodes) < 1 or nodes["is_categorical"].any():
            raise ModelArtifactError("boosting predictor is empty or uses categorical splits")
        leaf = nodes["is_leaf"].astype(bool)
        self._check_nodes(
            nodes["left"], nodes["right"], nodes["feature_idx"], leaf, None, "boosting tree"
        )

    def _check_neighbor_tree(self, tree: Any) -> None:
        data, idx, node_data, bounds = (np.asarray(a) for a in tree.get_arrays())
        n_samples, n_nodes = len(data), len(node_data)
        if data.ndim != 2 or idx.shape != (n_samples,) or n_nodes < 1:
            raise ModelArtifactError("neighbour tree arrays do not fit together")
        if bounds.ndim != 3 or bounds.shape[1:] != (n_nodes, data.shape[1]):
            raise ModelArtifactError("neighbour tree bounds do not fit its nodes")
        state = tree.__getstate__()
        n_levels = int(state[5])
        if not 0 < n_levels < 63 or n_nodes != (1 << n_levels) - 1:
            raise ModelArtifactError("neighbour tree is not a complete binary tree")
        # KD trees keep (min, max) bounds per node, ball trees a centroid.
        if bounds.shape[0] != (2 if type(tree).__name__ == "KDTree" else 1):
            raise ModelArtifactError("neighbour tree bounds have the wrong shape")
        if type(state[11]).__name__ not in _DISTANCES:
            raise ModelArtifactError("neighbour tree without a supported distance")
        if len(idx) and (idx.min() < 0 or idx.max() >= n_samples):
            raise ModelArtifactError("neighbour tree index out of range")
        start, end = node_data["idx_start"], node_data["idx_end"]
        if ((start < 0) | (start > end) | (end > n_samples)).any():
            raise ModelArtifactError("neighbour tree node range out of bounds")
        inner = np.flatnonzero(node_data["is_leaf"] == 0)
        if len(inner) and 2 * int(inner.max()) + 2 >= n_nodes:
            raise ModelArtifactError("neighbour tree has children past its last node")
        weight = state[12]
        if weight is not None and np.asarray(weight).shape != (n_samples,):
            raise ModelArtifactError("neighbour tree sample weights do not fit its data")
        self.max_feature = max(self.max_feature, data.shape[1] - 1)

    def _check_gradient_boosting(self, model: Any) -> None:
        """``predict_stages`` writes one output column per column of
        ``estimators_`` into an array sized by the loss and ``init_``, and
        reads each ``tree_`` as a Tree: all of these must agree."""
        from sklearn.dummy import DummyClassifier, DummyRegressor
        from sklearn.tree import DecisionTreeRegressor
        from sklearn.tree._tree import Tree

        classes = getattr(model, "classes_", None)
        n_classes = 0 if classes is None else len(classes)
        k = n_classes if n_classes > 2 else 1
        grid = getattr(model, "estimators_", None)
        if not isinstance(grid, np.ndarray) or grid.ndim != 2 or grid.dtype != object:
            raise ModelArtifactError("gradient boosting stages are not a grid of trees")
        if grid.shape != (model.n_estimators_, k) or model.n_trees_per_iteration_ != k:
            raise ModelArtifactError("gradient boosting stage grid does not fit its outputs")
        loss_classes = getattr(model._loss, "n_classes", None)
        if (classes is not None and loss_classes != n_classes) or (
            classes is None and loss_classes not in (None, 1)
        ):
            raise ModelArtifactError("gradient boosting loss does not fit its classes")
        for stage in grid.flat:
            if type(stage) is not DecisionTreeRegressor or type(stage.tree_) is not Tree:
                raise ModelArtifactError("gradient boosting stage is not a regression tree")
            if stage.tree_.n_outputs != 1:
                raise ModelArtifactError("gradient boosting stage has several outputs")
        init = model.init_
        if isinstance(init, str) and init == "zero":
            return
        fits = (
            type(init) is DummyRegressor
            and classes is None
            and np.asarray(init.constant_).shape == (1, 1)
        ) or (
            type(init) is DummyClassifier
            and classes is not None
            and len(init.classes_) == n_classes  # fitted on the encoded labels
            and len(init.class_prior_) == n_classes
        )
        if not fits:
            raise ModelArtifactError("gradient boosting initial estimator does not fit the model")

    def _check_nodes(
        self,
        left: Any,
        right: Any,
        feature: Any,
        leaf: Any,
        n_features: int | None,
        what: str,
    ) -> None:
        n = len(left)
        inner = ~leaf
        index = np.arange(n)
        # Children come after their parent (depth-first order): no cycles, no escapes.
        for child in (left, right):
            c = child[inner].astype(np.int64)
            if ((c <= index[inner]) | (c >= n)).any():
                raise ModelArtifactError(f"{what} has a child index out of order or range")
        f = feature[inner].astype(np.int64)
        if len(f):
            if f.min() < 0 or (n_features is not None and f.max() >= n_features):
                raise ModelArtifactError(f"{what} splits on a feature out of range")
            self.max_feature = max(self.max_feature, int(f.max()))


_CHECKS: Final[dict[str, Callable[[_Builder, Any], None]]] = {
    _TREE: _Builder._check_tree,
    _HGB_PREDICTOR: _Builder._check_hgb_predictor,
    "sklearn.neighbors._kd_tree.KDTree": _Builder._check_neighbor_tree,
    "sklearn.neighbors._ball_tree.BallTree": _Builder._check_neighbor_tree,
    "sklearn.ensemble._gb.GradientBoostingRegressor": _Builder._check_gradient_boosting,
    "sklearn.ensemble._gb.GradientBoostingClassifier": _Builder._check_gradient_boosting,
}


@functools.cache
def _checks() -> dict[type, Callable[[_Builder, Any], None]]:
    """``_CHECKS`` keyed by the classes themselves: one lookup per built object."""
    out = {}
    for name, check in _CHECKS.items():
        module, _, cls = name.rpartition(".")
        out[_import(module, cls)] = check
    return out


_DISTANCES: Final = frozenset({"EuclideanDistance64", "ManhattanDistance64"})
TREE_NODE_BYTES: Final = 64  # sizeof(Node) in sklearn.tree._tree, rounded up

MAX_TREE_OUTPUTS: Final = 10_000
MAX_TREE_CLASSES: Final = 1_000  # as p2pml.ml.dataset.MAX_CLASSES


def _checked_tree_args(tree_cls: Any) -> Callable[..., Any]:
    """``Tree(n_features, n_classes, n_outputs)``, refusing sizes that would make
    it allocate without bound before its state is checked."""

    def make(n_features: Any, n_classes: Any, n_outputs: Any) -> Any:
        classes = np.asarray(n_classes)
        if not (_is_size(n_features) and _is_size(n_outputs)):
            raise ModelArtifactError("malformed decision tree sizes")
        if not 1 <= n_outputs <= MAX_TREE_OUTPUTS or classes.shape != (n_outputs,):
            raise ModelArtifactError("decision tree outputs out of range")
        if classes.dtype.kind not in "iu" or classes.min() < 1 or classes.max() > MAX_TREE_CLASSES:
            raise ModelArtifactError("decision tree classes out of range")
        return tree_cls(n_features, classes, n_outputs)

    return make


@functools.lru_cache(maxsize=256)
def _import(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _read_npy(buf: memoryview) -> Any:
    if bytes(buf[:6]) != _NPY_MAGIC or len(buf) < 10:
        raise ModelArtifactError("array member is not a .npy")
    major = buf[6]
    if major == 1:
        hlen, start = int.from_bytes(buf[8:10], "little"), 10
    elif major in (2, 3):
        hlen, start = int.from_bytes(buf[8:12], "little"), 12
    else:
        raise ModelArtifactError(f"unknown .npy version {major}")
    if hlen > MAX_NPY_HEADER or start + hlen > len(buf):
        raise ModelArtifactError("malformed .npy header")
    dtype, fortran, shape = _npy_header(bytes(buf[start : start + hlen]))
    count = math.prod(shape)
    offset = start + hlen
    if len(buf) - offset != count * dtype.itemsize:
        raise ModelArtifactError("array data does not match its header")
    flat = np.frombuffer(buf, dtype=dtype, count=count, offset=offset)
    array = flat.reshape(shape[::-1]).transpose() if fortran else flat.reshape(shape)
    return np.array(array, copy=True, order="K")  # owned and writable, like np.load


@functools.lru_cache(maxsize=1024)
def _npy_header(header: bytes) -> tuple[np.dtype[Any], bool, tuple[int, ...]]:
    # Headers repeat (same dtype, few shapes): parse each distinct one once.
    try:
        d = ast.literal_eval(header.decode("latin1"))
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise ModelArtifactError("malformed .npy header") from None
    if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
        raise ModelArtifactError("malformed .npy header")
    shape, fortran = d["shape"], d["fortran_order"]
    if not (isinstance(shape, tuple) and all(_is_size(s) for s in shape)):
        raise ModelArtifactError("malformed .npy shape")
    if not isinstance(fortran, bool):
        raise ModelArtifactError("malformed .npy header")
    try:
        dtype = np.lib.format.descr_to_dtype(d["descr"])
    except (ValueError, TypeError):
        raise ModelArtifactError("malformed .npy dtype") from None
    if dtype.hasobject:
        raise ModelArtifactError("object arrays are not allowed")
    return dtype, fortran, shape
