"""Deterministic cost budgets of a loaded model, checked before any predict.

The strict reader (:mod:`p2pml.ml.skops_reader`) proves a model is well
formed: scikit-learn will not read out of bounds. It does not prove the model
is cheap: a forest of thousands of references to one very deep tree, or a
tree with a thousand outputs of a thousand classes, is well formed and costs
hours of CPU or gigabytes to predict. These checks bound that cost from the
task alone, so every node reaches the same verdict whatever its hardware:

* the number of trees/stages/predictors is the one the task's parameters ask
  for (``n_estimators``, the boosting grid, ``max_iter``);
* every tree has one output, the task's classes, a depth under the task's
  ``max_depth`` (or :data:`MAX_TREE_DEPTH`) and at most :data:`MAX_TREE_NODES`
  nodes;
* classes are a sorted subset of the dataset's labels; layer, coefficient and
  neighbour arrays have the shapes the task's data and parameters give;
* holdout rows x total tree depth <= :data:`MAX_PREDICT_STEPS` and holdout
  rows x outputs <= :data:`MAX_OUTPUT_CELLS`.

A model over a budget is refused with :class:`ModelArtifactError` (the
verdict ``bad-result-model``). Honest models of a task whose data exceed the
caps cannot be verified: docs/tasks.md lists the caps for publishers.
Worker-side only (sklearn imported lazily).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from p2pml.errors import ModelArtifactError

#: Deepest tree accepted when the task leaves ``max_depth`` unset.
MAX_TREE_DEPTH: Final = 512
#: Most nodes in one tree (sklearn: 64 bytes each; 2 x rows - 1 for a full tree).
MAX_TREE_NODES: Final = 4_000_000
#: Holdout rows x sum over trees of (depth + 1): node visits of one predict.
#: ~1e8 visits/s on one core, so about 10 s at the cap.
MAX_PREDICT_STEPS: Final = 1_000_000_000
#: Holdout rows x model outputs (classes): float64 cells of one predict_proba.
MAX_OUTPUT_CELLS: Final = 25_000_000
#: schema.json bytes: a base plus a share per tree the task asks for, and an
#: absolute cap (parsing costs ~20 bytes of memory per byte of JSON).
SCHEMA_BASE_BYTES: Final = 1024**2
SCHEMA_BYTES_PER_TREE: Final = 64 * 1024
MAX_SCHEMA_BYTES: Final = 48 * 1024**2


@dataclass(frozen=True)
class TaskShape:
    """What the task and its dataset fix about any honest model of it."""

    estimator: str
    params: dict[str, Any]  # the model's own parameters (equal to the task's: checked before)
    holdout_rows: int
    train_rows: int
    n_features: int
    classes: Any | None  # sorted dataset labels (classification), None for regression


def _bad(why: str) -> ModelArtifactError:
    return ModelArtifactError(f"over budget: {why}")


def expected_trees(estimator: str, params: dict[str, Any], n_classes: int) -> int:
    """Upper bound of the trees an honest model of the task holds."""
    k = n_classes if n_classes > 2 else 1
    if estimator.startswith("random_forest"):
        return int(params.get("n_estimators", 100))
    if estimator.startswith("gradient_boosting"):
        return int(params.get("n_estimators", 100)) * k
    if estimator.startswith("hist_gradient_boosting"):
        return int(params.get("max_iter", 100)) * k
    if estimator.startswith("decision_tree"):
        return 1
    return 0


def schema_cap(estimator: str, params: dict[str, Any], n_classes: int) -> int:
    """Largest schema.json accepted for a model of the task (checked before parsing)."""
    trees = expected_trees(estimator, params, n_classes)
    return min(MAX_SCHEMA_BYTES, SCHEMA_BASE_BYTES + SCHEMA_BYTES_PER_TREE * trees)


def check_model(model: Any, task: TaskShape) -> None:
    """Raise ``ModelArtifactError`` if predicting with ``model`` could cost more
    than an honest model of ``task``; return None otherwise."""
    n_out = 1
    if task.classes is not None:
        n_out = _check_classes(model, task.classes)
    if task.holdout_rows * n_out > MAX_OUTPUT_CELLS:
        raise _bad(f"{task.holdout_rows} holdout rows x {n_out} outputs > {MAX_OUTPUT_CELLS}")
    name = task.estimator
    p = task.params
    # Read by predict to size its output: one output (MLPs: checked with their layers).
    if not name.startswith("mlp"):
        _check_attr(model, "n_outputs_", 1)
    if task.classes is not None:
        _check_attr(model, "n_classes_", n_out)
    depths: list[int]
    if name.startswith("decision_tree"):
        depths = _sk_trees([model], task, n_out, p)
    elif name.startswith("random_forest"):
        trees = model.estimators_
        if not isinstance(trees, list) or len(trees) != p["n_estimators"]:
            raise _bad(f"forest does not hold n_estimators={p['n_estimators']} trees")
        if getattr(model, "n_outputs_", None) != 1:
            raise _bad("forest has more than one output")
        depths = _sk_trees(trees, task, n_out, p)
    elif name.startswith("gradient_boosting"):
        if model.n_estimators_ != p["n_estimators"]:
            raise _bad(f"boosting does not hold n_estimators={p['n_estimators']} stages")
        if not isinstance(model.init_, str):  # a Dummy* estimator: its predict sizes by these
            _check_attr(model.init_, "n_outputs_", 1, required=True)
            if task.classes is not None:
                _check_attr(model.init_, "n_classes_", n_out, required=True)
        depths = _sk_trees(list(model.estimators_.flat), task, 1, p, stages=True)
    elif name.startswith("hist_gradient_boosting"):
        depths = _hgb_predictors(model, task, n_out, p)
    else:
        depths = []
        _check_arrays(model, task, n_out)
    steps = task.holdout_rows * sum(d + 1 for d in depths)
    if steps > MAX_PREDICT_STEPS:
        raise _bad(f"holdout rows x tree depth is {steps} > {MAX_PREDICT_STEPS}")


def _check_attr(obj: Any, attr: str, want: int, required: bool = False) -> None:
    """``obj.attr`` is absent (unless ``required``) or the int ``want``."""
    if not hasattr(obj, attr) and not required:
        return
    value = getattr(obj, attr, None)
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value != want:
        raise _bad(f"{type(obj).__name__}.{attr} is not {want}")


def _check_classes(model: Any, dataset_classes: Any) -> int:
    """Outputs of a classifier: its classes are a sorted subset of the dataset's."""
    classes = getattr(model, "classes_", None)
    if not isinstance(classes, np.ndarray) or classes.ndim != 1 or len(classes) < 1:
        raise _bad("classes are not a non-empty 1-d array")
    if classes.dtype != dataset_classes.dtype or classes.dtype.kind not in "iu":
        raise _bad("classes are not the dataset's label codes")
    if len(classes) > 1 and not (np.diff(classes) > 0).all():
        raise _bad("classes are not sorted and unique")
    if not np.isin(classes, dataset_classes).all():
        raise _bad("classes the dataset does not have")
    return len(classes)


