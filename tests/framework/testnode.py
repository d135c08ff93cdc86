"""Real node processes for functional tests, in the style of Bitcoin Core's
test framework: each TestNode is a ``p2pml node`` process with its own data
dir and ports, driven over its admin API.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from p2pml.api.client import ApiClient
from p2pml.devnet import free_port, write_config
from tests.framework.waiting import TIMEOUT_FACTOR, wait_until_sync

ROOT = Path(__file__).resolve().parents[2]


class TestNode:
    """One ``p2pml node`` process. ``api`` is an authenticated ApiClient."""

    __test__ = False  # not a pytest class

    def __init__(
        self,
        index: int,
        base_dir: Path,
        network: str = "regtest",
        extra: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.index = index
        self.dir = base_dir / f"node{index}"
        self.data_dir = self.dir / "data"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "node.toml"
        sections: dict[str, dict[str, Any]] = {
            "node": {"network": network, "data_dir": str(self.data_dir)},
            "p2p": {"listen": ["/ip4/127.0.0.1/tcp/0"], "bootstrap": []},
            "ipfs": {"mode": "embedded"},
            "admin": {"listen": "127.0.0.1:0"},
            "log": {"level": "DEBUG"},
        }
        for name, body in (extra or {}).items():
            sections.setdefault(name, {}).update(body)
        self.sections = sections
        write_config(self.config, sections)
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr_path = self.dir / "stderr.log"
        self._stderr: Any = None
        self.api: ApiClient = ApiClient("http://127.0.0.1:1")

    def configure(self, section: str, **values: Any) -> None:
        """Change config keys (takes effect at the next start)."""
        self.sections.setdefault(section, {}).update(values)
        write_config(self.config, self.sections)

    # -- process -------------------------------------------------------------------

    def start(self, wait: bool = True, env: dict[str, str] | None = None) -> None:
        url_file = self.data_dir / "api.url"
        url_file.unlink(missing_ok=True)
        self._stderr = open(self.stderr_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "p2pml.cli", "node", "--config", str(self.config)],
            cwd=self.dir,
            stdout=self._stderr,
            stderr=self._stderr,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            start_new_session=True,
        )
        if wait:
            self.wait_for_api()

    def wait_for_api(self, timeout: float = 60) -> None:
        url_file = self.data_dir / "api.url"

        def up() -> bool:
            self.assert_running()
            return url_file.exists() and url_file.read_text().endswith("\n")

        wait_until_sync(up, timeout, what=f"node{self.index} API")
        token = (self.data_dir / "admin.token").read_text().strip()
        self.api = ApiClient(url_file.read_text().strip(), token)
        wait_until_sync(self._answers, timeout, what=f"node{self.index} /status")

    def _answers(self) -> bool:
        try:
            self.api.get("/status")
            return True
        except Exception:
            return False

    def assert_running(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                f"node{self.index} exited with {self.proc.returncode}:\n{self.output()[-3000:]}"
            )

    def output(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 10, sig: int = signal.SIGTERM) -> float:
        """Signal (SIGTERM by default) and wait; returns how long the shutdown
        took. An ordered stop must exit 0 with no traceback."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout * TIMEOUT_FACTOR)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"node{self.index} did not stop within {timeout}s") from None
        took = time.monotonic() - t0
        self._close()
        self.check_no_traceback()
        if self.proc.returncode != 0:
            raise AssertionError(
                f"node{self.index} exited with {self.proc.returncode} after "
                f"{signal.Signals(sig).name}:\n{self.output()[-2000:]}"
            )
        return took

    def kill(self) -> None:
        """SIGKILL the whole process group (a crash, or cleanup)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._close()

    def _close(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def check_no_traceback(self) -> None:
        out = self.output()
        if "Traceback (most recent call last)" in out:
            raise AssertionError(f"node{self.index} printed a traceback:\n{out[-4000:]}")

    # -- views -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return dict(self.api.get("/status"))

    @property
    def height(self) -> int:
        return int(self.status()["height"])

    @property
    def tip(self) -> str:
        return str(self.status()["tip"])

    def mine(self, n: int) -> list[str]:
        return list(self.api.post("/mine", {"blocks": n})["hashes"])

    def p2p_addrs(self) -> list[str]:
        return list(self.status()["listen"])


def blocks_rejected(node: TestNode, reason: str) -> int:
    """The node's count of blocks rejected for ``reason`` (0 if none yet)."""
    m = re.search(
        rf'^p2pml_blocks_rejected_total{{reason="{re.escape(reason)}"}} (\d+)$',
        node.api.get("/metrics"),
        re.MULTILINE,
    )
    return int(m.group(1)) if m else 0


