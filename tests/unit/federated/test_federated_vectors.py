"""p2pml.federated against vectors built from docs/federated.md by a
standard-library reading of it (tests/vectors/federated/make_federated_vectors.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from p2pml.errors import ValidationError
from p2pml.federated.aggregate import Rule, Update, aggregate
from p2pml.federated.encoding import decode, encode, model_hash
from p2pml.federated.layout import Layout
from p2pml.federated.params import initial_vector

HERE = Path(__file__).resolve().parents[2] / "vectors" / "federated"
VECTORS = json.loads((HERE / "federated.json").read_text())


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["label"])
def test_aggregation_vector(case: dict[str, Any]) -> None:
    layout = Layout(case["estimator"], case["n_features"], case["n_classes"], tuple(case["hidden"]))
    g = np.array(case["global"], dtype=np.float64)
    updates = []
    for u in case["updates"]:
        vector = decode(layout, bytes.fromhex(u["encoding"]))
        assert vector.tolist() == u["vector"]
        assert encode(layout, vector).hex() == u["encoding"]
        updates.append(Update(bytes.fromhex(u["participant"]), vector, u["n_samples"]))
    rule = Rule(case["rule"], case["trim"], case["clip"], case["noise_multiplier"])
    result = aggregate(layout, g, updates, rule)
    assert result.tolist() == case["result"]  # bit for bit (no -0.0 on either side)
    assert encode(layout, result).hex() == case["result_encoding"]
    assert model_hash(layout, result).hex() == case["result_hash"]


@pytest.mark.parametrize("v", VECTORS["mlp_initial"], ids=lambda v: v["activation"])
def test_mlp_initial_vector(v: dict[str, Any]) -> None:
    layout = Layout(v["estimator"], v["n_features"], v["n_classes"], tuple(v["hidden"]))
    params = {"hidden_layer_sizes": tuple(v["hidden"]), "activation": v["activation"]}
    g0 = initial_vector(layout, bytes.fromhex(v["task_seed"]), params)  # type: ignore[arg-type]
    assert g0.tolist() == v["vector"]


@pytest.mark.parametrize("v", VECTORS["decode_refusals"], ids=lambda v: v["what"])
def test_decode_refusal_vector(v: dict[str, Any]) -> None:
    d = VECTORS["decode_layout"]
    with pytest.raises(ValidationError) as err:
        decode(Layout(d["estimator"], d["n_features"], d["n_classes"]), bytes.fromhex(v["bytes"]))
    assert err.value.reason == v["reason"]


def test_the_generator_reproduces_the_committed_file(tmp_path: Path) -> None:
    script = HERE / "make_federated_vectors.py"
    subprocess.run([sys.executable, "-I", str(script), str(tmp_path)], check=True, timeout=60)
    assert (tmp_path / "federated.json").read_text() == (HERE / "federated.json").read_text()


@pytest.mark.parametrize("v", VECTORS["epsilon"], ids=lambda v: f"z{v['noise_multiplier']}")
def test_epsilon_vector(v: dict[str, Any]) -> None:
    """The epsilon the chain records (docs/federated.md §7.3, §11.4)."""
    from p2pml.federated.accountant import epsilon_spent

    got = epsilon_spent(v["noise_multiplier"], v["sampling_rate"], v["rounds"], v["delta"])
    assert got == v["epsilon"]


@pytest.mark.parametrize("v", VECTORS["gains"], ids=lambda v: f"{v['score']}-{v['base']}")
def test_gain_vector(v: dict[str, Any]) -> None:
    """The gain a round close carries (docs/federated.md §11.4)."""
    from p2pml.federated.rounds import gain

    assert gain(v["score"], v["base"], v["higher_is_better"]) == v["gain"]


@pytest.mark.parametrize("v", VECTORS["shares"], ids=lambda v: f"{v['gains']}-{v['samples']}")
def test_share_vector(v: dict[str, Any]) -> None:
    """A round's share split by weight (docs/federated.md §11.5), as the chain pays it."""
    from p2pml.chain.federated_rounds import round_shares

    updates = [[bytes([i]) * 32, "cid", n] for i, n in enumerate(v["samples"])]
    task = {
        "bounty": v["per_round"],
        "spec": {"rounds": 1, "federated": {"private": "", "reward": "improvement"}},
    }
    assert round_shares(task, {"closed": [[1, updates]], "gains": [v["gains"]]}) == [v["shares"]]
