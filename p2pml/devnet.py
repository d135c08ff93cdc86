"""``p2pml devnet``: a local network of real node processes on loopback.

Each node gets its own data dir under ``--dir``, a well-known funded dev key,
embedded IPFS, mining and training. Nodes start one after another so each
can be told the IPFS and libp2p addresses of those before it (a full mesh).
With ``--demo`` a bundled real dataset (scikit-learn's diabetes) is added on
node 1, a task is published from node 2, and progress is shown until the
task closes. Ctrl-C stops every node cleanly.

Ctrl-C (or SIGTERM) at any moment stops every process the devnet started: a
node is registered in the same step that spawns it (the interrupt is held
back for those few lines), so a node still starting is stopped too; and each
node's process group (the node, its Kubo and worker processes) is swept
after the node exits, so nothing a node left behind survives. A second
Ctrl-C while stopping kills everything at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2pml.api.client import ApiClient
from p2pml.chain.params import NETWORKS
from p2pml.errors import ApiError

STARTUP_TIMEOUT = 90.0


def free_port() -> int:
    """A loopback TCP port free right now (the node binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # an inline table, e.g. [federated] private = {digits = "..."}
        pairs = (f"{json.dumps(str(k))} = {toml_value(x)}" for k, x in v.items())
        return "{" + ", ".join(pairs) + "}"
    return json.dumps(str(v))


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> None:
    out = []
    for name, body in sections.items():
        out.append(f"[{name}]")
        out += [f"{k} = {toml_value(v)}" for k, v in body.items()]
        out.append("")
    path.write_text("\n".join(out))


@dataclass
class DevNode:
    index: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    api: ApiClient = field(default_factory=lambda: ApiClient("http://127.0.0.1:1"))
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "blockchain.log"


class Devnet:
    def __init__(
        self,
        base: Path,
        n: int,
        network: str = "devnet",
        mining_workers: int = 1,
        out: Any = sys.stdout,
    ) -> None:
        self.base = base
        self.n = n
        self.network = network
        self.mining_workers = mining_workers
        self.out = out
        self.nodes: list[DevNode] = []

    def say(self, msg: str) -> None:
        print(msg, file=self.out, flush=True)

    # -- lifecycle -------------------------------------------------------------------

    def start(self, guard: InterruptGuard | None = None) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        held = guard.held if guard is not None else contextlib.nullcontext
        for i in range(self.n):
            node = DevNode(i + 1, self.base / f"node{i + 1}")
            node.dir.mkdir(parents=True, exist_ok=True)
            self._configure(node, dev_key=i)
            with held():  # spawned and registered, or neither: stop() sees every node
                self._launch(node)
                self.nodes.append(node)
            self._wait_up(node)
            self.say(
                f"node{node.index} up: API {node.api.base}, "
                f"p2p {node.status['listen'][0] if node.status.get('listen') else '-'}"
            )

    def _configure(self, node: DevNode, dev_key: int) -> None:
        bootstrap = [
            f"{n.status['listen'][0]}/p2p/{n.status['peer_id']}"
            for n in self.nodes
            if n.status.get("listen")
        ]
        ipfs_peers = [a for n in self.nodes for a in n.status.get("ipfs", {}).get("swarm", [])[:1]]
        # A fixed swarm port: the embedded IPFS node keeps its address across
        # restarts, so the peers that were told it can still reach it.
        swarm_port = free_port()
        write_config(
            node.dir / "node.toml",
            {
                "node": {"network": self.network, "data_dir": "data", "dev_key": dev_key},
                "p2p": {"listen": ["/ip4/127.0.0.1/tcp/0"], "bootstrap": bootstrap},
                "ipfs": {
                    "mode": "embedded",
                    "swarm": [f"/ip4/127.0.0.1/tcp/{swarm_port}"],
                    "peers": ipfs_peers,
                },
                "mining": {"enabled": True, "workers": self.mining_workers},
                "training": {"enabled": True, "workers": 1},
                "admin": {"listen": "127.0.0.1:0"},
                "log": {"level": "INFO"},
            },
        )

    def _launch(self, node: DevNode) -> None:
        (node.data_dir / "api.url").unlink(missing_ok=True)
        console = open(node.dir / "console.log", "ab")  # noqa: SIM115 - owned by the process
        node.proc = subprocess.Popen(
            [sys.executable, "-m", "p2pml.cli", "node", "--config", "node.toml"],
            cwd=node.dir,
            stdout=console,
            stderr=console,
            start_new_session=True,  # our Ctrl-C is forwarded as an ordered SIGTERM
        )
        console.close()

    def _wait_up(self, node: DevNode) -> None:
        url_file = node.data_dir / "api.url"
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            assert node.proc is not None
            if node.proc.poll() is not None:
                tail = (node.dir / "console.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"node{node.index} exited at start:\n{tail}")
            if url_file.exists() and url_file.read_text().endswith("\n"):
                token = (node.data_dir / "admin.token").read_text().strip()
                node.api = ApiClient(url_file.read_text().strip(), token, timeout=30)
                try:
                    node.status = node.api.get("/status")
                    return
                except ApiError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"node{node.index} did not come up in {STARTUP_TIMEOUT:.0f}s")
            time.sleep(0.1)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every node (ordered shutdown), wait, then sweep each node's
        process group: whatever a node left behind, or a node that did not
        stop in time, gets SIGKILL."""
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for node in self.nodes:
            if node.proc is None:
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.proc.wait(max(0.0, deadline - time.monotonic()))
        self.kill_all()

    def signal_kill(self) -> None:
        """SIGKILL every node's process group now (safe inside a signal handler)."""
        for node in self.nodes:
            if node.proc is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(node.proc.pid, signal.SIGKILL)

    def kill_all(self) -> None:
        for node in self.nodes:
            if node.proc is None:
                continue
            # The node leads its own session and process group (start_new_session);
            # its Kubo and worker processes stay in it even after the node exited.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(node.proc.pid, signal.SIGKILL)
            node.proc.wait()

    # -- demo --------------------------------------------------------------------------

    def demo(self, rounds: int = 2, deadline: int = 12) -> dict[str, Any]:
        from sklearn.datasets import load_diabetes

        csv = self.base / "diabetes.csv"
        load_diabetes(as_frame=True).frame.to_csv(csv, index=False)
        first, publisher = self.nodes[0], self.nodes[min(1, len(self.nodes) - 1)]
        cid = first.api.upload("/datasets", csv)["cid"]
        self.say(f"dataset diabetes.csv (442 rows) added on node1: {cid}")
        # A result counts only from a bond registered bond_maturity blocks
        # before the task's block: the dev keys' genesis bonds must be that
        # old first, or every result is refused (bond-too-young).
        mature = NETWORKS[self.network].bond_maturity
        deadline_s = time.monotonic() + 300
        while publisher.api.get("/status")["height"] < mature - 1:
            if time.monotonic() > deadline_s:
                raise RuntimeError(f"no block {mature - 1} after 300 s")
            time.sleep(0.5)
        task = publisher.api.post(
            "/tasks",
            {
                "dataset_cid": cid,
                "target": "target",
                "model": "ridge",
                "kind": "regression",
                "metric": "r2",
                "params": {"alpha": 0.1},
                "rounds": rounds,
                "partition_fraction": 0.6,
                "bounty": 1_000_000,
                "deadline": deadline,
                "max_results": rounds * len(self.nodes),
            },
        )
        tid = task["id"]
        self.say(f"task {tid[:16]} published from node{publisher.index}: ridge on diabetes, r2")
        last = ""
        while True:
            view = publisher.api.get(f"/tasks/{tid}")
            st = publisher.api.get("/status")
            best = view.get("best")
            line = (
                f"height {st['height']:>4}  peers {st['peers']}  task {view['status']:<8} "
                f"results {view['rounds_done']}/{view.get('max_results', '?')}  "
                f"best r2 {best['metric']:.4f}"
                if best
                else f"height {st['height']:>4}  peers {st['peers']}  task {view['status']:<8} "
                f"results {view['rounds_done']}/{view.get('max_results', '?')}"
            )
            if view["status"] == "closed" and not view.get("paid"):
                # The bounty is credited a window of blocks after close.
                line += f"  payout at height {view.get('payout_height')}"
            if line != last:
                self.say(line)
                last = line
            if view["status"] == "closed" and view.get("paid"):
                return dict(view)
            for node in self.nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    raise RuntimeError(f"node{node.index} stopped; see {node.dir}/console.log")
            time.sleep(1.0)

    def report(self, view: dict[str, Any]) -> None:
        names = {n.status.get("public_key", ""): f"node{n.index}" for n in self.nodes}
        self.say("")
        self.say(f"{'round':<6} {'trainer':<8} {'r2':>10}  model CID")
        for r in sorted(view["results"], key=lambda r: -r["metric"]):
            who = names.get(r["trainer"], r["trainer"][:8])
            self.say(f"{r['round']:<6} {who:<8} {r['metric']:>10.6f}  {r['model_cid']}")
        best = view.get("best")
        if best:
            self.say(f"\nbest: r2 {best['metric']:.6f} by {names.get(best['trainer'], '?')}")
        for p in view.get("payout", []):
            self.say(f"paid {p['amount']} to {names.get(p['to'], p['to'][:16])}")
        self.say("\nwhere to look:")
        for n in self.nodes:
            self.say(f"  node{n.index}: {n.api.base}/status   tail -f {n.log_file}")
        cli = f"{cli_command()} --api {self.nodes[0].api.base}"
        self.say(f"  CLI: {cli} chain")
        self.say(f"  the model: {cli} model get {view['id']} -o model.skops")
        self.say(f"  predict:   {cli} predict --model model.skops YOUR.csv -o predictions.csv")


def cli_command() -> str:
    """How to run this very p2pml from the user's shell, as it will be typed:
    the venv's script (relative to the working directory when inside it),
    else this interpreter with ``-m p2pml.cli``."""
    script = Path(sys.executable).parent / "p2pml"
    if not script.exists():
        return f"{shlex.quote(sys.executable)} -m p2pml.cli"
    try:
        return shlex.quote(str(script.relative_to(Path.cwd())))
    except ValueError:
        return shlex.quote(str(script))


class InterruptGuard:
    """SIGINT/SIGTERM raise KeyboardInterrupt, except inside ``held()``: there
    they are remembered and raised at its end, so a spawn and its registration
    are never split. While stopping, another signal kills every node at once."""

    def __init__(self, hurry: Any) -> None:
        self._depth = 0
        self._pending = False
        self._raised = False
        self._hurry = hurry  # called (from the handler) on a signal after the first

    def handler(self, _sig: int, _frame: Any) -> None:
        if self._raised:
            self._hurry()
            return
        if self._depth:
            self._pending = True
            return
        self._raised = True
        raise KeyboardInterrupt

    def stopping(self) -> None:
        """From now on a signal hurries the stop instead of raising."""
        self._raised = True

    @contextlib.contextmanager
    def held(self) -> Any:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if self._pending and not self._depth:
            self._pending = False
            self._raised = True
            raise KeyboardInterrupt


def run_devnet(base: Path, n: int, demo: bool, workers: int = 1) -> int:
    net = Devnet(base, n, mining_workers=workers)
    interrupted = False
    guard = InterruptGuard(net.signal_kill)
    old = {sig: signal.signal(sig, guard.handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        net.start(guard)
        cli = f"{cli_command()} --api {net.nodes[0].api.base}"
        if demo:
            net.report(net.demo())
            net.say("\ndemo done; the network keeps running. Ctrl-C stops it.")
        else:
            net.say(f"devnet running. CLI: {cli} status\nCtrl-C stops it.")
        while all(node.proc is not None and node.proc.poll() is None for node in net.nodes):
            time.sleep(0.5)
        net.say("a node stopped; shutting the devnet down")
        return 1
    except KeyboardInterrupt:
        interrupted = True
        return 0
    finally:
        guard.stopping()  # a second Ctrl-C: no more waiting
        net.say("stopping nodes..." if interrupted else "stopping nodes")
        net.stop()
        for sig, handler in old.items():
            signal.signal(sig, handler)
