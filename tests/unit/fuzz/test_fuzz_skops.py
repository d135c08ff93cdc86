"""Mutation campaign against the strict skops reader, on real artifacts.

Small real models of several allowlisted estimators (trees, forests, both
boosting kinds, neighbours with KD and ball trees, linear, MLP) are trained
and dumped with skops; each example mutates one artifact (raw bytes, one
zip member's bytes, one value or node of schema.json, one array's data or
header) and hands it to a worker process that loads it as the verifier does
and predicts with it. Only the documented refusal (ModelArtifactError) may
come out of the reader; the worker must not die (segfault) nor hang.
"""

from __future__ import annotations

import functools
import io
import json
import os
import selectors
import struct
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pml.ml.artifact import dump_model
from p2pml.ml.estimators import build_estimator, get_estimator
from tests.framework.waiting import TIMEOUT_FACTOR
from tests.unit.fuzz.fuzzing import fuzz, mutated

RANDOM_STATE = 12345
N_FEATURES = 4
MODELS: dict[str, dict[str, Any]] = {
    "decision_tree_classifier": {"max_depth": 4},
    "decision_tree_regressor": {"max_depth": 4},
    "random_forest_regressor": {"n_estimators": 3, "max_depth": 3},
    "gradient_boosting_classifier": {"n_estimators": 3, "max_depth": 2},
    "hist_gradient_boosting_regressor": {"max_iter": 3},
    "knn_classifier": {"algorithm": "kd_tree", "n_neighbors": 3},
    "knn_regressor": {"algorithm": "ball_tree", "n_neighbors": 3},
    "logistic_regression": {},
    "mlp_regressor": {"hidden_layer_sizes": [5], "max_iter": 20},
    "ridge": {"alpha": 0.5},
}
WORKER = Path(__file__).with_name("skops_worker.py")
REQUEST_TIMEOUT = 30.0 * TIMEOUT_FACTOR


def _train(name: str) -> bytes:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(60, N_FEATURES))
    if get_estimator(name).kind == "classification":
        y: Any = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1)
    else:
        y = X @ np.arange(1.0, N_FEATURES + 1) + rng.normal(size=60)
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in MODELS[name].items()}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an MLP of 20 iterations does not converge
        model = build_estimator(name, params, RANDOM_STATE).fit(X, y)
    return dump_model(model)


@functools.cache
def artifacts() -> dict[str, bytes]:
    return {name: _train(name) for name in MODELS}


class Worker:
    """One long-lived reader process; replaced when it dies or hangs."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        return subprocess.Popen(
            [sys.executable, str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=Path(__file__).resolve().parents[3],
        )

    def run(self, name: str, artifact: bytes) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        proc = self.proc
        assert proc.stdin is not None and proc.stdout is not None
        meta = {
            "estimator": name,
            "params": MODELS[name],
            "random_state": RANDOM_STATE,
            "n_features": N_FEATURES,
        }
        body = json.dumps(meta).encode() + b"\n" + artifact
        try:
            proc.stdin.write(struct.pack(">I", len(body)) + body)
            proc.stdin.flush()
        except BrokenPipeError:
            pass  # it died on the previous request; reported below
        line = _read_line(proc, REQUEST_TIMEOUT)
        if line is None:
            hung = proc.poll() is None
            self.close()
            what = "hung" if hung else f"died with code {proc.returncode}"
            raise AssertionError(f"reader worker {what} on a mutated {name} artifact")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes | None:
    """One reply line, or None if the worker dies or stays silent past ``timeout``."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return None  # still running: a hang
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        return None
    return line


@pytest.fixture(scope="module")
def worker() -> Iterator[Worker]:
    artifacts()  # trained here, not inside a strategy (training uses ``random``)
    w = Worker()
    yield w
    w.close()


# -- mutations -----------------------------------------------------------------------


def _members(artifact: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(artifact)) as zf:
        return [(i.filename, zf.read(i)) for i in zf.infolist()]


