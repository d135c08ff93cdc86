"""Test-suite call log: which CLI commands and API routes the tests used.

Off unless ``P2PML_TEST_CALL_LOG`` names a directory. Then the CLI appends
``cli <command path>`` and the admin API ``route <METHOD> <path template>``
to a per-process file there; the test suite's session hook reads them and
reports every command or route no test called (Bitcoin Core reports
uncovered RPCs the same way). One short append per call, nothing else.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

ENV = "P2PML_TEST_CALL_LOG"


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def record(line: str) -> None:
    """Append one line (O_APPEND: lines from concurrent writers never interleave)."""
    where = os.environ.get(ENV)
    if not where:
        return
    try:
        with open(Path(where) / f"calls-{os.getpid()}.log", "a", encoding="utf-8") as f:
            f.write(line + "\n")
    except OSError:  # a test aid must never break the program it observes
        pass


def record_cli(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    if enabled():
        record("cli " + command_path(parser, argv))


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:  # type: ignore[type-arg]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def command_path(parser: argparse.ArgumentParser, argv: Sequence[str]) -> str:
    """The (sub)command words of ``argv``, e.g. "peers disconnect"."""
    words: list[str] = []
    sub = _subparsers(parser)
    for token in argv:
        if sub is None:
            break
        if token in sub.choices:
            words.append(token)
            sub = _subparsers(sub.choices[token])
    return " ".join(words)


def all_commands(parser: argparse.ArgumentParser) -> list[str]:
    """Every command a user can run: each leaf of the subcommand tree, and a
    parent whose subcommand is optional (``peers`` lists peers)."""
    out: list[str] = []

    def walk(p: argparse.ArgumentParser, prefix: str) -> None:
        sub = _subparsers(p)
        if sub is None:
            out.append(prefix)
            return
        if prefix and not sub.required:
            out.append(prefix)
        for name, child in sub.choices.items():
            walk(child, f"{prefix} {name}".strip())

    walk(parser, "")
    return sorted(out)
