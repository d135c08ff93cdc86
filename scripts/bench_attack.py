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

    python scripts/bench_attack.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import threading
import time
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

# Node counters of gossip it decided on (what reached its handlers).
RECEIVED = re.compile(
    r"^p2pml_p2p_gossip_(blocks|results|tasks)_(accept|ignore|reject)$|"
    r"^p2pml_p2p_gossip_(malformed|invalid|oversize|inbound_dropped)$"
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer attacker messages, 2 rounds")
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
                with ResourceProbe(node.proc.pid) as calm, StatusProbe(node) as calm_probe:
                    tid, calm_s = run_task(node, cid, rounds, timeout)
                baseline = honest_material(node, tid, cid, rounds)
                m0 = node_metrics(node)
                with ResourceProbe(node.proc.pid) as hot:
                    hot_s, report, probe, peers = attacked_run(
                        node, cid, rounds, baseline, plan, timeout
                    )
            st = node.status()
            metrics = node_metrics(node)
            tips = len(node.api.get("/chain/tips"))
        finally:
            node.stop(60)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    banned = set(st["banned"])
    grew = {k: v - m0.get(k, 0.0) for k, v in metrics.items() if v != m0.get(k, 0.0)}
    received = sum(v for k, v in grew.items() if RECEIVED.match(k))
    print(
        f"(attack: sent {report.sent} in {report.seconds:.1f} s; the node handled {received:.0f};"
    )
    print(f" load average now {load})")
    for name, ids in peers.items():
        print(f"(  {name}: {sum(p in banned for p in ids)}/{len(ids)} attacker peers banned)")
    print(f"(p2p counters that grew: { {k: v for k, v in grew.items() if 'p2pml_p2p_' in k} })")
    print(f"(chain tips the node keeps after the header spam: {tips})")
    figure("attack: honest task to closed, no attack", f"{calm_s:.1f} s", "", f"{rounds} rounds RF")
    figure(
        "attack: honest task to closed, under attack",
        f"{hot_s:.1f} s",
        "",
        f"no attack {calm_s:.1f} s",
    )
    figure("attack: time to close ratio attacked / calm", f"{hot_s / calm_s:.2f}x", "<= 1.5", "")
    # CPU beyond what closing the same task took without attack (the block driver's
    # cheap regtest blocks over a longer run count as attack cost too).
    extra_cpu = max(0.0, hot.cpu_seconds - calm.cpu_seconds)
    figure(
        "attack: node CPU per attacker message",
        f"{extra_cpu / max(1.0, received) * 1000:.2f} ms",
        "",
        f"{received:.0f} handled of {report.messages} sent; node+children CPU "
        f"{hot.cpu_seconds:.1f} s attacked ({hot_s:.0f} s) minus {calm.cpu_seconds:.1f} s calm "
        f"({calm_s:.0f} s)",
    )
    figure(
        "attack: GET /status p99 during attack",
        f"{probe.p(0.99):.2f} ms",
        "< 50 ms",
        f"same task calm: p99 {calm_probe.p(0.99):.2f} ms, p50 {calm_probe.p(0.5):.2f} ms; "
        f"attacked p50 {probe.p(0.5):.2f} ms; {len(probe.latencies)} requests, "
        f"{len(probe.errors)} errors",
    )
    figure(
        "attack: peak RSS node + children",
        f"{max(calm.peak_rss_mb, hot.peak_rss_mb):.0f} MB",
        "",
        f"calm run peak {calm.peak_rss_mb:.0f} MB; attacked {hot.peak_rss_mb:.0f} MB",
    )


if __name__ == "__main__":
    main()
