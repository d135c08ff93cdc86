"""Run the real ``p2pml`` command line against a test node, as a user would:
a fresh interpreter (``python -m p2pml.cli``) with the node's API address and
admin token file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.framework.testnode import ROOT, TestNode
from tests.framework.waiting import scaled


def cli(
    node: TestNode,
    *args: str,
    check: bool = True,
    timeout: float | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``p2pml --api <node> ARGS``; ``check``: assert it exited 0 (showing its
    output). ``timeout``: seconds (default ``scaled(60)``)."""
    r = subprocess.run(
        [sys.executable, "-m", "p2pml.cli", "--api", node.api.base, *args],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "P2PML_TOKEN_FILE": str(node.data_dir / "admin.token"),
        },
        timeout=scaled(60) if timeout is None else timeout,
        cwd=cwd,
    )
    if check:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r
