"""Commands on datasets, tasks and results: dataset add, datasets, tasks,
task show/follow/publish, results."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from p2pml.api.client import ApiClient
from p2pml.cli.common import EXIT_USAGE, ProgressBar, client, fail, show, table


def cmd_dataset(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        return fail(f"{path}: no such file")
    data = client(args).upload("/datasets", path, ProgressBar(f"adding {path.name}"))
    show(args, data, data["cid"])
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    import time

    data = client(args).get("/datasets")
    rows = [
        {
            **d,
            "rows": "?" if d.get("rows") is None else d["rows"],
            "columns": "?" if d.get("columns") is None else d["columns"],
            "added": time.strftime("%Y-%m-%d %H:%M", time.localtime(d["added"])),
        }
        for d in data
    ]
    show(args, data, table(rows, ["cid", "name", "size", "rows", "columns", "added"]))
    return 0


def parse_param(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--param {text!r}: expected NAME=VALUE")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw  # a bare string such as solver=lbfgs
    return name, value


def cmd_task(args: argparse.Namespace) -> int:
    c = client(args)
    if args.task_cmd == "show":
        data = c.get(f"/tasks/{args.id}")
        if args.json:
            show(args, data)
            return 0
        print(task_text(data))
        return 0
    if args.task_cmd == "follow":
        return follow_task(args, c, args.id)
    if args.task_cmd == "publish":
        return publish_task(args, c)
    data = c.get("/tasks")
    show(args, data, table(data, ["id", "status", "model", "metric", "rounds", "results", "best"]))
    return 0


def task_text(data: dict[str, Any]) -> str:
    """The task in words and its results table (task show, and after follow)."""
    spec = data["spec"]
    lines = [
        f"task {data['id']} ({data['status']})",
        f"  {spec['model']} on {spec['dataset_cid']} -> {spec['target']}, "
        f"metric {spec['metric']}, rounds {spec['rounds']}",
        f"  bounty {data['bounty']}, results {data['rounds_done']}",
    ]
    best = data.get("best")
    if best:
        lines.append(
            f"  best {spec['metric']} {best['metric']:.6g} by {best['trainer'][:16]}"
            f" model {best['model_cid']}"
        )
    if data.get("payout_height") is not None:
        when = "paid" if data.get("paid") else "pays"
        lines.append(f"  {when} at height {data['payout_height']}")
    for p in data.get("payout", []):
        verb = "paid" if data.get("paid") else "to pay"
        lines.append(f"  {verb} {p['amount']} to {p['to'][:16]}")
    for f in data.get("failures", []):
        lines.append(f"  failure round {f['round']}: {f['reason']} {f.get('detail', '')}")
    if data.get("federated"):
        lines.extend(federated_text(spec, data["federated"]))
    rows = [{**r, "trainer": r["trainer"][:16], "id": r["id"][:16]} for r in data["results"]]
    lines.append(table(rows, ["id", "trainer", "round", "metric", "model_cid", "height"]))
    return "\n".join(lines)


def follow_task(args: argparse.Namespace, c: ApiClient, task_id: str) -> int:
    """Live progress until the task closes, then the final table. Ctrl-C stops
    following (exit 130), never the task."""
    from p2pml.follow import follow

    def on_change(p: Any) -> None:
        if not args.json:
            print(p.line(), flush=True)

    try:
        view = follow(c, task_id, on_change, poll=args.poll)
    except KeyboardInterrupt:
        print(
            f"\nstopped following; task {task_id} goes on (p2pml task follow {task_id})",
            file=sys.stderr,
        )
        return 130
    if args.json:
        show(args, view)
    else:
        print(task_text(view))
    return 0


def _kind_of(model: str) -> str:
    from p2pml.ml.estimators import ESTIMATORS

    est = ESTIMATORS.get(model)
    return est.kind if est is not None else "regression"  # the node names a bad model


def publish_task(args: argparse.Namespace, c: ApiClient) -> int:
    if args.file:
        try:
            body = json.loads(Path(args.file).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            return fail(f"{args.file}: {exc}")
    else:
        need = (
            ("target", "model")
            if args.federated and args.private
            else ("dataset", "target", "model")
        )
        missing = [f for f in need if not getattr(args, f)]
        if missing:
            return fail(f"task publish needs --{missing[0]} (or --file spec.json)", EXIT_USAGE)
        kind = args.kind or _kind_of(args.model)
        deadline = args.deadline
        if deadline is None:
            # A federated task must fit its rounds (federated-deadline).
            rb = args.round_blocks or 10
            deadline = args.rounds * (rb + 1) if args.federated else 20
        body = {
            "dataset_cid": args.dataset or args.validation,
            "target": args.target,
            "model": args.model,
            "kind": kind,
            "metric": args.metric or ("accuracy" if kind == "classification" else "r2"),
            "params": dict(args.param or []),
            "rounds": args.rounds,
            "partition_fraction": args.partition,
            "holdout_fraction": args.holdout,
            "deadline": deadline,
        }
        if args.features:
            body["features"] = args.features.split(",")
        for key in ("bounty", "fee", "max_results", "result_reward"):
            if getattr(args, key) is not None:
                body[key] = getattr(args, key)
        if args.federated:
            body["federated"] = federated_body(args)
    data = c.post("/tasks", body)
    if args.follow:
        if not args.json:
            print(f"task {data['id']} published; following (Ctrl-C stops following)")
        return follow_task(args, c, data["id"])
    show(args, data, data["id"])
    return 0


def federated_body(args: argparse.Namespace) -> dict[str, Any]:
    """The ``federated`` part of POST /tasks; the node fills in what is left out."""
    fed: dict[str, Any] = {}
    for key in (
        "participants",
        "local_epochs",
        "aggregation",
        "round_blocks",
        "private",
        "validation",
        "reward",
        "trim",
        "clip",
        "epsilon",
        "delta",
        "sampling_rate",
        "noise_multiplier",
    ):
        if getattr(args, key) is not None:
            fed[key] = getattr(args, key)
    if args.classes:
        fed["classes"] = [int(c) for c in args.classes.split(",")]
    return fed


def federated_text(spec: dict[str, Any], fed: dict[str, Any]) -> list[str]:
    """The learning curve (holdout metric of each committed global model),
    the updates of each round and this node's accepted/refused updates."""
    f = spec["federated"]
    lines = [
        f"  federated: round {fed['round']} of {spec['rounds']}, {f['participants']} updates"
        f" per round, {f['local_epochs']} local epochs, {f['aggregation']},"
        f" {f['round_blocks']} blocks per round",
    ]
    mode = f"private ({f['private']})" if f.get("private") else "public shards"
    rule = f.get("aggregation", "?")
    if f.get("trim"):
        rule += f" trim {f['trim']}"
    if f.get("clip"):
        rule += f", clip {f['clip']:g}"
    lines.append(f"  mode: {mode}, rule {rule}")
    if f.get("validation"):
        lines.append(f"  validation: {f['validation']}")
    if f.get("reward") == "improvement":
        lines.append("  reward: by validation improvement (gain in 1e-6 of the metric)")
    if f.get("noise_multiplier"):
        lines.append(
            f"  privacy: epsilon spent {fed.get('epsilon_spent', 0.0):.6f} of budget"
            f" {f['epsilon']:g} at delta {f['delta']:g} (local DP, noise multiplier"
            f" {f['noise_multiplier']:g}, sampling rate {f['sampling_rate']:g})"
        )
    for r in fed["rounds"]:
        metric = "?" if r["metric"] is None else f"{r['metric']:.4f}"
        lines.append(
            f"  round {r['round']}: {spec['metric']} {metric}, {len(r['updates'])} updates,"
            f" G {r['model_hash'][:16]} (height {r['closed_at']})"
        )
        for u in r["updates"]:
            earned = "" if u.get("share") is None else f", earns {u['share']}"
            gain = "" if u.get("gain") is None else f", gain {u['gain']}"
            lines.append(
                f"    accepted {u['participant'][:16]} {u['n_samples']} rows{gain}{earned}"
            )
    for u in fed["pending_updates"]:
        lines.append(f"  round {fed['round']}: in {u['participant'][:16]} {u['n_samples']} rows")
    for e in fed["events"]:
        if e["event"] != "sent":
            lines.append(
                f"  round {e['round']}: {e['event']} {e['participant'][:16]} {e['reason']}"
            )
    if fed.get("model_cid"):
        lines.append(f"  global model {fed['model_cid']} (p2pml model get)")
    return lines


def cmd_results(args: argparse.Namespace) -> int:
    c = client(args)
    if args.id:
        show(args, c.get(f"/results/{args.id}"))
        return 0
    data = c.get("/results" + (f"?task={args.task}" if args.task else ""))
    cols = ["id", "task", "trainer", "round", "metric", "status", "verdict"]
    show(args, data, table(data, cols))
    return 0
