"""`p2pml devnet --demo` as a user runs it (scripts/demo): nodes come up, a
task is followed to its close with a payout, then Ctrl-C (SIGINT) stops every
node in order."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tests.framework.testnode import ROOT
from tests.framework.waiting import scaled, wait_until_sync


def test_devnet_demo_then_ctrl_c(tmp_path: Path) -> None:
    base = tmp_path / "devnet"
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2pml.cli", "devnet", "--demo", "--nodes", "2", "--dir", str(base)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_until_sync(
            lambda: any(x.startswith("demo done") for x in lines) or proc.poll() is not None,
            600,
            what="the demo task to close",
        )
        out = "\n".join(lines)
        assert proc.poll() is None, out
        assert "node1 up: API http://127.0.0.1:" in out and "node2 up" in out
        assert "best: r2" in out and "paid " in out, out
        proc.send_signal(signal.SIGINT)
        assert proc.wait(scaled(60)) == 0, "\n".join(lines)
    finally:
        if proc.poll() is None:  # a failure above: still stop the nodes it started
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    reader.join(10)
    assert lines[-1] == "stopping nodes...", lines[-5:]
    for i in (1, 2):
        node_dir = base / f"node{i}"
        console = (node_dir / "console.log").read_text(errors="replace")
        assert "Traceback" not in console, console[-3000:]
        assert "node stopped in" in console
        assert "height" in (node_dir / "data" / "blockchain.log").read_text()
