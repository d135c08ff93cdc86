"""The embedded backend's reply channel, against real child processes."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

import pytest

from p2pml.errors import DaemonUnavailable, DatasetError
from p2pml.ipfs.worker_channel import WorkerChannel, kill_worker

HELLO = 'print(\'{"id": 0, "ok": true, "result": {}}\', flush=True)\n'

ECHO = (
    HELLO
    + """
import json, sys, time
for line in sys.stdin:
    req = json.loads(line)
    ok = req["op"] != "fail"
    reply = json.dumps({"id": req["id"], "ok": ok, "result": req["args"], "error": "nope"})
    half = len(reply) // 2  # one reply in two writes: the channel must join them
    sys.stdout.write(reply[:half]); sys.stdout.flush()
    sys.stdout.write(reply[half:] + "\\n"); sys.stdout.flush()
"""
)


async def spawn(script: str) -> tuple[asyncio.SubprocessTransport, WorkerChannel]:
    channel = WorkerChannel("test worker")
    proc, _ = await asyncio.get_running_loop().subprocess_exec(
        lambda: channel,
        sys.executable,
        "-c",
        script,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    return proc, channel


def send(proc: asyncio.SubprocessTransport, line: bytes) -> None:
    stdin = proc.get_pipe_transport(0)
    assert isinstance(stdin, asyncio.WriteTransport)
    stdin.write(line)


async def test_replies_reach_their_requests_even_split_across_reads() -> None:
    proc, channel = await spawn(ECHO)
    try:
        assert (await asyncio.wait_for(channel.hello, 30))["ok"] is True
        first, second, failing = channel.expect(1), channel.expect(2), channel.expect(3)
        send(proc, b'{"id": 2, "op": "x", "args": {"n": 2}}\n')
        send(proc, b'{"id": 1, "op": "x", "args": {"n": 1}}\n')
        send(proc, b'{"id": 3, "op": "fail", "args": {}}\n')
        assert await asyncio.wait_for(first, 30) == {"n": 1}
        assert await asyncio.wait_for(second, 30) == {"n": 2}
        with pytest.raises(DatasetError, match="embedded IPFS node: nope"):
            await asyncio.wait_for(failing, 30)
    finally:
        await kill_worker(proc, channel)
    assert proc.get_returncode() is not None


async def test_child_exit_fails_waiting_and_later_requests() -> None:
    proc, channel = await spawn(HELLO + "import sys; sys.stdin.readline()\n")
    try:
        await asyncio.wait_for(channel.hello, 30)
        waiting = channel.expect(1)
        send(proc, b"\n")  # the child reads one line and exits without replying
        with pytest.raises(DaemonUnavailable, match="test worker: it exited"):
            await asyncio.wait_for(waiting, 30)
        with pytest.raises(DaemonUnavailable, match="it exited"):
            await channel.expect(2)
    finally:
        await kill_worker(proc, channel)


async def test_child_dying_during_start_gives_a_failed_hello() -> None:
    proc, channel = await spawn("import sys; sys.exit(3)")
    hello = await asyncio.wait_for(channel.hello, 30)
    assert hello == {"ok": False, "error": "exited during start"}
    await kill_worker(proc, channel)
    # Not "== 3": killing a child that has just exited can reap it before
    # asyncio's watcher does, which then reports 255.
    assert proc.get_returncode() is not None


async def test_requests_fail_at_stdout_eof_not_at_exit() -> None:
    """A reply still on its way when the process exits is delivered, not failed.

    The child exits at once, leaving a grandchild that holds its stdout and
    replies only when told, after the exit was seen here.
    """
    grandchild_replies = (
        "import os, sys\n"
        "sys.stdin.readline()\n"
        "if os.fork() == 0:\n"
        "    sys.stdin.readline()\n"
        '    print(\'{"id": 1, "ok": true, "result": 7}\', flush=True)\n'
        "    os._exit(0)\n"
        "os._exit(0)\n"
    )
    proc, channel = await spawn(HELLO + grandchild_replies)
    await asyncio.wait_for(channel.hello, 30)
    late = channel.expect(1)
    send(proc, b"fork\n")
    await asyncio.wait_for(asyncio.shield(channel.exited), 30)
    assert not late.done()
    send(proc, b"reply\n")
    assert await asyncio.wait_for(late, 30) == 7
    stdin = proc.get_pipe_transport(0)
    assert stdin is not None
    stdin.close()
    await kill_worker(proc, channel)


@pytest.mark.parametrize(
    "reply", [b"garbage", b"[1, 2]", b'{"id": [1], "ok": true}', b'{"ok": true}', b"7"]
)
async def test_malformed_reply_kills_the_child(reply: bytes) -> None:
    proc, channel = await spawn(
        HELLO
        + "import sys, time; sys.stdin.readline(); "
        + f"sys.stdout.write({reply.decode()!r} + '\\n'); sys.stdout.flush(); time.sleep(60)\n"
    )
    try:
        await asyncio.wait_for(channel.hello, 30)
        waiting = channel.expect(1)
        send(proc, b"\n")
        with pytest.raises(DaemonUnavailable, match=re.escape(f"malformed reply {reply!r}")):
            await asyncio.wait_for(waiting, 30)
        await asyncio.wait_for(asyncio.shield(channel.exited), 30)  # killed, not left sleeping
        assert proc.get_returncode() is not None
    finally:
        await kill_worker(proc, channel)


async def test_lines_are_joined_whatever_the_read_boundaries() -> None:
    """Fed one byte at a time (no process: the boundaries are ours to choose)."""
    channel = WorkerChannel("test worker")
    first, second = channel.expect(1), channel.expect(2)
    data = (
        b'{"id": 0, "ok": true}\n'
        b'{"id": 2, "ok": true, "result": "b"}\n'
        b'{"id": 1, "ok": true, "result": "a"}\n'
    )
    for i in range(len(data)):
        channel.pipe_data_received(1, data[i : i + 1])
    assert channel.hello.result() == {"id": 0, "ok": True}
    assert (first.result(), second.result()) == ("a", "b")


async def test_a_reply_over_the_line_cap_breaks_the_channel() -> None:
    channel = WorkerChannel("test worker")
    channel.MAX_LINE = 1000
    waiting = channel.expect(1)
    for _ in range(3):
        channel.pipe_data_received(1, b"x" * 400)  # no newline: one line growing past the cap
    with pytest.raises(DaemonUnavailable, match="longer than 1000 bytes"):
        waiting.result()
    channel.pipe_data_received(1, b'\n{"id": 2, "ok": true}\n')  # ignored once broken
    with pytest.raises(DaemonUnavailable, match="it exited"):
        await channel.expect(2)
