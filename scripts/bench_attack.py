#!/usr/bin/env python3
"""Benchmark one real node under an attack mix while an honest task runs.

One ``p2pml node`` process (regtest, embedded IPFS, training on, ``dev_key =
0`` pays, everything on 127.0.0.1) publishes a small random-forest task on
sklearn's bundled diabetes data three times: a warm-up (not measured), then
undisturbed (the baseline), then the same task again while hostile libp2p
peers (tests/framework/attack.py) send, at once:

(a) bogus results for the honest task from 100 fresh keys (valid signatures;
    half name a real artifact, the baseline task's model re-signed, half an
    unfetchable CID), spread over 4 peers;
(b) header spam: 2-block side branches forked at genesis;
(c) mempool spam: tasks from fresh unfunded keys, and tasks at the minimum fee
    from a funded dev key.

Blocks come from this script (``POST /mine``, one every ``MINE_EVERY`` s) in
both runs alike, so mining CPU does not blur the comparison. Printed side by
side: the honest task's time from publish to closed with vs without attack
(target <= 1.5x), node CPU-seconds (node + children) per attacker message
beyond the baseline's (per message the node handled, from its /metrics),
``GET /status`` p99 during the attacked run (target < 50 ms) beside the same
figure for the calm run, and peak RSS of node + children.

With ``--repeat N`` the calm and the attacked run alternate N times after
the warm-up (other sessions load the machine unevenly: interleaving keeps
them comparable), and the figures are the median with the range over the
N pairs; each run starts once the node's training has gone quiet (the
min-fee spam of an attack is mined and trained after it).

    python scripts/bench_attack.py [--quick] [--repeat N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))  # scripts/ is not a package

from benchlib import figure  # noqa: E402
from sklearn.datasets import load_diabetes  # noqa: E402

from tests.framework.attack import (  # noqa: E402
    AttackMix,
    AttackPlan,
    AttackReport,
    HonestTask,
    ResourceProbe,
    StatusProbe,
    node_metrics,
)
from tests.framework.testnode import TestNode  # noqa: E402
from tests.framework.waiting import wait_until_sync  # noqa: E402

# Node counters of gossip it decided on (what reached its handlers, and the
# blocks its header check dropped as low-work before any decoding).
RECEIVED = re.compile(
    r"^p2pml_p2p_gossip_(blocks|results|tasks)_(accept|ignore|reject)$|"
    r"^p2pml_p2p_gossip_(malformed|invalid|oversize|inbound_dropped|low_work)$"
)
MINE_EVERY = 0.5  # seconds between blocks the script asks for
CONFIG: dict[str, dict[str, Any]] = {
    "node": {"dev_key": 0},
    "training": {"enabled": True, "workers": 1},
    "log": {"level": "INFO"},  # DEBUG would add log I/O to every message
}


def honest_order(cid: str, rounds: int) -> dict[str, Any]:
    return {
        "dataset_cid": cid,
        "target": "target",
        "model": "random_forest_regressor",
        "kind": "regression",
        "metric": "r2",
        "params": {"n_estimators": 50},
        "rounds": rounds,
        "max_results": rounds,  # closes once the node's own rounds are in
        "bounty": 10_000,
        "deadline": 400,
    }


class BlockDriver:
    """Asks the node for one block every MINE_EVERY s in a thread."""

    def __init__(self, node: TestNode) -> None:
        self.node = node
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="block-driver", daemon=True)

    def __enter__(self) -> BlockDriver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        while not self._stop.wait(MINE_EVERY):
            try:
                self.node.mine(1)
            except Exception as exc:  # the node is busy; the next tick tries again
                print(f"(mine failed: {exc})", flush=True)


def task_view(node: TestNode, task_id: str) -> dict[str, Any]:
    return dict(node.api.get(f"/tasks/{task_id}"))


def run_task(node: TestNode, cid: str, rounds: int, timeout: float) -> tuple[str, float]:
    """Publish the honest task and wait until it is closed: (task id, seconds)."""
    t0 = time.monotonic()
    tid = str(node.api.post("/tasks", honest_order(cid, rounds))["id"])
    wait_until_sync(
        lambda: task_view(node, tid)["status"] == "closed", timeout, 0.1, what="the task closed"
    )
    return tid, time.monotonic() - t0


def wait_quiet(node: TestNode, quiet: float = 3.0, timeout: float = 300.0) -> None:
    """Until no training job runs or finishes for ``quiet`` s (leftovers of the
    previous run must not count against the next)."""
    last: list[Any] = [None, time.monotonic()]

    def settled() -> bool:
        t = node.status()["training"]
        now = (t["running_jobs"], t["jobs_done"], t["jobs_failed"])
        if now != last[0] or t["running_jobs"]:
            last[0], last[1] = now, time.monotonic()
        return bool(time.monotonic() - last[1] >= quiet)

    wait_until_sync(settled, timeout, 0.25, what="the node's training quiet")


def spread(xs: list[float], fmt: str = "{:.2f}") -> str:
    """median (min-max) of ``xs``."""
    return f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}-{fmt.format(max(xs))})"


def honest_material(node: TestNode, task_id: str, cid: str, rounds: int) -> HonestTask:
    view = task_view(node, task_id)
    results = view["results"]
    return HonestTask(
        task_id=bytes.fromhex(task_id),
        seed=bytes.fromhex(view["seed"]),
        rounds=rounds,
        model_cids=tuple(r["model_cid"] for r in results),
        train_rows=int(results[0]["train_rows"]),
        metric=float(results[0]["metric"]),
        dataset_cid=cid,
    )


def attacked_run(
    node: TestNode, cid: str, rounds: int, baseline: HonestTask, plan: AttackPlan, timeout: float
) -> tuple[float, AttackReport, StatusProbe, dict[str, list[str]]]:
    """The same task again, attacked from the moment it is mined."""
    st = node.status()
    mix = AttackMix(plan)

    async def attack(task_id: str, report: list[AttackReport]) -> None:
        def seeded() -> bool:
            return task_view(node, task_id).get("seed") is not None

        await asyncio.to_thread(wait_until_sync, seeded, timeout, 0.05, "the task mined")
        view = await asyncio.to_thread(task_view, node, task_id)
        # Forge for THIS task: its seed, the baseline's real artifacts.
        target = HonestTask(
            bytes.fromhex(task_id),
            bytes.fromhex(view["seed"]),
            rounds,
            baseline.model_cids,
            baseline.train_rows,
            baseline.metric,
            cid,
        )
        report.append(await mix.run(target))

    async def scenario() -> tuple[float, AttackReport, StatusProbe]:
        await mix.start(st["listen"][0], st["peer_id"])
        try:
            with StatusProbe(node) as probe:
                t0 = time.monotonic()
                tid = str(
                    (await asyncio.to_thread(node.api.post, "/tasks", honest_order(cid, rounds)))[
                        "id"
                    ]
                )
                report: list[AttackReport] = []
                attacking = asyncio.create_task(attack(tid, report))

                def closed() -> bool:
                    return bool(task_view(node, tid)["status"] == "closed")

                await asyncio.to_thread(wait_until_sync, closed, timeout, 0.1, "the task closed")
                took = time.monotonic() - t0
                await attacking  # bounded: it ends by itself
            return took, report[0], probe
        finally:
            await mix.stop()

    took, report, probe = asyncio.run(scenario())
    return took, report, probe, mix.peer_ids()


@dataclass
class Pair:
    """One calm run and the attacked run after it."""

    calm_s: float
    hot_s: float
    calm_cpu: float
    hot_cpu: float
    received: float
    calm_p99: float
    calm_p50: float
    hot_p99: float
    hot_p50: float
    requests: int
    errors: int
    calm_rss: float
    hot_rss: float
    report: AttackReport
    peers: dict[str, list[str]]

    @property
    def ratio(self) -> float:
        return self.hot_s / self.calm_s

    @property
    def cpu_per_message_ms(self) -> float:
        # CPU beyond what closing the same task took without attack (the block
        # driver's cheap regtest blocks over a longer run count as attack cost too).
        return max(0.0, self.hot_cpu - self.calm_cpu) / max(1.0, self.received) * 1000

    @property
    def cpu_per_sent_ms(self) -> float:
        # The same CPU over every message the attackers sent (the node never
        # looks at what its bans and gossipsub's checks refuse first).
        return max(0.0, self.hot_cpu - self.calm_cpu) / max(1, self.report.messages) * 1000


def measure_pair(node: TestNode, cid: str, rounds: int, plan: AttackPlan, timeout: float) -> Pair:
    assert node.proc is not None
    wait_quiet(node)
    with ResourceProbe(node.proc.pid) as calm, StatusProbe(node) as calm_probe:
        tid, calm_s = run_task(node, cid, rounds, timeout)
    baseline = honest_material(node, tid, cid, rounds)
    wait_quiet(node)
    m0 = node_metrics(node)
    with ResourceProbe(node.proc.pid) as hot:
        hot_s, report, probe, peers = attacked_run(node, cid, rounds, baseline, plan, timeout)
    metrics = node_metrics(node)
    grew = {k: v - m0.get(k, 0.0) for k, v in metrics.items() if v != m0.get(k, 0.0)}
    received = sum(v for k, v in grew.items() if RECEIVED.match(k))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"(pair: calm {calm_s:.1f} s, attacked {hot_s:.1f} s = {hot_s / calm_s:.2f}x; "
        f"sent {report.messages}, handled {received:.0f}; load {load})",
        flush=True,
    )
    print(f"(  p2p counters that grew: { {k: v for k, v in grew.items() if 'p2pml_p2p_' in k} })")
    return Pair(
        calm_s,
        hot_s,
        calm.cpu_seconds,
        hot.cpu_seconds,
        received,
        calm_probe.p(0.99),
        calm_probe.p(0.5),
        probe.p(0.99),
        probe.p(0.5),
        len(probe.latencies),
        len(probe.errors),
        calm.peak_rss_mb,
        hot.peak_rss_mb,
        report,
        peers,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer attacker messages, 2 rounds")
    ap.add_argument("--repeat", type=int, default=1, help="calm/attacked pairs, interleaved")
    ap.add_argument("--keep", type=Path, help="keep the node's directory here (for its log)")
    args = ap.parse_args()
    rounds = 2 if args.quick else 4
    plan = (
        AttackPlan(fork_branches=50, unfunded_tasks=400, min_fee_tasks=20, max_seconds=30)
        if args.quick
        else AttackPlan()
    )
    timeout = 600.0
    print("load average at start: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()), flush=True)
    pairs: list[Pair] = []
    with tempfile.TemporaryDirectory(prefix="p2pml-bench-attack-") as tmp:
        base = args.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        csv = base / "diabetes.csv"
        load_diabetes(as_frame=True).frame.to_csv(csv, index=False)
        node = TestNode(0, base, extra=CONFIG)
        node.start()
        try:
            assert node.proc is not None
            cid = str(node.api.upload("/datasets", csv)["cid"])
            node.mine(3)
            with BlockDriver(node):
                # Warm-up, not measured: the training pool's first spawn and the
                # parsed-dataset cache would otherwise count against the calm run.
                run_task(node, cid, rounds, timeout)
                for _ in range(args.repeat):
                    pairs.append(measure_pair(node, cid, rounds, plan, timeout))
            st = node.status()
            tips = len(node.api.get("/chain/tips"))
        finally:
            node.stop(60)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    banned = set(st["banned"])
    last = pairs[-1]
    print(f"(attack: sent {last.report.sent} in {last.report.seconds:.1f} s (last run);")
    print(f" load average now {load})")
    for name in last.peers:
        ids = [p for pair in pairs for p in pair.peers[name]]
        print(f"(  {name}: {sum(p in banned for p in ids)}/{len(ids)} attacker peers banned)")
    print(f"(chain tips the node keeps after the header spam: {tips})")
    n = f"{len(pairs)} pair(s), median (min-max)"
    calm_s = [p.calm_s for p in pairs]
    hot_s = [p.hot_s for p in pairs]
    figure(
        "attack: honest task to closed, no attack",
        f"{statistics.median(calm_s):.1f} s",
        "",
        f"{rounds} rounds RF; {spread(calm_s, '{:.1f}')} s over {n}",
    )
    figure(
        "attack: honest task to closed, under attack",
        f"{statistics.median(hot_s):.1f} s",
        "",
        f"{spread(hot_s, '{:.1f}')} s",
    )
    ratios = [p.ratio for p in pairs]
    figure(
        "attack: time to close ratio attacked / calm",
        f"{statistics.median(ratios):.2f}x",
        "<= 1.5",
        f"each pair: {', '.join(f'{r:.2f}' for r in ratios)}",
    )
    cpu = [p.cpu_per_message_ms for p in pairs]
    figure(
        "attack: node CPU per attacker message",
        f"{statistics.median(cpu):.2f} ms",
        "",
        f"{spread(cpu)} ms; per message sent {spread([p.cpu_per_sent_ms for p in pairs])} ms; "
        f"last: {last.received:.0f} handled of {last.report.messages} sent; "
        f"node+children CPU {last.hot_cpu:.1f} s attacked ({last.hot_s:.0f} s) minus "
        f"{last.calm_cpu:.1f} s calm ({last.calm_s:.0f} s)",
    )
    p99 = [p.hot_p99 for p in pairs]
    figure(
        "attack: GET /status p99 during attack",
        f"{statistics.median(p99):.2f} ms",
        "< 50 ms",
        f"{spread(p99)} ms; calm p99 {spread([p.calm_p99 for p in pairs])} ms, "
        f"calm p50 {spread([p.calm_p50 for p in pairs])} ms; attacked p50 "
        f"{spread([p.hot_p50 for p in pairs])} ms; {sum(p.requests for p in pairs)} requests, "
        f"{sum(p.errors for p in pairs)} errors",
    )
    figure(
        "attack: peak RSS node + children",
        f"{max(max(p.calm_rss, p.hot_rss) for p in pairs):.0f} MB",
        "",
        f"calm runs peak {max(p.calm_rss for p in pairs):.0f} MB; "
        f"attacked {max(p.hot_rss for p in pairs):.0f} MB",
    )


if __name__ == "__main__":
    main()
