"""The ``p2pml`` command line.

``p2pml node --config FILE`` runs a node; ``p2pml devnet`` runs a local
network; every other command talks to a node's admin API (``--api``, default
``$P2PML_API`` or http://127.0.0.1:8080). Errors are one line and a non-zero
exit; ``--json`` prints machine-readable output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from p2pml import calllog
from p2pml.api.client import ApiClient
from p2pml.errors import ApiError, P2PMLError

EXIT_USAGE = 2
EXIT_CONFIG = 78  # EX_CONFIG


def fail(msg: str, code: int = 1) -> int:
    print(f"p2pml: {msg}", file=sys.stderr)
    return code


def table(rows: list[dict[str, Any]], cols: Sequence[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def show(args: argparse.Namespace, data: Any, human: str | None = None) -> None:
    if args.json or human is None:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(human)


def kv(data: dict[str, Any], indent: str = "") -> str:
    out = []
    for k, v in data.items():
        if isinstance(v, dict):
            out.append(f"{indent}{k}:")
            out.append(kv(v, indent + "  "))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            out.append(f"{indent}{k}:")  # e.g. executor workers: one line each
            out.extend(f"{indent}  - " + ", ".join(f"{a}={b}" for a, b in x.items()) for x in v)
        else:
            out.append(f"{indent}{k}: {v}")
    return "\n".join(out)


# -- node and devnet ---------------------------------------------------------------


def cmd_node(args: argparse.Namespace) -> int:
    from p2pml.config import load_settings
    from p2pml.errors import ConfigError, NetworkError, StoreError
    from p2pml.logsetup import setup_logging
    from p2pml.node.node import run_node

    try:
        settings = load_settings(Path(args.config))
        setup_logging(settings.log)
        asyncio.run(run_node(settings))
    except ConfigError as exc:
        return fail(str(exc), EXIT_CONFIG)
    except (NetworkError, StoreError) as exc:
        return fail(str(exc), 1)
    except KeyboardInterrupt:
        return 130
    return 0


def cmd_devnet(args: argparse.Namespace) -> int:
    from p2pml.devnet import run_devnet

    try:
        return run_devnet(Path(args.dir), args.nodes, args.demo, args.workers)
    except RuntimeError as exc:
        return fail(str(exc))


# -- API commands ----------------------------------------------------------------


def client(args: argparse.Namespace) -> ApiClient:
    token_file = args.token_file or os.environ.get("P2PML_TOKEN_FILE")
    path = Path(token_file) if token_file else None
    if path is None and Path("data/admin.token").exists():
        path = Path("data/admin.token")
    return ApiClient.with_token_file(args.api, path)


def cmd_status(args: argparse.Namespace) -> int:
    data = client(args).get("/status")
    show(args, data, kv(data))
    return 0


def cmd_peers(args: argparse.Namespace) -> int:
    c = client(args)
    if args.peers_cmd == "unban":
        res = c.delete(f"/peers/{args.peer_id}/ban")
        show(args, res, f"unbanned {args.peer_id} (was banned: {res['reason']})")
    elif args.peers_cmd == "bans":
        data = c.get("/peers/bans")
        rows = [{**b, "expires_in": _duration(b["expires_in"])} for b in data]
        show(args, data, table(rows, ["peer_id", "reason", "expires_in"]))
    elif args.peers_cmd == "connect":
        show(args, c.post("/peers", {"addr": args.addr}), f"connected to {args.addr}")
    elif args.peers_cmd == "disconnect":
        res = c.delete(f"/peers/{args.peer_id}?ban={args.ban}")
        show(
            args,
            res,
            f"disconnected {args.peer_id}" + (f", banned {args.ban}s" if args.ban else ""),
        )
    else:
        data = c.get("/peers")
        show(args, data, table(data, ["peer_id", "direction", "height", "score", "addrs"]))
    return 0


def _duration(seconds: int) -> str:
    if seconds >= 86400:
        return f"{seconds // 86400}d{seconds % 86400 // 3600}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60}m"
    return f"{seconds // 60}m{seconds % 60}s" if seconds >= 60 else f"{seconds}s"


def cmd_chain(args: argparse.Namespace) -> int:
    c = client(args)
    if args.tips:
        data = c.get("/chain/tips")
        show(args, data, table(data, ["height", "hash", "status", "chain_work"]))
        return 0
    q = f"?limit={args.limit}" + (f"&start={args.start}" if args.start is not None else "")
    data = c.get("/chain" + q)
    show(args, data, table(data, ["height", "hash", "time", "bits", "status"]))
    return 0


def cmd_block(args: argparse.Namespace) -> int:
    data = client(args).get(f"/blocks/{args.id}")
    show(args, data)
    return 0


def cmd_mempool(args: argparse.Namespace) -> int:
    data = client(args).get("/mempool")
    show(args, data, table(data, ["id", "type", "fee"]))
    return 0


def cmd_mine(args: argparse.Namespace) -> int:
    data = client(args).post("/mine", {"blocks": args.n})
    show(args, data, "\n".join(data["hashes"]))
    return 0


def cmd_balance(args: argparse.Namespace) -> int:
    data = client(args).get(f"/balances/{args.pubkey}")
    show(args, data, f"{data['balance']}")
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"recipient": args.pubkey, "amount": args.amount}
    if args.fee is not None:
        body["fee"] = args.fee
    data = client(args).post("/transfers", body)
    show(args, data, f"sent {args.amount} to {args.pubkey}: transfer {data['id']}")
    return 0


def cmd_bond(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"amount": args.amount}
    if args.fee is not None:
        body["fee"] = args.fee
    data = client(args).post("/bonds", body)
    show(args, data, f"bonded {args.amount}: bond {data['id']}")
    return 0


def cmd_unbond(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {} if args.fee is None else {"fee": args.fee}
    data = client(args).post("/unbond", body)
    show(args, data, f"unbond {data['id']} (the bond is released after the unbond delay)")
    return 0


class ProgressBar:
    """A one-line progress bar on stderr (only when stderr is a terminal)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.tty = sys.stderr.isatty()
        self.last = -1

    def __call__(self, done: int, total: int) -> None:
        pct = int(100 * done / total) if total else 100
        if not self.tty or pct == self.last:
            return
        self.last = pct
        bar = "#" * (pct // 4)
        sys.stderr.write(
            f"\r{self.label} [{bar:<25}] {pct:3d}% {done / 1e6:.1f}/{total / 1e6:.1f} MB"
        )
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


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
        missing = [f for f in ("dataset", "target", "model") if not getattr(args, f)]
        if missing:
            return fail(f"task publish needs --{missing[0]} (or --file spec.json)", EXIT_USAGE)
        kind = args.kind or _kind_of(args.model)
        body = {
            "dataset_cid": args.dataset,
            "target": args.target,
            "model": args.model,
            "kind": kind,
            "metric": args.metric or ("accuracy" if kind == "classification" else "r2"),
            "params": dict(args.param or []),
            "rounds": args.rounds,
            "partition_fraction": args.partition,
            "holdout_fraction": args.holdout,
            "deadline": args.deadline,
        }
        if args.features:
            body["features"] = args.features.split(",")
        for key in ("bounty", "fee", "max_results", "result_reward"):
            if getattr(args, key) is not None:
                body[key] = getattr(args, key)
    data = c.post("/tasks", body)
    if args.follow:
        if not args.json:
            print(f"task {data['id']} published; following (Ctrl-C stops following)")
        return follow_task(args, c, data["id"])
    show(args, data, data["id"])
    return 0


# -- models and predictions --------------------------------------------------------


def cmd_model(args: argparse.Namespace) -> int:
    if args.model_cmd == "get":
        return model_get(args)
    return model_show(args)


def model_get(args: argparse.Namespace) -> int:
    """Save the task's best model (or --result's) and its card beside it."""
    from p2pml.client import _download_checked
    from p2pml.ml.modelfile import ModelCard, card_path, write_card

    c = client(args)
    base = f"/results/{args.result}/model" if args.result else f"/tasks/{args.task_id}/model"
    card = ModelCard.from_json(c.get(base + "/card"), "model card from the node")
    dest = Path(args.output or f"model-{(args.result or args.task_id)[:16]}.skops")
    _download_checked(c, base, dest, card.model_cid, ProgressBar(f"model {card.model_cid[:12]}"))
    write_card(card_path(dest), card)
    summary = {"file": str(dest), "card": str(card_path(dest)), **card.to_json()}
    show(
        args,
        summary,
        f"saved {dest} ({dest.stat().st_size} bytes, CID {card.model_cid} checked)\n"
        f"card  {card_path(dest)}: {card.model}, {card.metric} {card.metric_value}, "
        f"{len(card.features)} features -> {card.target}",
    )
    return 0


def model_show(args: argparse.Namespace) -> int:
    from p2pml.ml.modelfile import load_file

    loaded = load_file(Path(args.file), use_card=not args.no_card)
    params = loaded.model.get_params(deep=False)
    info: dict[str, Any] = {
        "estimator": loaded.estimator,
        "class": type(loaded.model).__name__,
        "params": params,
        "n_features": loaded.n_features,
        "classes": loaded.classes,
    }
    card = loaded.card
    if card is not None:
        info.update(
            task=card.task,
            result=card.result,
            model_cid=card.model_cid,
            target=card.target,
            features=list(card.features),
            metric={card.metric: card.metric_value},
        )
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True, default=str))
        return 0
    lines = [
        f"estimator  {loaded.estimator} ({type(loaded.model).__module__}."
        f"{type(loaded.model).__name__})",
        "params     " + ", ".join(f"{k}={v!r}" for k, v in sorted(params.items())),
        f"features   {loaded.n_features}",
    ]
    if loaded.classes is not None:
        lines.append("classes    " + ", ".join(str(c) for c in loaded.classes))
    if card is not None:
        lines += [
            f"target     {card.target}",
            "columns    " + ", ".join(card.features),
            f"metric     {card.metric} {card.metric_value}",
            f"task       {card.task}",
            f"result     {card.result}",
            f"model CID  {card.model_cid}",
        ]
    else:
        lines.append("card       none (feature columns unknown: use p2pml model get)")
    print("\n".join(lines))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from p2pml.ml.modelfile import load_file
    from p2pml.ml.predict import predict_frame, read_rows

    features = args.features.split(",") if args.features else None
    loaded = load_file(Path(args.model), use_card=True)
    df = read_rows(Path(args.data))
    out = predict_frame(loaded, df, features=features, proba=args.proba, where=args.data)
    if args.output:
        out.to_csv(args.output, index=False)
        print(f"{len(out)} predictions written to {args.output}", file=sys.stderr)
    else:
        out.to_csv(sys.stdout, index=False)
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    c = client(args)
    if args.id:
        show(args, c.get(f"/results/{args.id}"))
        return 0
    data = c.get("/results" + (f"?task={args.task}" if args.task else ""))
    show(args, data, table(data, ["id", "task", "trainer", "round", "metric", "status"]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    # The common options work before or after the command name.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--api",
        default=argparse.SUPPRESS,
        help="admin API URL (default $P2PML_API or http://127.0.0.1:8080)",
    )
    common.add_argument(
        "--token-file",
        default=argparse.SUPPRESS,
        help="admin token file (default $P2PML_TOKEN_FILE, else ./data/admin.token)",
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    ap = argparse.ArgumentParser(
        prog="p2pml", description=__doc__.splitlines()[0], parents=[common]
    )

    def subparsers(parent: argparse.ArgumentParser, **kw: Any) -> Any:
        group = parent.add_subparsers(**kw)
        plain = group.add_parser

        def add_parser(name: str, **kw: Any) -> argparse.ArgumentParser:
            made: argparse.ArgumentParser = plain(name, parents=[common], **kw)
            return made

        group.add_parser = add_parser  # type: ignore[method-assign]
        return group

    sub = subparsers(ap, dest="cmd", required=True)

    p = sub.add_parser("node", help="run a node from a config file")
    p.add_argument("--config", required=True)
    p.set_defaults(fn=cmd_node)

    p = sub.add_parser("devnet", help="run a local network of N nodes on loopback")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--demo", action="store_true", help="add a dataset, publish a task, follow it")
    p.add_argument("--dir", default="devnet", help="where node data dirs go (default ./devnet)")
    p.add_argument("--workers", type=int, default=1, help="mining workers per node")
    p.set_defaults(fn=cmd_devnet)

    sub.add_parser("status", help="node status").set_defaults(fn=cmd_status)

    p = sub.add_parser("peers", help="list, connect or disconnect peers")
    psub = subparsers(p, dest="peers_cmd")
    pc = psub.add_parser("connect")
    pc.add_argument("addr")
    pu = psub.add_parser("unban", help="lift a ban now")
    pu.add_argument("peer_id")
    psub.add_parser("bans", help="active bans and when they expire")
    pd = psub.add_parser("disconnect")
    pd.add_argument("peer_id")
    pd.add_argument("--ban", type=int, default=0, metavar="SECONDS")
    p.set_defaults(fn=cmd_peers)

    p = sub.add_parser("chain", help="headers on the best chain, newest first")
    p.add_argument("--start", type=int)
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--tips", action="store_true", help="every known tip with its status")
    p.set_defaults(fn=cmd_chain)

    p = sub.add_parser("block", help="one block by hash or height")
    p.add_argument("id")
    p.set_defaults(fn=cmd_block)

    sub.add_parser("mempool", help="transactions waiting for a block").set_defaults(fn=cmd_mempool)

    p = sub.add_parser("dataset", help="datasets in IPFS")
    dsub = subparsers(p, dest="dataset_cmd", required=True)
    pa = dsub.add_parser("add", help="add a file (streamed, with progress); prints its CID")
    pa.add_argument("file")
    p.set_defaults(fn=cmd_dataset)

    sub.add_parser("datasets", help="datasets this node added").set_defaults(fn=cmd_datasets)

    sub.add_parser("tasks", help="every task").set_defaults(fn=cmd_task, task_cmd=None)
    p = sub.add_parser("task", help="show, follow or publish a task")
    tsub = subparsers(p, dest="task_cmd", required=True)
    ps = tsub.add_parser("show")
    ps.add_argument("id")
    pf = tsub.add_parser(
        "follow", help="live progress until the task closes (Ctrl-C: stop following)"
    )
    pf.add_argument("id")
    pf.add_argument("--poll", type=float, default=1.0, help="seconds between polls")
    pp = tsub.add_parser("publish", help="flags, or --file spec.json")
    pp.add_argument("--file", help="JSON body of POST /tasks")
    pp.add_argument("--dataset", help="dataset CID")
    pp.add_argument("--target", help="target column")
    pp.add_argument("--features", help="comma-separated feature columns (default: all others)")
    pp.add_argument("--model", help="allowlisted estimator, e.g. ridge")
    pp.add_argument(
        "--kind", choices=["regression", "classification"], help="default: the estimator's"
    )
    pp.add_argument("--metric", help="default: r2 (regression), accuracy (classification)")
    pp.add_argument("--param", action="append", type=parse_param, metavar="NAME=VALUE")
    pp.add_argument("--rounds", type=int, default=1)
    pp.add_argument("--partition", type=float, default=0.5, help="fraction of rows per round")
    pp.add_argument("--holdout", type=float, default=0.2)
    pp.add_argument(
        "--bounty", type=int, default=None, help="default: the network's minimum per round"
    )
    pp.add_argument("--deadline", type=int, default=20, help="blocks")
    pp.add_argument("--fee", type=int, help="fee for the miner (default: the network minimum)")
    pp.add_argument("--max-results", type=int, help="close after N results (default 3 x rounds)")
    pp.add_argument("--result-reward", type=int, help="paid per accepted result (default 0)")
    pp.add_argument("--follow", action="store_true", help="then follow it until it closes")
    pp.add_argument("--poll", type=float, default=1.0, help=argparse.SUPPRESS)
    p.set_defaults(fn=cmd_task)

    p = sub.add_parser("model", help="download a trained model, or describe a model file")
    msub = subparsers(p, dest="model_cmd", required=True)
    mg = msub.add_parser("get", help="save a task's best model (and its card FILE.json)")
    mg.add_argument("task_id")
    mg.add_argument("-o", "--output", help="file (default model-<id>.skops)")
    mg.add_argument("--result", help="a result id instead of the task's best")
    ms = msub.add_parser("show", help="estimator, params, features, classes (safe reader)")
    ms.add_argument("file")
    ms.add_argument("--no-card", action="store_true", help="ignore FILE.json")
    p.set_defaults(fn=cmd_model)

    p = sub.add_parser("predict", help="run a model file on a CSV")
    p.add_argument("data", help="CSV with the task's feature columns (header row)")
    p.add_argument("--model", required=True, help="model file from `p2pml model get`")
    p.add_argument("-o", "--output", help="CSV to write (default stdout)")
    p.add_argument("--proba", action="store_true", help="class probabilities (classifiers)")
    p.add_argument("--features", help="comma-separated feature columns (default: the card's)")
    p.set_defaults(fn=cmd_predict)

    p = sub.add_parser("results", help="results, of one task or all")
    p.add_argument("id", nargs="?")
    p.add_argument("--task")
    p.set_defaults(fn=cmd_results)

    p = sub.add_parser("mine", help="regtest: mine N blocks now")
    p.add_argument("n", type=int)
    p.set_defaults(fn=cmd_mine)

    p = sub.add_parser("balance", help="balance of a public key (hex)")
    p.add_argument("pubkey")
    p.set_defaults(fn=cmd_balance)

    p = sub.add_parser("send", help="send coins from the node's key to a public key (hex)")
    p.add_argument("pubkey")
    p.add_argument("amount", type=int)
    p.add_argument("--fee", type=int, help="fee for the miner (default: the network minimum)")
    p.set_defaults(fn=cmd_send)
    p = sub.add_parser("bond", help="lock AMOUNT of the node's coins as its trainer bond")
    p.add_argument("amount", type=int)
    p.add_argument("--fee", type=int, help="fee for the miner (default: the network minimum)")
    p.set_defaults(fn=cmd_bond)
    p = sub.add_parser("unbond", help="release the node's trainer bond (after a delay)")
    p.add_argument("--fee", type=int, help="fee for the miner (default: the network minimum)")
    p.set_defaults(fn=cmd_unbond)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    calllog.record_cli(parser, sys.argv[1:] if argv is None else argv)
    # Common options are SUPPRESSed so a subcommand never resets them: fill gaps.
    for name, default in (("api", None), ("token_file", None), ("json", False)):
        if not hasattr(args, name):
            setattr(args, name, default)
    try:
        return int(args.fn(args))
    except ApiError as exc:
        return fail(str(exc))
    except P2PMLError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `p2pml ... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
