"""The test-suite call log: command paths from argv, the command list from the
argparse tree, and the lines the CLI writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pml import calllog
from p2pml.cli import build_parser, main


def test_command_path_follows_subcommands_past_options() -> None:
    p = build_parser()
    assert calllog.command_path(p, ["--json", "peers", "disconnect", "X", "--ban", "5"]) == (
        "peers disconnect"
    )
    assert calllog.command_path(p, ["--api", "http://h", "peers"]) == "peers"
    assert calllog.command_path(p, ["task", "publish", "--param", "alpha=1"]) == "task publish"


def test_all_commands_lists_leaves_and_optional_parents() -> None:
    cmds = calllog.all_commands(build_parser())
    assert {"peers", "peers connect", "peers disconnect", "task show", "dataset add"} <= set(cmds)
    assert "task" not in cmds and "dataset" not in cmds  # their subcommand is required
    assert "node" in cmds and "devnet" in cmds


def test_cli_appends_one_line_per_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(calllog.ENV, str(tmp_path))
    assert main(["--api", "http://127.0.0.1:1", "chain", "--tips"]) == 1  # nobody listens
    lines = [x for f in tmp_path.iterdir() for x in f.read_text().splitlines()]
    assert lines == ["cli chain"]
    monkeypatch.setenv(calllog.ENV, "")
    calllog.record("cli nothing")  # off: writes nowhere
    assert [x for f in tmp_path.iterdir() for x in f.read_text().splitlines()] == ["cli chain"]
