"""An attack mix against one real node process, and the probes that watch it.

:class:`AttackMix` drives :class:`~tests.framework.hostile_peer.HostilePeer`
hosts (real libp2p on loopback), one or more per attack:

* ``results``: bogus results for an honest task from fresh keys, validly
  signed; each names either a real artifact (an honest model re-signed) or an
  unfetchable CID;
* ``headers``: side branches forked at genesis (cheap regtest PoW);
* ``unfunded``: tasks from fresh keys with no coins;
* ``min-fee``: tasks at the network's minimum fee from a funded dev key.

Every attack is bounded in count and time and stops by itself (also when the
node bans its peer). :class:`StatusProbe` times ``GET /status`` on one
keep-alive connection; :class:`ResourceProbe` samples CPU seconds and RSS of
the node process and all its children with psutil. Used by
``scripts/bench_attack.py`` and ``tests/functional/test_attack_responsiveness.py``.
"""

from __future__ import annotations

import asyncio
import http.client
import re
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import psutil

from p2pml.chain.encoding import encode_block, encode_tx
from p2pml.chain.params import dev_identity, params_for
from p2pml.crypto import Identity
from tests.framework.hostile_peer import (
    HostilePeer,
    forged_results,
    genesis_forks,
    publish_paced,
    spam_task,
    unfetchable_cid,
)
from tests.framework.testnode import TestNode

ATTACKS = ("results", "headers", "unfunded", "min-fee")


@dataclass(frozen=True)
class HonestTask:
    """What the results attack forges claims for."""

    task_id: bytes
    seed: bytes
    rounds: int
    model_cids: tuple[str, ...]  # real artifacts the node can fetch
    train_rows: int
    metric: float
    dataset_cid: str


@dataclass
class AttackPlan:
    result_keys: int = 100
    result_peers: int = 4
    unfetchable_share: float = 0.5  # of the result keys
    # Each 2 blocks at genesis: 400 blocks, past the low-work budget's burst
    # (200) plus the 100 points of a ban, so the spammer ends banned in every
    # run rather than at the edge of its budget.
    fork_branches: int = 200
    unfunded_tasks: int = 400  # past the harmless budget even if the send queue drops some
    min_fee_tasks: int = 40
    funded_key: int = 1  # dev key the min-fee spammer signs with (the node is another)
    per_second: float = 40.0  # per peer
    max_seconds: float = 60.0


@dataclass
class AttackReport:
    sent: dict[str, int] = field(default_factory=dict)
    peers: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def messages(self) -> int:
        return sum(self.sent.values())


class AttackMix:
    def __init__(self, plan: AttackPlan, attacks: Iterable[str] = ATTACKS) -> None:
        self.plan = plan
        self.attacks = tuple(attacks)
        unknown = set(self.attacks) - set(ATTACKS)
        if unknown:
            raise ValueError(f"unknown attacks {sorted(unknown)}")
        self.peers: dict[str, list[HostilePeer]] = {}

    async def start(self, node_addr: str, node_peer_id: str) -> None:
        """Start and connect every attacker's host (before the clock starts)."""
        for name in self.attacks:
            n = self.plan.result_peers if name == "results" else 1
            self.peers[name] = [HostilePeer("regtest") for _ in range(n)]
            for hp in self.peers[name]:
                await hp.start()
                await hp.connect(node_addr)
                await hp.wait_subscribed(node_peer_id, "blocks")
                await hp.wait_subscribed(node_peer_id, "results")
                await hp.wait_subscribed(node_peer_id, "tasks")

    async def stop(self) -> None:
        for group in self.peers.values():
            for hp in group:
                await hp.stop()

    def peer_ids(self) -> dict[str, list[str]]:
        return {k: [hp.peer_id for hp in v] for k, v in self.peers.items()}

    async def run(self, honest: HonestTask | None) -> AttackReport:
        """Run every attack at once; returns what each sent."""
        plan = self.plan
        t0 = time.monotonic()
        until = t0 + plan.max_seconds
        jobs: dict[str, Any] = {}
        for name in self.attacks:
            if name == "results":
                if honest is None:
                    raise ValueError("the results attack needs an honest task")
                jobs[name] = self._results(honest, until)
            elif name == "headers":
                jobs[name] = self._headers(until)
            else:
                jobs[name] = self._tasks(name, honest, until)
        counts = await asyncio.gather(*jobs.values())
        return AttackReport(
            dict(zip(jobs, counts, strict=True)), self.peer_ids(), time.monotonic() - t0
        )

    async def _results(self, honest: HonestTask, until: float) -> int:
        plan = self.plan
        n_unfetchable = round(plan.result_keys * plan.unfetchable_share)
        real = [honest.model_cids[i % len(honest.model_cids)] for i in range(plan.result_keys)]
        # Every peer alternates a real artifact and an unfetchable CID from its
        # first message on (peer k sends txs k, k + n, k + 2n, ...).
        n_peers = plan.result_peers
        cids = [
            unfetchable_cid() if (i // n_peers) % 2 and i < 2 * n_unfetchable else real[i]
            for i in range(plan.result_keys)
        ]
        txs = await asyncio.to_thread(
            forged_results,
            honest.task_id,
            honest.seed,
            honest.rounds,
            cids,
            honest.train_rows,
            honest.metric,
        )
        group = self.peers["results"]
        shares = [txs[i :: len(group)] for i in range(len(group))]
        sent = await asyncio.gather(
            *(
                publish_paced(hp, "results", [encode_tx(t) for t in share], plan.per_second, until)
                for hp, share in zip(group, shares, strict=True)
            )
        )
        return sum(sent)

    async def _headers(self, until: float) -> int:
        # Fresh blocks in every run: the same blocks again would be dropped by the
        # node's gossip seen-cache (content ids, 120 s) and cost it nothing.
        blocks = await asyncio.to_thread(
            genesis_forks, self.plan.fork_branches, 2, "regtest", secrets.token_bytes(16)
        )
        (hp,) = self.peers["headers"]
        data = [encode_block(b) for b in blocks]
        return await publish_paced(hp, "blocks", data, self.plan.per_second, until)

    async def _tasks(self, name: str, honest: HonestTask | None, until: float) -> int:
        plan = self.plan
        params = params_for("regtest")
        dataset = honest.dataset_cid if honest is not None else unfetchable_cid()
        if name == "unfunded":
            txs = [
                spam_task(dataset, Identity.generate(), params.min_task_fee)
                for _ in range(plan.unfunded_tasks)
            ]
        else:
            funded = dev_identity(plan.funded_key)
            txs = [
                spam_task(dataset, funded, params.min_task_fee) for _ in range(plan.min_fee_tasks)
            ]
        (hp,) = self.peers[name]
        return await publish_paced(hp, "tasks", [encode_tx(t) for t in txs], plan.per_second, until)


# -- probes -----------------------------------------------------------------------------


def percentile(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))] if s else float("nan")


