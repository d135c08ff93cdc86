"""Issue 16 caps: what one federated task may make every validating node
fetch and hold (docs/federated.md §3, §11.1 rule 7)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from p2pml.chain.fedspec import MAX_ROUND_VALUES, MAX_UPDATE_BYTES, FederatedSpec
from p2pml.chain.params import REGTEST, dev_identity
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.txrules import handler_for
from p2pml.chain.types import TaskTx
from p2pml.errors import ValidationError
from p2pml.federated.encoding import encode
from p2pml.federated.layout import Layout
from p2pml.ipfs.cid import cid_of_bytes

PUB = dev_identity(0)


def spec(model: str, d: int, fed: FederatedSpec) -> TaskSpec:
    classifier = model == "sgd_classifier"
    return TaskSpec(
        dataset_cid=cid_of_bytes(b"data"),
        target="y",
        model=model,
        kind="classification" if classifier else "regression",
        metric="accuracy" if classifier else "r2",
        features=tuple(f"f{i}" for i in range(d)),
        federated=fed,
    )


def reason_of(s: TaskSpec) -> str:
    tx = TaskTx(
        spec=s,
        bounty=1000,
        fee=1000,
        deadline=30,
        result_reward=0,
        max_results=1,
        publisher=PUB.public_key,
        nonce=7,
    ).signed_by(PUB, REGTEST.genesis_hash)
    with pytest.raises(ValidationError) as err:
        handler_for(tx).check(tx, REGTEST)
    return err.value.reason


def test_a_round_over_the_value_cap_is_refused_and_one_at_it_is_not() -> None:
    # sgd_classifier, K = 64, d = 4095: 2^18 parameters; P = 32 is exactly the cap.
    fed = FederatedSpec("median", 32, 1, 10, tuple(range(64)), clip=1.0)
    at_cap = spec("sgd_classifier", 4095, fed)
    at_cap.validate()
    assert MAX_ROUND_VALUES == 32 * 64 * 4096
    over = dataclasses.replace(at_cap, federated=dataclasses.replace(fed, participants=33))
    assert reason_of(over) == "federated-too-large"
    # The brief's case: 1000 participants of a modest linear layout (1000 x 4097 x 10).
    many = FederatedSpec("trimmed_mean", 1000, 1, 10, tuple(range(10)), clip=1.0, trim=1)
    assert reason_of(spec("sgd_classifier", 4096, many)) == "federated-too-large"


def test_a_layout_whose_update_cannot_be_fetched_is_refused() -> None:
    # ridge over d = 2900: (d+1)^2 + (d+1) = 8,418,702 values: 67 MB > 64 MiB,
    # under the layout's own 10^7 bound, so it validated before.
    fed = FederatedSpec("sum", 1, 1, 10)
    layout = Layout("ridge", 2900)
    assert layout.encoded_bytes > MAX_UPDATE_BYTES and layout.size <= 10_000_000
    assert reason_of(spec("ridge", 2900, fed)) == "federated-update-too-large"
    spec("ridge", 2000, fed).validate()  # 4 M values: fits both caps


@pytest.mark.parametrize(
    "layout",
    [
        Layout("sgd_classifier", 5, 3),
        Layout("sgd_regressor", 7),
        Layout("gaussian_nb", 4, 2),
        Layout("ridge", 3),
        Layout("mlp_classifier", 6, 4, (5, 3)),
    ],
)
def test_encoded_bytes_is_the_length_of_the_canonical_encoding(layout: Layout) -> None:
    vector = np.zeros(layout.size)
    assert layout.encoded_bytes == len(encode(layout, vector))
