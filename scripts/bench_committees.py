#!/usr/bin/env python3
"""Benchmark: re-training work per node per result with audit committees,
against today's rules, as the network grows; and the cheap checks' cost.

Part 1 (simulated validators over the real pure rules): N = 3, 6, 12 bonded
validator keys (bonded in a genesis made for the run) train and report the
same kind of workload: TASKS tasks of 2 rounds, RESULTS results each from
distinct (validator, round) slots, one task's results per block, then the
blocks up to the last attest window. Blocks are connected by a real
``ChainState`` (p2pml.chain: beacon draw, committees of k = 3 from the bonded
index); the verdict oracle counts what inclusion asks (only the cheap
``audit=False`` path, never a re-training). A node re-trains a result iff
its key is in the result's committee (what ``p2pml/node/audits.py`` does).

Today's rules (main 9a04fd6) for the same results, per node:
* at inclusion, every node re-trains every result the including block's
  hash audits (``sha256(block || rid) < audit_fraction``, computed on the
  same blocks), and
* before that, every node re-trains every gossiped result it pools
  (the mempool asked for the audited verdict), i.e. every result.
The first is the brief's baseline ("every node re-trains every audited
result at inclusion"); the second is what today's nodes really did.
Both are printed, for ``audit_fraction`` 1.0 (devnet, regtest) and 0.1
(main: winners are always audited now, which the 10 % baseline was not).

Part 2 (``--verify``, real workers, slow): the cheap checks' cost against
the trainer's own evaluation, measured by ``scripts/bench_verify.py`` (the
``audit=False`` path of the node's own Verifier over a real worker pool
and an embedded IPFS store); target <= 1.5x.

    python scripts/bench_committees.py [--tasks 80] [--verify [--quick]]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))  # scripts/ is not a package
sys.path.insert(0, str(ROOT))  # tests.framework

from benchlib import figure  # noqa: E402

from p2pml.chain.params import REGTEST, NetworkParams, dev_identity  # noqa: E402
from p2pml.chain.taskkeys import result_key, task_key  # noqa: E402
from p2pml.chain.taskspec import TaskSpec  # noqa: E402
from p2pml.chain.types import ResultTx, TaskTx  # noqa: E402
from p2pml.crypto import Identity  # noqa: E402
from p2pml.ipfs.cid import cid_of_bytes  # noqa: E402
from tests.framework.chainbuilder import Builder, Node  # noqa: E402

K = 3
RESULTS = 6  # per task
ROUNDS = 2
SIZES = (3, 6, 12)
SPEC = TaskSpec(
    dataset_cid=cid_of_bytes(b"bench dataset"),
    target="y",
    model="ridge",
    kind="regression",
    metric="r2",
    rounds=ROUNDS,
)


def old_is_audited(fraction: float, block_hash: bytes, rid: bytes) -> bool:
    """Today's rule (main 9a04fd6, chain/tasks.py is_audited)."""
    if fraction >= 1.0:
        return True
    draw = int.from_bytes(hashlib.sha256(block_hash + rid).digest()[:8], "big")
    return draw < int(fraction * 2**64)


class CountingOracle:
    def __init__(self) -> None:
        self.cheap = 0
        self.audits = 0

    def __call__(self, _tx: ResultTx, _task: dict[str, Any], audit: bool) -> str:
        if audit:
            self.audits += 1
        else:
            self.cheap += 1
        return ""


