"""The runtime is part of the network: verdicts depend on the exact
scikit-learn and numpy versions (a re-trained model's metric may change
with them), so the network fixes them (``NetworkParams.runtime``).

A node whose installed versions differ must not judge results: it would
split from the chain over a changed algorithm. It refuses to start as a
validator with one line naming the difference, or, configured so
(``[node] validate_results = false``), runs as a follower that takes the
results in blocks on the chain's work.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from importlib import metadata

from p2pml.chain.params import NetworkParams
from p2pml.errors import ConfigError

VALIDATOR = "validator"
FOLLOWER = "follower"


def installed(names: Iterable[str]) -> dict[str, str]:
    """Installed version of each distribution ("missing" if it is not)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def with_regtest_runtime(params: NetworkParams, pins: Iterable[str]) -> NetworkParams:
    """``params`` with its runtime replaced by ``NAME==VERSION`` pins (tests)."""
    pins = tuple(pins)
    if not pins:
        return params
    runtime = tuple(sorted(tuple(p.split("==", 1)) for p in pins))
    return dataclasses.replace(params, runtime=runtime)  # type: ignore[arg-type]


def mismatches(params: NetworkParams) -> list[str]:
    """Each library whose installed version is not the network's."""
    wanted = dict(params.runtime)
    have = installed(wanted)
    out = []
    for name, version in sorted(wanted.items()):
        if have[name] != version:
            what = "not installed" if have[name] == "missing" else f"{have[name]} installed"
            out.append(f"{name} {what}, network {params.name} runs {version}")
    return out


def validation_mode(params: NetworkParams, validate_results: bool) -> str:
    """VALIDATOR or FOLLOWER; ConfigError (one line) if this node may not validate."""
    if not validate_results:
        return FOLLOWER
    wrong = mismatches(params)
    if wrong:
        raise ConfigError(
            "cannot validate results: "
            + "; ".join(wrong)
            + " (install those versions, or set [node] validate_results = false to follow)"
        )
    return VALIDATOR


def status(params: NetworkParams, mode: str) -> dict[str, object]:
    wanted = dict(params.runtime)
    have = installed(wanted)
    return {
        "mode": mode,
        "runtime": have,
        "network_runtime": wanted,
        "runtime_matches": have == wanted,
    }
