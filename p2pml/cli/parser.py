"""The argument parser: every command, its options and its handler."""

from __future__ import annotations

import argparse
from typing import Any

from p2pml.cli.daemon import cmd_devnet, cmd_node
from p2pml.cli.models import cmd_model, cmd_predict
from p2pml.cli.network import (
    cmd_balance,
    cmd_block,
    cmd_bond,
    cmd_chain,
    cmd_challenge,
    cmd_mempool,
    cmd_mine,
    cmd_peers,
    cmd_send,
    cmd_status,
    cmd_unbond,
)
from p2pml.cli.tasks import cmd_dataset, cmd_datasets, cmd_results, cmd_task, parse_param

DESCRIPTION = "The ``p2pml`` command line."  # the first line of p2pml.cli's docstring


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
    ap = argparse.ArgumentParser(prog="p2pml", description=DESCRIPTION, parents=[common])

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
    pp.add_argument(
        "--deadline",
        type=int,
        help="blocks (default 20; federated: rounds x (round blocks + 1))",
    )
    pp.add_argument("--fee", type=int, help="fee for the miner (default: the network minimum)")
    pp.add_argument("--max-results", type=int, help="close after N results (default 3 x rounds)")
    pp.add_argument("--result-reward", type=int, help="paid per accepted result (default 0)")
    pp.add_argument("--follow", action="store_true", help="then follow it until it closes")
    pp.add_argument("--poll", type=float, default=1.0, help=argparse.SUPPRESS)
    fg = pp.add_argument_group("federated (docs/federated.md): rounds of updates, no results")
    fg.add_argument("--federated", action="store_true", help="train in federated rounds")
    fg.add_argument("--participants", type=int, help="updates a round takes (default 5)")
    fg.add_argument("--local-epochs", type=int, help="epochs per update (default 1)")
    fg.add_argument(
        "--aggregation",
        help="fedavg, median or trimmed_mean (linear models, mlp) or sum (nb, ols)",
    )
    fg.add_argument("--round-blocks", type=int, help="blocks a round takes updates (default 10)")
    fg.add_argument(
        "--classes", help="comma-separated label codes (default: read from the dataset)"
    )
    fg.add_argument(
        "--private",
        metavar="NAME",
        help="private shards: each participant trains on its own file mapped to NAME"
        " ([federated.private] in its config); needs --validation",
    )
    fg.add_argument(
        "--validation", metavar="CID", help="public validation CSV scoring each global model"
    )
    fg.add_argument(
        "--reward",
        choices=("samples", "improvement"),
        help="split each round's share by sample count (default) or by each update's"
        " gain on --validation (improvement)",
    )
    fg.add_argument("--trim", type=int, help="trimmed_mean: updates dropped at each end")
    fg.add_argument("--clip", type=float, help="clip bound C of each update's delta")
    fg.add_argument("--epsilon", type=float, help="DP: epsilon budget (sets the noise)")
    fg.add_argument("--delta", type=float, help="DP: delta the epsilon is stated at")
    fg.add_argument(
        "--sampling-rate",
        type=float,
        help="DP: secret local sampling rate q (protocol 6 takes 1.0 only)",
    )
    fg.add_argument(
        "--noise-multiplier", type=float, help="DP: noise multiplier z (default: from --epsilon)"
    )
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

    p = sub.add_parser(
        "challenge", help="dispute a result with the node's bonded key (a wrong one costs a stake)"
    )
    p.add_argument("result_id", help="the result's id (hex)")
    p.add_argument("--fee", type=int, help="fee for the miner (default: the network minimum)")
    p.set_defaults(fn=cmd_challenge)
    return ap
