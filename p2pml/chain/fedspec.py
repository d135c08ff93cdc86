"""``FederatedSpec``: the federated part of a task spec (issue 16).

A task whose spec carries ``federated`` is trained in rounds by many
participants instead of by independent trainers (docs/federated.md §11). Its
wire form is a msgpack map with sorted keys (protocol version 7)::

    {"aggregation": str, "classes": [int...], "clip": float, "delta": float,
     "epsilon": float, "local_epochs": int, "noise_multiplier": float,
     "participants": int, "private": str, "reward": str, "round_blocks": int,
     "sampling_rate": float, "trim": int, "validation": str}

The task's ``rounds`` is R, its ``features`` fix d (they must be listed),
``classes`` fix K (the sorted distinct int64 label codes; empty for a
regressor). ``private`` names the local files participants train on ("" =
public shards); ``validation`` is the public CSV that scores the global model
(required for private tasks and ``reward`` "improvement", whose round shares
are split by each update's gain on it; "samples" is the default); ``clip`` C
(0.0: none), ``trim`` t, and local DP
(``noise_multiplier`` z > 0) with its ``delta`` and ``epsilon`` budget
(``sampling_rate`` q must be 1.0 in protocol 7). Consensus code: no numpy,
no scikit-learn, no I/O; the epsilon of a DP plan comes from the pinned RDP
accountant (a pure function of the plan, see p2pml/federated/accountant.py
and ``RUNTIME``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from p2pml.cidv0 import is_cidv0
from p2pml.errors import DecodeError, ValidationError
from p2pml.federated.accountant import check_budget
from p2pml.federated.layout import AVERAGED, FAMILIES, Layout, family_of

WIRE_KEYS: Final = (
    "aggregation",
    "classes",
    "clip",
    "delta",
    "epsilon",
    "local_epochs",
    "noise_multiplier",
    "participants",
    "private",
    "reward",
    "round_blocks",
    "sampling_rate",
    "trim",
    "validation",
)
_FLOAT_KEYS: Final = ("clip", "delta", "epsilon", "noise_multiplier", "sampling_rate")
_INT_KEYS: Final = ("local_epochs", "participants", "round_blocks", "trim")
_STR_KEYS: Final = ("aggregation", "private", "reward", "validation")
MAX_PARTICIPANTS: Final = 1_000
MAX_LOCAL_EPOCHS: Final = 1_000
MAX_ROUND_BLOCKS: Final = 10_000
#: The largest update artifact a node fetches (its canonical encoding, §4):
#: a task whose layout encodes larger could never have an update checked.
MAX_UPDATE_BYTES: Final = 64 * 1024 * 1024
#: P x size at most: a round close holds up to P updates, and the robust rules
#: stack them and sort a copy, so a validating worker holds a few copies of
#: P x size float64 values. 2^23 values = 64 MiB a copy keeps the measured peak
#: of the largest allowed close well inside the smallest ``worker_memory_mb``
#: (1024) a node may configure (docs/federated.md §3).
MAX_ROUND_VALUES: Final = 2**23
#: A private name: what a participant's config maps to its local file.
PRIVATE_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
FEDAVG: Final = "fedavg"
MEDIAN: Final = "median"
TRIMMED_MEAN: Final = "trimmed_mean"
MERGE_RULE: Final = "sum"
#: Rules of the averaging families (linear, mlp); nb/ols merge by ``sum``.
AVERAGING_RULES: Final = (FEDAVG, MEDIAN, TRIMMED_MEAN)
ROBUST_RULES: Final = (MEDIAN, TRIMMED_MEAN)
#: How a round's share of the bounty is split (docs/federated.md §11.5).
REWARD_SAMPLES: Final = "samples"
REWARD_IMPROVEMENT: Final = "improvement"
REWARDS: Final = (REWARD_SAMPLES, REWARD_IMPROVEMENT)
#: Local sampling (q < 1) is not on the chain in protocol 6: see validate().
ON_CHAIN_SAMPLING_RATE: Final = 1.0


@dataclass(frozen=True)
class FederatedSpec:
    aggregation: str
    participants: int  # P: updates a round accepts at most
    local_epochs: int  # E
    round_blocks: int  # blocks a round accepts updates for
    classes: tuple[int, ...] = ()  # the task's class list; () for a regressor
    private: str = ""  # the local files' name; "" = public shards
    validation: str = ""  # CID of a public validation CSV ("" = the task's holdout)
    clip: float = 0.0  # C; 0.0 = no clipping
    trim: int = 0  # t of trimmed_mean
    noise_multiplier: float = 0.0  # z of local DP; 0.0 = no DP
    sampling_rate: float = 1.0  # q of local DP (secret Poisson sample per round)
    delta: float = 0.0  # DP: the delta epsilon is stated at
    epsilon: float = 0.0  # DP: the budget the plan must stay within
    reward: str = REWARD_SAMPLES  # "improvement": shares by validation gain (protocol 7)

    @property
    def by_improvement(self) -> bool:
        return self.reward == REWARD_IMPROVEMENT

    @property
    def is_private(self) -> bool:
        return self.private != ""

    @property
    def is_dp(self) -> bool:
        return self.noise_multiplier > 0.0

    def validate(self, model: str, n_features: int, rounds: int = 1) -> Layout:
        """The task's parameter layout, or ``ValidationError`` with a stable reason
        (checked in docs/federated.md §11.1's order)."""
        family = family_of(model)  # federated-estimator
        for name, value, lo, hi in (
            ("participants", self.participants, 1, MAX_PARTICIPANTS),
            ("local_epochs", self.local_epochs, 1, MAX_LOCAL_EPOCHS),
            ("round_blocks", self.round_blocks, 1, MAX_ROUND_BLOCKS),
            ("trim", self.trim, 0, MAX_PARTICIPANTS),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValidationError("bad-task-param", f"{name} must be {lo}..{hi}, got {value!r}")
        for key, number in (
            ("clip", self.clip),
            ("noise_multiplier", self.noise_multiplier),
            ("delta", self.delta),
            ("epsilon", self.epsilon),
        ):
            if type(number) is not float or not math.isfinite(number) or number < 0.0:
                raise ValidationError("bad-task-param", f"{key} must be a finite float >= 0")
        q = self.sampling_rate
        if type(q) is not float or q != ON_CHAIN_SAMPLING_RATE:
            # The subsampled-Gaussian RDP of q < 1 costs up to seconds per plan
            # (2.2 s for z = 4, q = 0.5) on a path any signed task reaches before
            # paying anything, and drops orders whose series fails to converge:
            # not for consensus in version 6 (the wire key is kept for later).
            raise ValidationError("bad-task-param", f"sampling_rate must be 1.0, got {q!r}")
        if self.private and not PRIVATE_NAME.fullmatch(self.private):
            raise ValidationError("bad-task-param", "private: 1..64 of A-Z a-z 0-9 _ . -")
        if self.validation and not is_cidv0(self.validation):
            raise ValidationError("federated-validation", "validation is not a CIDv0")
        self._validate_rule(model, family)
        self._validate_reward(family)
        if list(self.classes) != sorted(set(self.classes)):
            raise ValidationError("federated-labels", "classes must be sorted and distinct")
        if n_features < 1:
            raise ValidationError(
                "bad-task-features", "a federated task lists its features (they fix d)"
            )
        try:
            layout = Layout(model, n_features, len(self.classes))
        except ValidationError as exc:  # bad-update-shape on counts: the task's fault
            reason = "federated-labels" if "classes" in exc.detail else "bad-task-param"
            raise ValidationError(reason, exc.detail) from None
        if layout.encoded_bytes > MAX_UPDATE_BYTES:
            raise ValidationError(
                "federated-update-too-large",
                f"an update encodes to {layout.encoded_bytes} bytes > {MAX_UPDATE_BYTES}",
            )
        if self.participants * layout.size > MAX_ROUND_VALUES:
            raise ValidationError(
                "federated-too-large",
                f"{self.participants} participants x {layout.size} parameters "
                f"> {MAX_ROUND_VALUES} values a round",
            )
        self._validate_dp(rounds)
        return layout

    def _validate_rule(self, model: str, family: str) -> None:
        if family not in AVERAGED:
            if self.is_private:
                # Sufficient statistics from a private file cannot be checked
                # against anything: one participant could set the merged model.
                raise ValidationError(
                    "federated-private-family", f"{model} merges statistics: public shards only"
                )
            if self.aggregation != MERGE_RULE or self.clip or self.trim or self.is_dp:
                raise ValidationError(
                    "federated-aggregation",
                    f"{model} merges statistics by 'sum', without clip, trim or noise",
                )
            return
        if self.aggregation not in AVERAGING_RULES:
            raise ValidationError(
                "federated-aggregation",
                f"{model} aggregates by {', '.join(AVERAGING_RULES)}, not {self.aggregation!r}",
            )
        if self.trim and self.aggregation != TRIMMED_MEAN:
            raise ValidationError("federated-aggregation", "trim is for trimmed_mean only")
        if self.aggregation == TRIMMED_MEAN and not (
            self.trim >= 1 and 2 * self.trim < self.participants
        ):
            raise ValidationError(
                "federated-aggregation",
                f"trimmed_mean needs 1 <= trim and 2 x trim < participants ({self.participants})",
            )
        if self.aggregation in ROBUST_RULES and not self.clip:
            raise ValidationError("federated-aggregation", f"{self.aggregation} needs a clip bound")
        if self.is_private:
            if not self.validation:
                raise ValidationError(
                    "federated-validation", "a private task names a public validation CID"
                )
            if self.aggregation == FEDAVG and not self.is_dp:
                raise ValidationError(
                    "federated-aggregation", "private shards need median, trimmed_mean or DP"
                )

    def _validate_reward(self, family: str) -> None:
        if self.reward not in REWARDS:
            raise ValidationError("federated-reward", f"reward is one of {', '.join(REWARDS)}")
        if not self.by_improvement:
            return
        if family not in AVERAGED:
            # A merge round's statistics are not a model better or worse than
            # G_r: nothing to measure an improvement against.
            raise ValidationError("federated-reward", "improvement rewards averaging families")
        if not self.validation:
            raise ValidationError(
                "federated-validation", "improvement rewards need a validation CID"
            )

    def _validate_dp(self, rounds: int) -> None:
        if not self.is_dp:
            if self.delta or self.epsilon:
                raise ValidationError("bad-task-param", "delta and epsilon are for DP tasks")
            return
        if not self.clip:
            raise ValidationError("federated-aggregation", "local DP needs a clip bound")
        if not self.is_private:
            # Public shards are public already, and their updates are checked by
            # re-execution, which the participants' secret noise makes impossible.
            raise ValidationError("federated-aggregation", "local DP is for private shards")
        if not 0.0 < self.delta < 1.0 or not self.epsilon > 0.0:
            raise ValidationError("federated-epsilon", "DP needs 0 < delta < 1 and an epsilon")
        check_budget(self.noise_multiplier, self.sampling_rate, rounds, self.delta, self.epsilon)

    def to_wire(self) -> dict[str, Any]:
        return {
            "aggregation": self.aggregation,
            "classes": list(self.classes),
            "clip": float(self.clip),
            "delta": float(self.delta),
            "epsilon": float(self.epsilon),
            "local_epochs": self.local_epochs,
            "noise_multiplier": float(self.noise_multiplier),
            "participants": self.participants,
            "private": self.private,
            "reward": self.reward,
            "round_blocks": self.round_blocks,
            "sampling_rate": float(self.sampling_rate),
            "trim": self.trim,
            "validation": self.validation,
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
        for key, kind in (
            *((k, str) for k in _STR_KEYS),
            *((k, int) for k in _INT_KEYS),
            *((k, float) for k in _FLOAT_KEYS),
        ):
            if type(obj[key]) is not kind:
                raise DecodeError(f"federated.{key} must be a {kind.__name__}")
        return cls(
            aggregation=obj["aggregation"],
            participants=obj["participants"],
            local_epochs=obj["local_epochs"],
            round_blocks=obj["round_blocks"],
            classes=tuple(classes),
            private=obj["private"],
            validation=obj["validation"],
            clip=obj["clip"],
            trim=obj["trim"],
            noise_multiplier=obj["noise_multiplier"],
            sampling_rate=obj["sampling_rate"],
            delta=obj["delta"],
            epsilon=obj["epsilon"],
            reward=obj["reward"],
        )


def supported_estimators() -> tuple[str, ...]:
    return tuple(sorted(FAMILIES))
