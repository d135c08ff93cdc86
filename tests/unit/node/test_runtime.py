"""The runtime as a network parameter: who may validate, and the config
keys that make a follower or (regtest, tests only) another runtime."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from p2pml.chain.params import DEVNET, MAIN, REGTEST
from p2pml.config import load_settings
from p2pml.errors import ConfigError
from p2pml.node import runtime


def test_every_network_pins_the_installed_runtime() -> None:
    for p in (MAIN, DEVNET, REGTEST):
        assert dict(p.runtime) == runtime.installed(["dp-accounting", "numpy", "scikit-learn"])
        assert runtime.validation_mode(p, validate_results=True) == runtime.VALIDATOR


def test_another_runtime_may_not_validate_but_may_follow() -> None:
    other = runtime.with_regtest_runtime(REGTEST, ["scikit-learn==0.0.1", "numpy==9.9"])
    assert other.runtime == (("numpy", "9.9"), ("scikit-learn", "0.0.1"))
    assert other.genesis_hash == REGTEST.genesis_hash  # the same network, another runtime
    with pytest.raises(ConfigError) as err:
        runtime.validation_mode(other, validate_results=True)
    line = str(err.value)
    assert "\n" not in line
    assert f"numpy {metadata.version('numpy')} installed, network regtest runs 9.9" in line
    assert "scikit-learn" in line
    assert runtime.validation_mode(other, validate_results=False) == runtime.FOLLOWER
    st = runtime.status(other, runtime.FOLLOWER)
    assert st["mode"] == "follower" and st["runtime_matches"] is False
    missing = runtime.with_regtest_runtime(REGTEST, ["no-such-dist==1"])
    assert runtime.mismatches(missing) == ["no-such-dist not installed, network regtest runs 1"]


def _load(tmp_path: Path, text: str) -> None:
    cfg = tmp_path / "n.toml"
    cfg.write_text(text)
    load_settings(cfg, env={})


def test_config_keys_are_checked(tmp_path: Path) -> None:
    _load(tmp_path, "[node]\nregtest_runtime = ['numpy==1']\nvalidate_results = false\n")
    with pytest.raises(ConfigError, match=r"regtest_runtime.*only on regtest"):
        _load(tmp_path, "[node]\nnetwork = 'devnet'\nregtest_runtime = ['numpy==1']\n")
    with pytest.raises(ConfigError, match="expected NAME==VERSION"):
        _load(tmp_path, "[node]\nregtest_runtime = ['numpy']\n")
    with pytest.raises(ConfigError, match="follower"):
        _load(tmp_path, "[node]\nvalidate_results = false\n[training]\nenabled = true\n")