def simulate(n: int, fraction: float, tasks: int) -> dict[str, Any]:
    keys = [
        Identity.from_seed(hashlib.sha256(b"bench validator %d" % i).digest()) for i in range(n)
    ]
    pub = dev_identity(0)
    base = REGTEST
    params: NetworkParams = dataclasses.replace(
        base,
        allocations=(
            (pub.public_key, 10**15, 0),
            *((k.public_key, 10**12, base.min_bond) for k in keys),
        ),
        audit_fraction=fraction,
        committee_size=K,
    )
    net = params.genesis_hash
    b, node, oracle = Builder(params), Node(params), CountingOracle()
    node.chain.verdicts = oracle
    b.ref.verdicts = oracle
    top = b.genesis

    def mine(*txs: Any) -> Any:
        nonlocal top
        blk = b.make(top, txs=tuple(txs))
        node.feed(blk).raise_error()
        top = blk.hash
        return blk

    mine()  # bonds mature (bond_maturity 1) before the first task's seed
    task_txs = [
        TaskTx(
            spec=SPEC,
            bounty=10_000,
            fee=params.min_task_fee,
            deadline=tasks + 10,
            result_reward=0,
            max_results=RESULTS,
            publisher=pub.public_key,
            nonce=i,
        ).signed_by(pub, net)
        for i in range(tasks)
    ]
    mine(*task_txs)
    seed = top
    slots = [(k, r) for r in range(ROUNDS) for k in keys]
    old_inclusion: list[int] = []  # today's per-result "audited at inclusion"
    trainers: dict[bytes, bytes] = {}
    for i, t in enumerate(task_txs):
        h = hashlib.sha256(b"slots %d" % i).digest()
        order = sorted(
            slots, key=lambda s: hashlib.sha256(h + s[0].public_key + bytes([s[1]])).digest()
        )
        txs = []
        for j, (k, rnd) in enumerate(order[:RESULTS]):
            r = ResultTx(
                task_id=t.id,
                seed=seed,
                round=rnd,
                trainer=k.public_key,
                metric=0.5 + 0.01 * ((i * 7 + j * 3) % 11),
                model_cid=cid_of_bytes(b"model %d %d" % (i, j)),
                train_rows=100,
                train_ms=5,
                fee=params.min_result_fee,
            ).signed_by(k, net)
            txs.append(r)
            trainers[r.id] = k.public_key
        blk = mine(*txs)
        old_inclusion += [old_is_audited(fraction, blk.hash, r.id) for r in txs]
    for _ in range(params.audit_delay + params.attest_window + 1):
        mine()

    state = node.chain.state
    per_node = dict.fromkeys((k.public_key for k in keys), 0)
    selected = winners = 0
    for rid in trainers:
        rec = state[result_key(rid)]
        a = rec["audit"]
        assert a["selected"] is not None, "every beacon has arrived"
        win = any(bytes(w[1]) == rid for w in state[task_key(rec["task"])]["winners"])
        winners += win
        selected += bool(a["selected"])
        for m in a["committee"]:
            per_node[bytes(m)] += 1
    total = len(trainers)
    today_incl = sum(old_inclusion)  # every node re-ran each of these
    return {
        "n": n,
        "results": total,
        "selected": selected,
        "winners": winners,
        "per_node_mean": statistics.mean(per_node.values()),
        "per_node_max": max(per_node.values()),
        "today_inclusion": today_incl,
        "today_gossip": total,  # every result re-run on receipt (own ones on submit)
        "oracle_audits": oracle.audits,
        "oracle_cheap": oracle.cheap,
    }


def part1(tasks: int) -> None:
    print(f"part 1: {tasks} tasks x {RESULTS} results, k = {K}, over the real chain rules")
    for fraction in (1.0, 0.1):
        print(f"\naudit_fraction {fraction} ({'devnet/regtest' if fraction == 1.0 else 'main'})")
        print(
            f"{'N':>3} {'results':>8} {'selected':>9} {'winners':>8} {'per node':>9} "
            f"{'max':>5} {'today@incl':>11} {'share':>7} {'max share':>10} "
            f"{'today+gossip':>13} {'share':>7}"
        )
        for n in SIZES:
            t0 = time.perf_counter()
            s = simulate(n, fraction, tasks)
            took = time.perf_counter() - t0
            if s["oracle_audits"]:
                raise SystemExit(f"inclusion asked for {s['oracle_audits']} re-trainings")
            share = s["per_node_mean"] / s["today_inclusion"] if s["today_inclusion"] else 0.0
            mshare = s["per_node_max"] / s["today_inclusion"] if s["today_inclusion"] else 0.0
            gshare = s["per_node_mean"] / s["today_gossip"]
            print(
                f"{n:>3} {s['results']:>8} {s['selected']:>9} {s['winners']:>8} "
                f"{s['per_node_mean']:>9.1f} {s['per_node_max']:>5} {s['today_inclusion']:>11} "
                f"{share:>6.1%} {mshare:>10.1%} {s['today_gossip']:>13} {gshare:>6.1%}"
                f"   ({took:.1f} s; inclusion ran {s['oracle_cheap']} cheap checks, 0 re-runs)"
            )
            if n == SIZES[-1]:
                tag = f"audit_fraction {fraction}"
                figure(
                    f"re-training per node at N=12, k=3 vs today's inclusion audits ({tag})",
                    f"{share * 100:.1f} %",
                    "<= 30 %",
                    f"{s['per_node_mean']:.1f} of {s['today_inclusion']} audited results; "
                    f"busiest node {mshare:.1%}",
                )
                figure(
                    f"re-training per node at N=12, k=3 vs today's gossip+inclusion ({tag})",
                    f"{gshare * 100:.1f} %",
                    "<= 30 %",
                    f"{s['per_node_mean']:.1f} of {s['today_gossip']} results",
                )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=80, help="tasks per run (default 80)")
    ap.add_argument("--verify", action="store_true", help="also part 2 (real workers, slow)")
    ap.add_argument("--quick", action="store_true", help="part 2 on 20,000 rows")
    args = ap.parse_args()
    part1(args.tasks)
    if args.verify:
        print("\npart 2: the cheap checks (audit=False, real workers) vs the trainer's evaluation")
        import bench_verify

        asyncio.run(bench_verify.run(args.quick))


if __name__ == "__main__":
    main()
