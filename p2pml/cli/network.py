"""Commands on the node, its peers, the chain and coins: status, peers,
chain, block, mempool, mine, balance, send, bond, unbond, challenge."""

from __future__ import annotations

import argparse
from typing import Any

from p2pml.cli.common import client, kv, show, table


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


def cmd_challenge(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"result": args.result_id}
    if args.fee is not None:
        body["fee"] = args.fee
    data = client(args).post("/challenges", body)
    show(
        args,
        data,
        f"challenged {args.result_id}: challenge {data['id']} "
        "(resolved by every node's audit after the dispute delay)",
    )
    return 0


def cmd_unbond(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {} if args.fee is None else {"fee": args.fee}
    data = client(args).post("/unbond", body)
    show(args, data, f"unbond {data['id']} (the bond is released after the unbond delay)")
    return 0