class StatusProbe:
    """Sequential ``GET /status`` on one keep-alive connection in a thread,
    recording each answer's latency (ms) until stopped."""

    def __init__(self, node: TestNode, gap: float = 0.01) -> None:
        self.node = node
        self.gap = gap
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-probe", daemon=True)

    def __enter__(self) -> StatusProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        url = urlsplit(self.node.api.base)
        conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
        try:
            while not self._stop.is_set():
                t = time.perf_counter()
                try:
                    conn.request("GET", "/status")
                    resp = conn.getresponse()
                    resp.read()
                except (OSError, http.client.HTTPException) as exc:
                    self.errors.append(repr(exc))
                    conn.close()
                    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port)
                    continue
                self.latencies.append((time.perf_counter() - t) * 1000)
                if resp.status != 200:
                    self.errors.append(f"/status answered {resp.status}")
                self._stop.wait(self.gap)  # the request rate, not a synchronisation
        finally:
            conn.close()

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its live children (a child
    that exited took its seconds with it: sample while the work runs)."""
    total = 0.0
    for p in _tree(pid):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def tree_rss_mb(pid: int) -> float:
    total = 0
    for p in _tree(pid):
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 1024**2


class ResourceProbe:
    """Samples RSS (MB) of node + children every ``every`` s in a thread, and
    CPU seconds of node + children; CPU is summed over processes that came and
    went by keeping each one's last sample."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        self.pid = pid
        self.every = every
        self.peak_rss_mb = 0.0
        self._cpu: dict[int, float] = {}
        self._cpu0 = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resource-probe", daemon=True)

    def __enter__(self) -> ResourceProbe:
        self._sample()
        self._cpu0 = sum(self._cpu.values())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self._sample()

    def _sample(self) -> None:
        rss = 0
        try:
            procs = _tree(self.pid)
        except psutil.NoSuchProcess:
            return
        for p in procs:
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    rss += p.memory_info().rss
                    self._cpu[p.pid] = t.user + t.system
            except psutil.NoSuchProcess:
                pass
        self.peak_rss_mb = max(self.peak_rss_mb, rss / 1024**2)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds spent by node + children since the probe started."""
        return sum(self._cpu.values()) - self._cpu0


# -- /metrics ---------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition to ``{"name" or "name{labels}": value}``."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line.strip())
        if m is None:
            raise ValueError(f"not a Prometheus sample: {line!r}")
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def node_metrics(node: TestNode) -> dict[str, float]:
    text = node.api.get("/metrics")
    if not isinstance(text, str):
        raise TypeError(f"/metrics answered {type(text).__name__}, not text")
    return parse_metrics(text)
