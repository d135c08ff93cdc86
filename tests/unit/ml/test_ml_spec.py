"""TaskSpec: canonical wire layout, strict decoding, validation reasons."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pml.chain.taskspec import WIRE_KEYS, TaskSpec
from p2pml.errors import DecodeError, ValidationError

CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"


def spec(**kw: Any) -> TaskSpec:
    base: dict[str, Any] = {
        "dataset_cid": CID,
        "target": "y",
        "model": "ridge",
        "kind": "regression",
        "metric": "r2",
        "params": (("fit_intercept", True), ("alpha", 0.5)),
    }
    base.update(kw)
    return TaskSpec(**base)


def test_wire_layout_is_canonical() -> None:
    s = spec(features=("a", "b"), rounds=3)
    wire = s.to_wire()
    assert tuple(wire) == WIRE_KEYS  # sorted keys, documented order
    assert wire == {
        "dataset_cid": CID,
        "features": ["a", "b"],
        "format": "csv",
        "holdout_fraction": 0.2,
        "kind": "regression",
        "metric": "r2",
        "model": "ridge",
        "params": [["alpha", 0.5], ["fit_intercept", True]],
        "partition_fraction": 0.5,
        "rounds": 3,
        "target": "y",
        "v": 1,
    }
    # Params are sorted whatever order they were given in: one spec, one encoding.
    assert s == spec(features=("a", "b"), rounds=3, params={"alpha": 0.5, "fit_intercept": True})


def test_msgpack_round_trip() -> None:
    s = spec(
        model="mlp_regressor", params={"hidden_layer_sizes": (8, 4), "alpha": 1e-3, "tol": 0.01}
    )
    s.validate()
    for use_list in (True, False):
        back = TaskSpec.from_wire(
            msgpack.unpackb(msgpack.packb(s.to_wire()), use_list=use_list, raw=False)
        )
        assert back == s
        assert back.param_dict["hidden_layer_sizes"] == (8, 4)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda w: w.pop("target"),
        lambda w: w.update(extra=1),
        lambda w: w.update(v=2),
        lambda w: w.update(v=True),
        lambda w: w.update(rounds=1.0),
        lambda w: w.update(rounds=True),
        lambda w: w.update(holdout_fraction=1),
        lambda w: w.update(holdout_fraction="0.2"),
        lambda w: w.update(features="a,b"),
        lambda w: w.update(features=[1, 2]),
        lambda w: w.update(params={"alpha": 1.0}),
        lambda w: w.update(params=[["alpha"]]),
        lambda w: w.update(params=[[1, 2]]),
        lambda w: w.update(params=[["alpha", {"x": 1}]]),
        lambda w: w.update(params=[["hidden_layer_sizes", [1, "2"]]]),
        lambda w: w.update(params=[["fit_intercept", True], ["alpha", 0.5]]),  # unsorted
        lambda w: w.update(target=b"y"),
    ],
)
def test_from_wire_raises_decode_error_only(mutate: Any) -> None:
    wire = spec().to_wire()
    mutate(wire)
    with pytest.raises(DecodeError):
        TaskSpec.from_wire(wire)


@pytest.mark.parametrize("obj", [None, 1, "x", [], b"\x00"])
def test_from_wire_non_map(obj: object) -> None:
    with pytest.raises(DecodeError):
        TaskSpec.from_wire(obj)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"model": "sklearn.svm.SVC"}, "bad-task-model"),
        ({"model": "ridge", "kind": "classification"}, "bad-task-kind"),
        ({"kind": "clustering"}, "bad-task-kind"),
        ({"metric": "accuracy"}, "bad-task-metric"),
        ({"metric": "auc"}, "bad-task-metric"),
        ({"params": {"alpha": -1.0}}, "bad-task-param"),
        ({"params": {"random_state": 7}}, "bad-task-param"),
        ({"params": {"n_jobs": -1}}, "bad-task-param"),
        ({"params": (("alpha", 1.0), ("alpha", 2.0))}, "bad-task-param"),
        ({"holdout_fraction": 0.0}, "bad-task-fraction"),
        ({"holdout_fraction": 0.6}, "bad-task-fraction"),
        ({"partition_fraction": 1.0}, "bad-task-fraction"),
        ({"partition_fraction": float("nan")}, "bad-task-fraction"),
        ({"holdout_fraction": 0.3, "partition_fraction": 0.8}, "bad-task-fraction"),
        ({"rounds": 0}, "bad-task-rounds"),
        ({"rounds": 65}, "bad-task-rounds"),
        ({"format": "parquet"}, "bad-task-format"),
        ({"dataset_cid": "../../etc/passwd"}, "bad-task-cid"),
        ({"target": ""}, "bad-task-target"),
        ({"features": ("a", "a")}, "bad-task-features"),
        ({"features": ("y",)}, "bad-task-features"),
    ],
)
def test_validate_reasons(changes: dict[str, Any], reason: str) -> None:
    s = spec(**changes)
    with pytest.raises(ValidationError) as e:
        s.validate()
    assert e.value.reason == reason


def test_unknown_param_error_names_it() -> None:
    with pytest.raises(ValidationError) as e:
        spec(params={"alpah": 1.0}).validate()
    assert e.value.reason == "bad-task-param" and "'alpah'" in e.value.detail


def test_frozen_and_hashable() -> None:
    s = spec()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.rounds = 2  # type: ignore[misc]
    assert hash(s) == hash(spec(params={"alpha": 0.5, "fit_intercept": True}))


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.lists(st.integers(0, 10_000), min_size=1, max_size=8).map(tuple),
)


@given(
    target=st.text(min_size=1, max_size=30),
    features=st.lists(st.text(min_size=1, max_size=10), max_size=5, unique=True),
    params=st.dictionaries(st.text(min_size=1, max_size=12), _values, max_size=6),
    hold=st.floats(0.01, 0.5),
    part=st.floats(0.01, 0.49),
    rounds=st.integers(1, 64),
)
def test_wire_round_trip_property(
    target: str,
    features: list[str],
    params: dict[str, Any],
    hold: float,
    part: float,
    rounds: int,
) -> None:
    s = TaskSpec(
        dataset_cid=CID,
        target=target,
        model="ridge",
        kind="regression",
        metric="rmse",
        params=params,  # type: ignore[arg-type]
        features=tuple(features),
        holdout_fraction=hold,
        partition_fraction=part,
        rounds=rounds,
    )
    packed = msgpack.packb(s.to_wire())
    back = TaskSpec.from_wire(msgpack.unpackb(packed, raw=False))
    assert back == s
    assert msgpack.packb(back.to_wire()) == packed  # canonical: re-encodes identically
