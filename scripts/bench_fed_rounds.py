#!/usr/bin/env python3
"""Per-round overhead of federated rounds on a loopback network (issue 16).

Real ``p2pml node`` processes on 127.0.0.1 (embedded IPFS, training on, a
full libp2p mesh), **regtest** rules, this script as the only miner: it mines
a block the moment there is something to mine (the round's updates are all
pooled at the mining node; the mining node holds G_{r+1}). Why regtest: on
devnet blocks come every ~5 s (the target spacing) and a round needs two
blocks (its updates, then its close), so the round wall time there is
bounded below by ~10 s of proof-of-work spacing, whatever the protocol costs;
regtest with blocks on demand measures what the protocol itself adds. On
devnet add that spacing to the figures below.

One public-shard ``sgd_classifier`` task on scikit-learn's digits (pixels /
16), every node a participant. Per round it prints

- wall time: from the block that opens the round (the task's block, or the
  previous round's close) being mined to the block that closes it being
  mined;
- the slowest participant's local training: the largest ``train_seconds`` of
  the round's updates, from each node's own ``sent`` event in the task view
  (the ``fed_train`` job's wall time, worker queue included);
- overhead = wall - slowest training. It includes: the opening block
  reaching every node, the update's IPFS add and its own check, the
  UpdateTx gossip, every node fetching (bitswap) and checking every peer's
  update, the block with the updates and its validation, G_{r+1}'s
  aggregation and holdout scoring in a worker, the close block, and this
  script's 20 ms polling. Round 0 also holds each node's one-off dataset
  fetch and parse (so the headline is the median of the later rounds);
- bytes sent: summed over all nodes, gossip bytes written to peers
  (``p2pml_p2p_gossip_bytes_sent``: RPC frames before the muxer's and Noise's
  framing; blocks, update transactions and gossipsub control) plus IPFS
  payload bytes moved (``p2pml_ipfs_bytes_fetched_total`` summed, less each
  participant's read-back of its own update from its own IPFS node to check
  it, which crosses no network: one model per participant per round); bitswap's
  own framing and wantlists are not counted;
- model size x participants (the canonical P2FL encoding's size, every
  update and global model has it) and the ratio.

Targets (issue 16): overhead <= 2 s, bytes <= 1.5x model size x participants.
Every node validates every update (fetches and checks it): with N nodes the
updates alone move (N - 1) x model size x participants, the price of having
no coordinator; the per-node figure is printed beside it.

    python scripts/bench_fed_rounds.py [--quick] [--nodes 5] [--rounds 5]
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))  # scripts/ is not a package

from benchlib import figure  # noqa: E402

from tests.framework.federated import (  # noqa: E402
    fed_view,
    publish_federated,
    updates_pooled,
    upload_digits,
)
from tests.framework.testnode import NodeSet, TestNode, connect_nodes, sync_blocks  # noqa: E402
from tests.framework.waiting import wait_until_sync  # noqa: E402

POLL = 0.02
OVERHEAD_TARGET = 2.0  # seconds
BYTES_TARGET = 1.5  # x model size x participants


@dataclass
class Round:
    index: int
    wall: float
    slowest_training: float

    @property
    def overhead(self) -> float:
        return self.wall - self.slowest_training


@dataclass
class Interval:
    """Bytes between two quiet points, round r's update block connected at
    every node, then round r+1's: round r's close block, round r+1's update
    transactions and artifacts and its update block: one round's worth of
    everything."""

    index: int
    gossip_bytes: int
    ipfs_bytes: int  # payload moved between nodes (own read-backs taken out)
    model_bytes: int
    participants: int

    @property
    def sent(self) -> int:
        return self.gossip_bytes + self.ipfs_bytes

    @property
    def ratio(self) -> float:
        return self.sent / (self.model_bytes * self.participants)


def counter(text: str, name: str) -> int:
    m = re.search(rf"^{re.escape(name)} (\d+)$", text, re.MULTILINE)
    return int(m.group(1)) if m else 0


def byte_counters(nodes: list[TestNode]) -> tuple[int, int]:
    """(gossip bytes sent, IPFS bytes fetched), summed over ``nodes``."""
    gossip = ipfs = 0
    for n in nodes:
        text = n.api.get("/metrics")
        gossip += counter(text, "p2pml_p2p_gossip_bytes_sent")
        ipfs += counter(text, "p2pml_ipfs_bytes_fetched_total")
    return gossip, ipfs


def training_seconds(nodes: list[TestNode], task_id: str, rnd: int) -> dict[str, float]:
    """participant -> train_seconds of its update in round ``rnd`` (its own event)."""
    out: dict[str, float] = {}
    for n in nodes:
        me = n.status()["public_key"]
        for e in fed_view(n, task_id)["events"]:
            if e["round"] == rnd and e["event"] == "sent" and e["participant"] == me:
                out[me] = float(e["train_seconds"])
    return out


def mine(node: TestNode) -> float:
    node.mine(1)
    return time.monotonic()


def run_rounds(
    nodes: list[TestNode], task_id: str, rounds: int, participants: int
) -> tuple[list[Round], list[Interval]]:
    miner = nodes[0]
    walls: list[Round] = []
    quiet: list[tuple[int, int]] = []
    opened = mine(miner)  # the task's block opens round 0
    for rnd in range(rounds):
        wait_until_sync(
            lambda: updates_pooled(miner, task_id, rnd) >= participants,  # noqa: B023
            300,
            POLL,
            what=f"the updates of round {rnd} at the miner",
        )
        mine(miner)
        # A quiet point: every node connected the block with the round's
        # updates, so it fetched and checked each; G_{r+1} needs no more data.
        sync_blocks(nodes)
        quiet.append(byte_counters(nodes))
        wait_until_sync(
            lambda: bool(fed_view(miner, task_id)["next_model_ready"]),
            120,
            POLL,
            what=f"G_{rnd + 1} at the miner",
        )
        closed = mine(miner)
        sync_blocks(nodes)
        view = fed_view(miner, task_id)
        if view["round"] != rnd + 1 or len(view["rounds"][rnd]["updates"]) != participants:
            raise RuntimeError(f"round {rnd} did not close with {participants} updates: {view}")
        trained = training_seconds(nodes, task_id, rnd)
        included = {u["participant"] for u in view["rounds"][rnd]["updates"]}
        if not included <= set(trained):
            raise RuntimeError(f"round {rnd}: no training time for {included - set(trained)}")
        r = Round(rnd, closed - opened, max(trained[p] for p in included))
        walls.append(r)
        print(
            f"round {rnd}: wall {r.wall:.2f} s, slowest training {r.slowest_training:.2f} s,"
            f" overhead {r.overhead:.2f} s (load {', '.join(f'{x:.2f}' for x in os.getloadavg())})",
            flush=True,
        )
        opened = closed
    model = model_size(miner, task_id)
    spans: list[Interval] = []
    for i, (q0, q1) in enumerate(itertools.pairwise(quiet)):
        # Each participant read its own update back from its own IPFS node to
        # check it: counted as fetched, but it crossed no network.
        spans.append(
            Interval(i, q1[0] - q0[0], q1[1] - q0[1] - participants * model, model, participants)
        )
        b = spans[-1]
        print(
            f"round {i} -> {i + 1}: gossip {b.gossip_bytes:,} B + IPFS {b.ipfs_bytes:,} B"
            f" = {b.sent:,} B = {b.ratio:.2f}x model {model:,} B x {participants}",
            flush=True,
        )
    return walls, spans


_model_sizes: dict[str, int] = {}


def model_size(node: TestNode, task_id: str) -> int:
    """Bytes of the canonical encoding of the task's models (header + float64s)."""
    if task_id not in _model_sizes:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "g.p2fl"
            node.api.download(f"/tasks/{task_id}/model", path)
            _model_sizes[task_id] = path.stat().st_size
    return _model_sizes[task_id]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 nodes, 3 rounds")
    ap.add_argument("--nodes", type=int, default=5, help="node processes, all participants")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--keep", type=Path, help="keep the nodes' directory here (for their logs)")
    args = ap.parse_args()
    if args.quick:
        args.nodes, args.rounds = 3, 3
    if not 1 <= args.nodes <= 8 or args.rounds < 2:
        ap.error("--nodes 1..8 (the dev keys), --rounds >= 2")
    print("load average at start: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()), flush=True)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="p2pml-bench-fed-") as tmp:
        base = args.keep or Path(tmp)
        ns = NodeSet(base)
        try:
            nodes = [
                ns.add(
                    node={"dev_key": i},
                    training={"enabled": True, "workers": 1},
                    log={"level": "INFO"},
                )
                for i in range(args.nodes)
            ]
            ns.start_mesh()
            for a, b in itertools.combinations(nodes, 2):
                connect_nodes(a, b)
            cid, _frame = upload_digits(nodes[0], base)
            task_id = publish_federated(
                nodes[0],
                cid,
                rounds=args.rounds,
                participants=args.nodes,
                round_blocks=100,  # rounds close when full; the window never ends one
                bounty=args.rounds * 10_000,
                local_epochs=args.local_epochs,
                deadline=1000,
            )
            wait_until_sync(
                lambda: len(nodes[0].api.get("/mempool")) >= 1, 30, POLL, what="the task pooled"
            )
            done, spans = run_rounds(nodes, task_id, args.rounds, args.nodes)
        finally:
            ns.cleanup()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"({args.rounds} rounds on {args.nodes} nodes, {time.monotonic() - t0:.0f} s in all;"
        f" load average now {load}; the machine is shared)"
    )
    later = done[1:]  # round 0 also fetches and parses the dataset on every node
    med = statistics.median
    n = f"median of rounds 1-{len(done) - 1} (min-max)"
    figure(
        "fed_rounds: overhead per round",
        f"{med(r.overhead for r in later):.2f} s",
        f"<= {OVERHEAD_TARGET:g} s",
        f"{n}: {min(r.overhead for r in later):.2f}-{max(r.overhead for r in later):.2f} s;"
        f" round 0 {done[0].overhead:.2f} s (dataset fetch); regtest, blocks on demand"
        f" (devnet: + ~2 x 5 s block spacing)",
    )
    figure(
        "fed_rounds: round wall time",
        f"{med(r.wall for r in later):.2f} s",
        "",
        f"{n}; slowest local training {med(r.slowest_training for r in later):.2f} s"
        f" ({args.nodes} participants, {args.local_epochs} local epoch(s))",
    )
    model = spans[0].model_bytes
    m = f"median of {len(spans)} rounds (min-max)"
    figure(
        "fed_rounds: bytes sent per round / model x P",
        f"{med(b.ratio for b in spans):.2f}x",
        f"<= {BYTES_TARGET:g}x",
        f"{m}: {min(b.ratio for b in spans):.2f}-{max(b.ratio for b in spans):.2f}x of"
        f" {model:,} B x {args.nodes}; floor with {args.nodes} validating nodes:"
        f" {args.nodes - 1}x (each node fetches every peer's update); Flower: 2x",
    )
    figure(
        "fed_rounds: bytes per round, breakdown",
        f"{med(b.sent for b in spans):,.0f} B",
        "",
        f"gossip {med(b.gossip_bytes for b in spans):,.0f} B + IPFS payload"
        f" {med(b.ipfs_bytes for b in spans):,.0f} B; per node"
        f" {med(b.sent for b in spans) / args.nodes:,.0f} B"
        f" = {med(b.ratio for b in spans) / args.nodes:.2f}x model x P",
    )


if __name__ == "__main__":
    main()
