"""The browser test's LoopbackGuard sees a socket aimed outside loopback.

A connected UDP socket has a remote address but sends no packet, so this
proves the guard can fail without anything leaving the machine."""

from __future__ import annotations

import subprocess
import sys

from tests.framework.browser import LoopbackGuard

CHILD = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((sys.argv[1], 9))  # UDP connect: sets the peer, sends nothing
print("ready", flush=True)
sys.stdin.read()
"""


def guard_over_child(addr: str) -> LoopbackGuard:
    # The child is a grandchild of the guarded process, as chromium's helpers are.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys; subprocess.run([sys.executable, '-c', {CHILD!r}, {addr!r}])",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        guard = LoopbackGuard(proc.pid)
        guard.check()
        return guard
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(30)


def test_guard_flags_a_socket_aimed_outside_loopback() -> None:
    guard = guard_over_child("192.0.2.1")  # TEST-NET-1
    assert guard.sockets_seen == 1
    assert len(guard.violations) == 1 and "192.0.2.1" in guard.violations[0]


def test_guard_accepts_loopback() -> None:
    guard = guard_over_child("127.0.0.1")
    assert guard.sockets_seen == 1
    assert guard.violations == []