def _zip(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return out.getvalue()


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        node = node[p]
    return node


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.sampled_from([0, -1, 1, 2**31, 2**63 - 1, -(2**63), 10**30, 1e308, -0.5])
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=10),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def schema_mutation(draw: st.DrawFn, schema: Any) -> Any:
    """Change one value, drop one key, or put another subtree of the schema there."""
    schema = json.loads(json.dumps(schema))
    paths = [p for p in _paths(schema) if p]
    path = draw(st.sampled_from(paths))
    parent, key = _get(schema, path[:-1]), path[-1]
    op = draw(st.sampled_from(["value", "drop", "graft", "shape"]))
    if op == "drop" and isinstance(parent, dict):
        del parent[key]
    elif op == "graft":  # type confusion: a real node of another kind here
        parent[key] = json.loads(json.dumps(_get(schema, draw(st.sampled_from(paths)))))
    elif op == "shape" and isinstance(parent[key], str) and parent[key].startswith("["):
        parent[key] = json.dumps(draw(st.lists(st.integers(-2, 2**40), max_size=3)))
    else:
        parent[key] = draw(json_values)
    return schema


@st.composite
def npy_mutation(draw: st.DrawFn, data: bytes) -> bytes:
    """Overwrite aligned 8-byte words of the array data (indices, features,
    counts, thresholds) with hostile values, or mangle the header text."""
    if len(data) < 10 or not data.startswith(b"\x93NUMPY"):
        return draw(mutated(data))
    hlen = (
        struct.unpack("<H", data[8:10])[0] if data[6] == 1 else struct.unpack("<I", data[8:12])[0]
    )
    start = (10 if data[6] == 1 else 12) + hlen
    out = bytearray(data)
    if draw(st.integers(0, 3)) == 0 or len(out) <= start + 8:
        head = draw(mutated(bytes(out[:start])))
        return head + bytes(out[start:])
    for _ in range(draw(st.integers(1, 4))):
        pos = start + 8 * draw(st.integers(0, (len(out) - start) // 8 - 1))
        word = draw(
            st.sampled_from([-1, -2, 0, 1, 2**31 - 1, 2**31, 2**62, -(2**63), 1000])
            | st.integers(-(2**63), 2**63 - 1)
        )
        out[pos : pos + 8] = struct.pack("<q", word)
    return bytes(out)


@st.composite
def mutated_artifacts(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(MODELS)))
    artifact = artifacts()[name]
    kind = draw(st.sampled_from(["raw", "schema", "schema", "array", "array", "member"]))
    if kind == "raw":
        return name, draw(mutated(artifact))
    members = _members(artifact)
    if kind == "schema":
        i = next(i for i, (n, _) in enumerate(members) if n == "schema.json")
        schema = draw(schema_mutation(json.loads(members[i][1])))
        members[i] = (members[i][0], json.dumps(schema).encode())
    else:
        npys = [i for i, (n, _) in enumerate(members) if n.endswith(".npy")]
        i = draw(st.sampled_from(npys or [0]))
        member = members[i][1]
        new = draw(npy_mutation(member)) if kind == "array" else draw(mutated(member))
        members[i] = (members[i][0], new)
    return name, _zip(members)


# -- targets ---------------------------------------------------------------------------


def test_every_unmutated_artifact_loads_and_predicts(worker: Worker) -> None:
    # The campaign is only meaningful if the originals pass the same path.
    for name, artifact in artifacts().items():
        assert worker.run(name, artifact) == {"outcome": "loaded", "predict": "ok"}, name


@fuzz(2)
@given(mutated_artifacts())
def test_mutated_artifacts_are_refused_or_harmless(worker: Worker, case: tuple[str, bytes]) -> None:
    name, artifact = case
    reply = worker.run(name, artifact)
    assert reply["outcome"] in ("refused", "loaded"), reply