def tree_depth(left: Any, right: Any, leaf: Any, cap: int) -> int:
    """Longest root-to-leaf path of one tree (see :func:`tree_depths`)."""
    return tree_depths([(left, right, leaf)], cap)[0]


def tree_depths(trees: Sequence[tuple[Any, Any, Any]], cap: int) -> list[int]:
    """Longest root-to-leaf path of each (children_left, children_right,
    is_leaf) tree, or ``ModelArtifactError`` if one is deeper than ``cap``.

    The reader proved children come after their parent and lie inside the
    arrays. Real trees (one parent per node) are measured all at once by
    pointer jumping over their concatenated nodes, O(n log depth) in a few
    vectorised steps; a tree with nodes shared by several parents (a crafted
    DAG) by one vectorised step per level, at most ``cap`` of them.
    """
    if not trees:
        return []
    sizes = np.array([len(t[0]) for t in trees], dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    n = int(sizes.sum())
    owner = np.repeat(np.arange(len(trees)), sizes)
    leaf = np.concatenate([np.asarray(t[2], dtype=bool) for t in trees])
    inner = np.flatnonzero(~leaf)
    shift = offsets[owner[inner]]
    left = np.concatenate([np.asarray(t[0], dtype=np.int64) for t in trees])
    right = np.concatenate([np.asarray(t[1], dtype=np.int64) for t in trees])
    children = np.concatenate((left[inner] + shift, right[inner] + shift))
    shared = np.bincount(children, minlength=n) > 1
    parent = np.arange(n)  # unreachable nodes count as roots: never deeper than real
    parent[children] = np.concatenate((inner, inner))
    dist = (parent != np.arange(n)).astype(np.int64)
    while True:
        up = parent[parent]
        if np.array_equal(up, parent):
            break
        dist += dist[parent] * (up != parent)
        parent = up
    depths = [int(d) for d in np.maximum.reduceat(dist, offsets)]
    for i in np.unique(owner[shared]):
        left_i, right_i, leaf_i = trees[i]
        depths[i] = _dag_depth(left_i, right_i, leaf_i, cap)
    if max(depths) > cap:
        raise _bad(f"a tree is deeper than {cap}")
    return depths


def _dag_depth(left: Any, right: Any, leaf: Any, cap: int) -> int:
    leaf = np.asarray(leaf, dtype=bool)
    frontier = np.zeros(1, dtype=np.int64)
    depth = 0
    while True:
        inner = frontier[~leaf[frontier]]
        if not len(inner):
            return depth
        depth += 1
        if depth > cap:
            raise _bad(f"a tree is deeper than {cap}")
        frontier = np.unique(np.concatenate((left[inner], right[inner])).astype(np.int64))


def _depth_cap(params: dict[str, Any]) -> int:
    max_depth = params.get("max_depth")
    return MAX_TREE_DEPTH if max_depth is None else min(int(max_depth), MAX_TREE_DEPTH)


def _sk_trees(
    estimators: Sequence[Any],
    task: TaskShape,
    n_classes: int,
    p: dict[str, Any],
    stages: bool = False,
) -> list[int]:
    """Depth of each ``sklearn.tree`` estimator (shared ones counted per use)."""
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    want = DecisionTreeRegressor if stages or task.classes is None else DecisionTreeClassifier
    classes = np.array([n_classes if task.classes is not None and not stages else 1])
    uses: list[int] = []  # index into ``unique`` of each estimator's tree
    unique: dict[int, int] = {}
    arrays: list[Any] = []
    for est in estimators:
        if type(est) is not want:
            raise _bad(f"an ensemble member is a {type(est).__name__}, not a {want.__name__}")
        _check_attr(est, "n_outputs_", 1, required=True)
        if want is DecisionTreeClassifier:
            _check_attr(est, "n_classes_", n_classes, required=True)
        tree = est.tree_
        if id(tree) not in unique:
            if tree.n_outputs != 1 or not np.array_equal(np.asarray(tree.n_classes), classes):
                raise _bad("a tree's outputs or classes do not fit the task")
            if tree.node_count > MAX_TREE_NODES:
                raise _bad(f"a tree has more than {MAX_TREE_NODES} nodes")
            unique[id(tree)] = len(arrays)
            arrays.append(tree)
        uses.append(unique[id(tree)])
    depths = _sk_depths(arrays, _depth_cap(p))
    return [depths[i] for i in uses]


def _sk_depths(trees: list[Any], cap: int) -> list[int]:
    """Depths of ``sklearn.tree._tree.Tree`` objects.

    A real tree (node 0 the root, every other node the child of exactly one
    node) is measured by scikit-learn's own O(n) ``compute_node_depths``,
    ~50x faster than :func:`tree_depths`. That loop writes each node's depth
    from its parent's and leaves unreached nodes uninitialised, so it is only
    safe, and deterministic, on such a tree: anything else goes the slow way.
    """
    depths: list[int | None] = []
    others: list[tuple[Any, Any, Any]] = []
    for tree in trees:
        left = np.asarray(tree.children_left)
        right = np.asarray(tree.children_right)
        inner = left != -1
        parents = np.bincount(np.concatenate((left[inner], right[inner])), minlength=len(left))
        if parents[0] == 0 and (parents[1:] == 1).all():
            depths.append(int(tree.compute_node_depths().max()) - 1)  # the root is 1 there
        else:
            depths.append(None)
            others.append((left, right, ~inner))
    slow = iter(tree_depths(others, cap))
    out = [d if d is not None else next(slow) for d in depths]
    if max(out, default=0) > cap:
        raise _bad(f"a tree is deeper than {cap}")
    return out


def _hgb_predictors(model: Any, task: TaskShape, n_out: int, p: dict[str, Any]) -> list[int]:
    k = n_out if n_out > 2 else 1
    grid = getattr(model, "_predictors", None)
    if not isinstance(grid, list) or not 1 <= len(grid) <= p["max_iter"]:
        raise _bad(f"boosting holds no or more than max_iter={p['max_iter']} iterations")
    if model.n_trees_per_iteration_ != k or any(
        not isinstance(row, list) or len(row) != k for row in grid
    ):
        raise _bad("boosting iterations do not hold one tree per output")
    if np.asarray(model._baseline_prediction).shape != (1, k):
        raise _bad("boosting baseline does not fit its outputs")
    uses: list[int] = []
    unique: dict[int, int] = {}
    arrays: list[tuple[Any, Any, Any]] = []
    for row in grid:
        for pred in row:
            if id(pred) not in unique:
                nodes = pred.nodes
                if len(nodes) > MAX_TREE_NODES:
                    raise _bad(f"a tree has more than {MAX_TREE_NODES} nodes")
                unique[id(pred)] = len(arrays)
                arrays.append((nodes["left"], nodes["right"], nodes["is_leaf"] != 0))
            uses.append(unique[id(pred)])
    depths = tree_depths(arrays, _depth_cap(p))
    return [depths[i] for i in uses]


def _check_arrays(model: Any, task: TaskShape, n_out: int) -> None:
    """Linear, neighbour and MLP models: array shapes the task's data fix."""
    name, d = task.estimator, task.n_features
    if name.startswith("knn"):
        fit_x = np.asarray(model._fit_X)
        if model.n_samples_fit_ != task.train_rows or fit_x.shape != (task.train_rows, d):
            raise _bad(f"neighbours are not the {task.train_rows} partition rows")
        tree = getattr(model, "_tree", None)
        if tree is not None and np.asarray(tree.data).shape != fit_x.shape:
            raise _bad("neighbour tree does not hold the partition rows")
        return
    if name.startswith("mlp"):
        k = 1 if n_out <= 2 else n_out
        sizes = [d, *task.params["hidden_layer_sizes"], k]
        _check_attr(model, "n_outputs_", k, required=True)
        _check_attr(model, "n_layers_", len(sizes), required=True)
        coefs, intercepts = model.coefs_, model.intercepts_
        if len(coefs) != len(sizes) - 1 or len(intercepts) != len(sizes) - 1:
            raise _bad("network layers do not fit hidden_layer_sizes")
        for i, (w, b) in enumerate(zip(coefs, intercepts, strict=True)):
            if np.shape(w) != (sizes[i], sizes[i + 1]) or np.shape(b) != (sizes[i + 1],):
                raise _bad("network layer shapes do not fit the task")
        return
    if name == "gaussian_nb":
        for attr in ("theta_", "var_"):
            if np.shape(getattr(model, attr)) != (n_out, d):
                raise _bad(f"{attr} does not fit the task's features and classes")
        return
    coef = np.asarray(getattr(model, "coef_", np.zeros(d)))
    if coef.shape[-1:] != (d,) or coef.size > d * max(1, n_out):
        raise _bad("coefficients do not fit the task's features and classes")
