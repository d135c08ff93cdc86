"""``FederatedSpec``: the federated part of a task spec (issue 16, public shards).

A task whose spec carries ``federated`` is trained in rounds by many
participants instead of by independent trainers (docs/federated.md, "On the
chain"). Its wire form is a msgpack map with sorted keys::

    {"aggregation": str, "classes": [int...], "local_epochs": int,
     "participants": int, "round_blocks": int}

The task's ``rounds`` is R, its ``features`` fix d (they must be listed),
``classes`` fix K (the sorted distinct int64 label codes; empty for a
regressor). Consensus code: no numpy, no scikit-learn, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from p2pml.errors import DecodeError, ValidationError
from p2pml.federated.layout import AVERAGED, FAMILIES, Layout, family_of

WIRE_KEYS: Final = ("aggregation", "classes", "local_epochs", "participants", "round_blocks")
MAX_PARTICIPANTS: Final = 1_000
MAX_LOCAL_EPOCHS: Final = 1_000
MAX_ROUND_BLOCKS: Final = 10_000
#: Rules this slice puts on the chain: plain FedAvg for the averaging family,
#: the exact sum for the statistics families (robust rules and DP: next slice).
RULE_OF_FAMILY: Final = {family: "fedavg" for family in AVERAGED}
MERGE_RULE: Final = "sum"


@dataclass(frozen=True)
class FederatedSpec:
    aggregation: str
    participants: int  # P: updates a round accepts at most
    local_epochs: int  # E
    round_blocks: int  # blocks a round accepts updates for
    classes: tuple[int, ...] = ()  # the task's class list; () for a regressor

    def validate(self, model: str, n_features: int) -> Layout:
        """The task's parameter layout, or ``ValidationError`` with a stable reason."""
        family = family_of(model)  # federated-estimator
        want = RULE_OF_FAMILY.get(family, MERGE_RULE)
        if self.aggregation != want:
            raise ValidationError(
                "federated-aggregation",
                f"{model} on public shards aggregates by {want!r}, not {self.aggregation!r}",
            )
        for name, value, hi in (
            ("participants", self.participants, MAX_PARTICIPANTS),
            ("local_epochs", self.local_epochs, MAX_LOCAL_EPOCHS),
            ("round_blocks", self.round_blocks, MAX_ROUND_BLOCKS),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
                raise ValidationError("bad-task-param", f"{name} must be 1..{hi}, got {value!r}")
        if list(self.classes) != sorted(set(self.classes)):
            raise ValidationError("federated-labels", "classes must be sorted and distinct")
        if n_features < 1:
            raise ValidationError(
                "bad-task-features", "a federated task lists its features (they fix d)"
            )
        try:
            return Layout(model, n_features, len(self.classes))
        except ValidationError as exc:  # bad-update-shape on counts: the task's fault
            reason = "federated-labels" if "classes" in exc.detail else "bad-task-param"
            raise ValidationError(reason, exc.detail) from None

    def to_wire(self) -> dict[str, Any]:
        return {
            "aggregation": self.aggregation,
            "classes": list(self.classes),
            "local_epochs": self.local_epochs,
            "participants": self.participants,
            "round_blocks": self.round_blocks,
        }

    @classmethod
    def from_wire(cls, obj: object) -> FederatedSpec:
        if not isinstance(obj, Mapping) or set(obj) != set(WIRE_KEYS):
            raise DecodeError(f"federated spec must be a map with keys {list(WIRE_KEYS)}")
        classes = obj["classes"]
        if not isinstance(classes, list | tuple) or not all(
            type(c) is int and -(2**63) <= c < 2**63 for c in classes
        ):
            raise DecodeError("federated.classes must be an array of int64")
        if not isinstance(obj["aggregation"], str):
            raise DecodeError("federated.aggregation must be a string")
        for key in ("local_epochs", "participants", "round_blocks"):
            if type(obj[key]) is not int:
                raise DecodeError(f"federated.{key} must be an integer")
        return cls(
            aggregation=obj["aggregation"],
            participants=obj["participants"],
            local_epochs=obj["local_epochs"],
            round_blocks=obj["round_blocks"],
            classes=tuple(classes),
        )


def supported_estimators() -> tuple[str, ...]:
    return tuple(sorted(FAMILIES))
