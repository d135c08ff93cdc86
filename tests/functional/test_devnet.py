"""``p2pml devnet``: Ctrl-C at any point of start-up leaves no process behind,
and the CLI command it prints works exactly as shown.

Every process the devnet starts inherits a marker in its environment; after
the interrupt, psutil must find no live process carrying it (nodes, their
embedded Kubo, mining and training workers).
"""

from __future__ import annotations

import os
import queue
import random
import shlex
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil

from tests.framework.testnode import ROOT
from tests.framework.waiting import wait_until_sync

MARK = "P2PML_DEVNET_TEST_MARK"


def marked(mark: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get(MARK) == mark and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return out


def start_devnet(base: Path, mark: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "p2pml.cli", "devnet", "--nodes", "2", "--dir", str(base)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), MARK: mark},
        start_new_session=True,  # our SIGINT goes to the devnet alone, like a terminal's
    )


def exists(path: Path) -> Callable[[], bool]:
    return path.exists


def test_ctrl_c_at_any_point_of_startup_leaves_nothing(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    points: list[tuple[str, Callable[[Path], Callable[[], bool]]]] = [
        ("node1 configured", lambda b: exists(b / "node1" / "node.toml")),
        ("node1 spawned", lambda b: exists(b / "node1" / "console.log")),
        ("node1 API up", lambda b: exists(b / "node1" / "data" / "api.url")),
        ("node2 spawned", lambda b: exists(b / "node2" / "console.log")),
        ("node2 API up", lambda b: exists(b / "node2" / "data" / "api.url")),
    ]
    for i, (what, ready) in enumerate(points):
        base = tmp_path / f"run{i}"
        mark = uuid.uuid4().hex
        proc = start_devnet(base, mark)
        try:
            wait_until_sync(ready(base), 120, interval=0.005, what=what)
            # A random moment shortly after the point (seeded: see the message).
            jitter = rng.uniform(0, 0.3)
            _sleep_jitter(jitter)
            assert marked(mark), f"{what}: nothing started?"
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        assert "Traceback" not in out, f"{what} (seed {seed}):\n{out}"
        try:
            wait_until_sync(lambda m=mark: not marked(m), 15, what="every devnet process gone")
        except AssertionError:
            left = [(p.pid, " ".join(p.cmdline())[:120]) for p in marked(mark)]
            for p in marked(mark):
                p.kill()
            raise AssertionError(
                f"interrupted at {what} +{jitter:.3f}s (seed {seed}): {left}"
            ) from None


def _sleep_jitter(seconds: float) -> None:
    # Picks the interrupt moment (the thing under test), not a synchronisation.
    import time

    time.sleep(seconds)


def read_line_with(proc: subprocess.Popen[str], text: str, timeout: float) -> str:
    """The first output line containing ``text`` (AssertionError after ``timeout``)."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    seen = []
    try:
        while True:
            line = lines.get(timeout=timeout)
            seen.append(line)
            if text in line:
                return line
    except queue.Empty:
        raise AssertionError(f"no line with {text!r} in {timeout}s: {''.join(seen)}") from None


def test_printed_cli_command_works_as_shown(tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    proc = start_devnet(tmp_path / "net", mark)
    try:
        line = read_line_with(proc, "CLI:", 180)
        command = line.split("CLI:", 1)[1].strip()
        assert command.startswith(".venv/bin/p2pml ") or " -m p2pml.cli " in command, command
        # Run exactly as printed, from where the devnet was started, without PATH help.
        r = subprocess.run(
            shlex.split(command),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
            | {"PATH": "/usr/bin:/bin"},
        )
        assert r.returncode == 0, r.stderr
        assert "height:" in r.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    wait_until_sync(lambda: not marked(mark), 15, what="every devnet process gone")
