"""Suite-wide hooks: tier markers by directory, and the report of CLI commands
and API routes that no test called.

Tiers: every test under tests/unit is ``unit``, tests/integration
``integration``, tests/functional ``functional`` and also ``slow`` (real node
processes), so ``scripts/test -m unit`` runs the fast tier alone.

Call report: the suite sets P2PML_TEST_CALL_LOG to a fresh directory before any
test (and before pytest-xdist starts its workers, which inherit it), so every
``p2pml`` CLI run and every admin API request a test makes, in this process or
in a node process, appends a line there (p2pml/calllog.py). ``--call-report``
prints which commands and routes no test called and fails the run if any.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from p2pml import calllog
from tests.framework.calls import expected_calls

ROOT = Path(__file__).resolve().parent
TIERS = {"unit": ("unit",), "integration": ("integration",), "functional": ("functional", "slow")}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--call-report",
        action="store_true",
        help="report CLI commands and API routes no test called; fail if there are any",
    )


def pytest_configure(config: pytest.Config) -> None:
    # The controller (or a plain run) makes the directory; xdist workers inherit it.
    if not os.environ.get(calllog.ENV):
        os.environ[calllog.ENV] = tempfile.mkdtemp(prefix="p2pml-calls-")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        try:
            tier = item.path.relative_to(ROOT).parts[0]
        except ValueError:
            continue
        for name in TIERS.get(tier, ()):
            item.add_marker(getattr(pytest.mark, name))


def recorded_calls() -> set[str]:
    seen: set[str] = set()
    for f in Path(os.environ[calllog.ENV]).glob("calls-*.log"):
        seen.update(line.strip() for line in f.read_text(errors="replace").splitlines())
    return seen


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if not config.getoption("--call-report") or hasattr(config, "workerinput"):
        return
    expected = expected_calls()
    missing = sorted(expected - recorded_calls())
    config.stash[_MISSING] = (len(expected), missing)
    if missing and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_MISSING = pytest.StashKey[tuple[int, list[str]]]()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    got = terminalreporter.config.stash.get(_MISSING, None)
    if got is None:
        return
    total, missing = got
    tr = terminalreporter
    tr.section("CLI commands and API routes called by no test")
    tr.write_line(f"{total - len(missing)} of {total} called; uncovered: {len(missing)}")
    for line in missing:
        tr.write_line(f"  UNCOVERED {line}", red=True)
