"""``[federated.private]``: NAME -> local CSV file, checked at load with one
clear line naming the key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pml.config import Settings, load_settings
from p2pml.errors import ConfigError


def load(tmp_path: Path, body: str) -> Settings:
    cfg = tmp_path / "node.toml"
    cfg.write_text(body)
    return load_settings(cfg, env={})


def test_private_files_map_names_to_paths_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "digits.csv").write_text("a,target\n1,0\n")
    s = load(tmp_path, '[federated.private]\ndigits = "digits.csv"\n')
    assert s.federated.private_file("digits") == tmp_path / "digits.csv"
    assert s.federated.private_file("other") is None
    assert load(tmp_path, "").federated.private == ()


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        (
            '[federated.private]\ndigits = "/nonexistent/digits.csv"\n',
            "[federated] private.digits: '/nonexistent/digits.csv': no such file",
        ),
        (
            '[federated.private]\n"two words" = "digits.csv"\n',
            "[federated] private.two words: names are 1..64 of A-Z a-z 0-9 _ . -",
        ),
        ("[federated]\nprivate = 3\n", '[federated] private: expected a table of NAME = "path'),
        ("[federated.private]\ndigits = 3\n", "[federated] private: expected a table of NAME"),
        ("[federated]\nshards = 1\n", "[federated] unknown key 'shards'"),
    ],
)
def test_bad_private_files_are_one_clear_line(tmp_path: Path, body: str, expect: str) -> None:
    (tmp_path / "digits.csv").write_text("a,target\n1,0\n")
    with pytest.raises(ConfigError) as e:
        load(tmp_path, body)
    assert expect in str(e.value) and "\n" not in str(e.value)
