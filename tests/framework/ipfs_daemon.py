"""Start, stop, kill and restart a real js-ipfs daemon (Kubo RPC API) for tests.

js-ipfs 0.66.1 is installed by ``scripts/install-jsipfs`` into
``<repo>/.cache/jsipfs``. The daemon is offline and loopback-only:

* ``jsipfs init --profile=server --emptyRepo`` in a temp ``IPFS_PATH``;
* config rewritten: empty ``Bootstrap`` and ``Addresses.Delegates``, swarm,
  API, gateway and RPC on 127.0.0.1 only, mDNS and webRTCStar off, routing
  "none";
* ``jsipfs daemon --offline --enable-preload=false``.

Readiness is polled (``POST /api/v0/id`` until it answers), never slept for.
Ports are chosen once, so ``restart()`` comes back on the same API address.

Usage::

    with JsIpfsDaemon(tmp_path / "ipfs") as d:
        d.api_multiaddr   # "/ip4/127.0.0.1/tcp/NNNNN"
        d.kill(); d.start()
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
JSIPFS_DIR = Path(os.environ.get("JSIPFS_DIR", REPO_ROOT / ".cache" / "jsipfs"))
JSIPFS_BIN = JSIPFS_DIR / "node_modules" / ".bin" / "jsipfs"
NOT_INSTALLED = (
    f"js-ipfs is not installed at {JSIPFS_BIN}: run scripts/install-jsipfs "
    "(npm ipfs@0.66.1 with overrides; needs node and npm)"
)


class DaemonNotInstalled(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loopback_jsipfs_config(base: dict[str, Any], ports: dict[str, int]) -> dict[str, Any]:
    """The config the test daemon runs with: offline, loopback only."""
    cfg: dict[str, Any] = json.loads(json.dumps(base))
    addrs = cfg.setdefault("Addresses", {})
    addrs["Swarm"] = [f"/ip4/127.0.0.1/tcp/{ports['swarm']}"]
    addrs["API"] = f"/ip4/127.0.0.1/tcp/{ports['api']}"
    addrs["Gateway"] = f"/ip4/127.0.0.1/tcp/{ports['gateway']}"
    addrs["RPC"] = f"/ip4/127.0.0.1/tcp/{ports['rpc']}"
    addrs["Delegates"] = []
    addrs["Announce"] = []
    cfg["Bootstrap"] = []
    discovery = cfg.setdefault("Discovery", {})
    discovery["MDNS"] = {"Enabled": False, "Interval": 10}
    discovery["webRTCStar"] = {"Enabled": False}
    cfg["Routing"] = {"Type": "none"}
    cfg.pop("Peering", None)
    cfg.setdefault("Swarm", {})["DisableNatPortMap"] = True
    # fsync per block makes large adds in tests slow and buys nothing here.
    for mount in cfg.get("Datastore", {}).get("Spec", {}).get("mounts", []):
        if mount.get("child", {}).get("type") == "flatfs":
            mount["child"]["sync"] = False
    return cfg


class JsIpfsDaemon:
    def __init__(self, repo: Path, ready_timeout: float = 60.0) -> None:
        if not JSIPFS_BIN.exists():
            raise DaemonNotInstalled(NOT_INSTALLED)
        self.repo = repo
        self.ready_timeout = ready_timeout
        self.ports = {k: free_port() for k in ("api", "swarm", "gateway", "rpc")}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = repo.parent / f"{repo.name}-daemon.log"
        self._initialised = False

    @property
    def api_multiaddr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.ports['api']}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}/api/v0"

    @property
    def config_path(self) -> Path:
        return self.repo / "config"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["IPFS_PATH"] = str(self.repo)
        env.pop("IPFS_MONITORING", None)
        return env

    def init(self) -> None:
        if self._initialised:
            return
        if self.repo.exists():
            shutil.rmtree(self.repo)
        self.repo.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [str(JSIPFS_BIN), "init", "--profile=server", "--emptyRepo"],
            env=self._env(),
            check=True,
            capture_output=True,
            timeout=120,
        )
        base = json.loads(self.config_path.read_text())
        self.config_path.write_text(json.dumps(loopback_jsipfs_config(base, self.ports), indent=2))
        self._initialised = True

    def start(self) -> None:
        """Start (or restart, same ports and repo) and wait until the API answers."""
        self.init()
        if self.running:
            return
        # A killed daemon leaves its repo lock behind; js-ipfs refuses to start on it.
        for stale in ("repo.lock", "api"):
            path = self.repo / stale
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(JSIPFS_BIN), "daemon", "--offline", "--enable-preload=false"],
            env=self._env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: kill() reaches node children
        )
        log.close()
        self.wait_ready()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def is_ready(self) -> bool:
        try:
            req = urllib.request.Request(f"{self.api_url}/id", method="POST")
            with urllib.request.urlopen(req, timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"js-ipfs daemon exited with {self.proc.returncode}; log: "
                    f"{self.log_path.read_text(errors='replace')[-2000:]}"
                )
            if self.is_ready():
                return
            time.sleep(0.05)  # poll interval, not synchronisation
        raise TimeoutError(f"js-ipfs API {self.api_url} not ready after {self.ready_timeout}s")

    def _signal(self, sig: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL, as a crash would. The API port is closed when this returns."""
        if self.proc is None:
            return
        self._signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        """Graceful stop (SIGTERM, then SIGKILL after 10 s)."""
        if self.proc is None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def config(self) -> dict[str, Any]:
        return dict(json.loads(self.config_path.read_text()))

    def __enter__(self) -> JsIpfsDaemon:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def loopback_violations(cfg: dict[str, Any]) -> list[str]:
    """Every way an IPFS (Kubo or js-ipfs) config could reach past loopback; [] if none.

    Shared by the IPFS tests and the functional harness (devnet configs).
    """
    from p2pml.ipfs.netconfig import is_loopback_multiaddr

    problems: list[str] = []
    addrs = cfg.get("Addresses", {})
    for key in ("Swarm", "API", "Gateway", "RPC", "Announce", "AppendAnnounce"):
        value = addrs.get(key) or []
        for maddr in [value] if isinstance(value, str) else value:
            if maddr and not is_loopback_multiaddr(maddr):
                problems.append(f"Addresses.{key} has non-loopback {maddr}")
    if addrs.get("Delegates"):
        problems.append(f"Addresses.Delegates not empty: {addrs['Delegates']}")
    if cfg.get("Bootstrap"):
        problems.append(f"Bootstrap not empty: {cfg['Bootstrap']}")
    discovery = cfg.get("Discovery", {})
    if discovery.get("MDNS", {}).get("Enabled", True):
        problems.append("Discovery.MDNS enabled")
    if discovery.get("webRTCStar", {}).get("Enabled", False):
        problems.append("Discovery.webRTCStar enabled")
    if cfg.get("Routing", {}).get("Type") != "none":
        problems.append(f"Routing.Type is {cfg.get('Routing', {}).get('Type')!r}, not 'none'")
    swarm = cfg.get("Swarm", {})
    if not swarm.get("DisableNatPortMap", False):
        problems.append("Swarm.DisableNatPortMap is not true")
    for peer in (cfg.get("Peering") or {}).get("Peers") or []:
        for maddr in peer.get("Addrs", []):
            if not is_loopback_multiaddr(maddr):
                problems.append(f"Peering peer at non-loopback {maddr}")
    return problems


def kubo_extra_violations(cfg: dict[str, Any]) -> list[str]:
    """Kubo-only knobs (the embedded node): AutoNAT and relay must be off too."""
    problems: list[str] = []
    if cfg.get("AutoNAT", {}).get("ServiceMode") != "disabled":
        problems.append("AutoNAT.ServiceMode is not 'disabled'")
    swarm = cfg.get("Swarm", {})
    for key in ("RelayClient", "RelayService"):
        if swarm.get(key, {}).get("Enabled", True) is not False:
            problems.append(f"Swarm.{key} not disabled")
    if swarm.get("Transports", {}).get("Network", {}).get("Relay", True) is not False:
        problems.append("Swarm.Transports.Network.Relay not disabled")
    return problems