def sync_blocks(nodes: Iterable[TestNode], timeout: float = 60) -> None:
    nodes = list(nodes)

    def same() -> bool:
        return len({n.tip for n in nodes}) == 1

    wait_until_sync(same, timeout, what="nodes to agree on the tip")


def sync_mempools(nodes: Iterable[TestNode], timeout: float = 60) -> None:
    nodes = list(nodes)

    def same() -> bool:
        pools = [sorted(tx["id"] for tx in n.api.get("/mempool")) for n in nodes]
        return all(p == pools[0] for p in pools)

    wait_until_sync(same, timeout, what="mempools to agree")


def connect_nodes(a: TestNode, b: TestNode, timeout: float = 30) -> None:
    addr = b.p2p_addrs()[0]
    a.api.post("/peers", {"addr": addr})
    b_id = b.status()["peer_id"]
    a_id = a.status()["peer_id"]

    def linked() -> bool:
        return any(p["peer_id"] == b_id for p in a.api.get("/peers")) and any(
            p["peer_id"] == a_id for p in b.api.get("/peers")
        )

    wait_until_sync(linked, timeout, what=f"node{a.index} <-> node{b.index}")


def disconnect_nodes(a: TestNode, b: TestNode, timeout: float = 30) -> None:
    b_id = b.status()["peer_id"]
    a.api.delete(f"/peers/{b_id}")

    def apart() -> bool:
        return not any(p["peer_id"] == b_id for p in a.api.get("/peers"))

    wait_until_sync(apart, timeout, what=f"node{a.index} -/- node{b.index}")


def split_network(groups: list[list[TestNode]]) -> None:
    """Cut every link between different groups."""
    for i, g in enumerate(groups):
        for other in groups[i + 1 :]:
            for a in g:
                for b in other:
                    ids = {p["peer_id"] for p in a.api.get("/peers")}
                    if b.status()["peer_id"] in ids:
                        disconnect_nodes(a, b)


def join_network(nodes: list[TestNode]) -> None:
    for a, b in itertools.pairwise(nodes):
        connect_nodes(a, b)


class NodeSet:
    """Owns test nodes and always kills leftovers (a pytest fixture uses it)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.nodes: list[TestNode] = []

    def add(self, network: str = "regtest", **extra: dict[str, Any]) -> TestNode:
        n = TestNode(len(self.nodes), self.base, network, extra)
        self.nodes.append(n)
        return n

    def start_all(self) -> None:
        for n in self.nodes:
            n.start(wait=False)
        for n in self.nodes:
            n.wait_for_api()

    def start_mesh(self, nodes: list[TestNode] | None = None) -> None:
        """Start nodes one by one, each told the embedded IPFS swarm address
        (on a fixed port) of those before it, so data moves over bitswap."""
        started = [m for m in self.nodes if m.proc is not None and m.proc.poll() is None]
        for n in nodes or self.nodes:
            peers = [a for m in started for a in m.status()["ipfs"]["swarm"][:1]]
            n.configure("ipfs", swarm=[f"/ip4/127.0.0.1/tcp/{free_port()}"], peers=peers)
            n.start()
            started.append(n)

    def cleanup(self, check: Callable[[TestNode], None] | None = None) -> None:
        errors = []
        for n in self.nodes:
            if n.proc is not None and n.proc.poll() is None:
                try:
                    n.stop()
                except AssertionError as exc:
                    errors.append(str(exc))
            n.kill()
            try:
                n.check_no_traceback()
            except AssertionError as exc:
                errors.append(str(exc))
        if errors:
            raise AssertionError("\n".join(errors))
