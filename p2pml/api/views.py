"""The admin API's views: request bodies parsed into protocol objects, and
node state rendered as JSON-ready dicts (hex for bytes).

Pure presentation over :class:`~p2pml.api.ports.AdminContext`; handlers in
:mod:`p2pml.api.server` call these and map errors to statuses.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from p2pml.api.ports import AdminContext
from p2pml.api.render import block_json, entry_json
from p2pml.chain.bonds import bond_key, lock_key
from p2pml.chain.encoding import parse_hash
from p2pml.chain.ledger import balance_key
from p2pml.chain.tasks import result_key, task_key
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.types import (
    AttestTx,
    BondTx,
    ChallengeTx,
    ResultTx,
    TaskTx,
    TransferTx,
    UnbondTx,
    UpdateTx,
)
from p2pml.config import check_multiaddr
from p2pml.errors import DecodeError, NotFoundError, ValidationError
from p2pml.ipfs import embedded_swarm_addrs

# -- node, peers, chain ---------------------------------------------------------------


def status(ctx: AdminContext) -> dict[str, Any]:
    chain = ctx.chain.chain
    tip = chain.tip
    training = ctx.training
    return {
        "version": ctx.version,
        "network": ctx.params.name,
        "peer_id": ctx.peers.peer_id,
        "listen": ctx.peers.listen_addrs(),
        "public_key": ctx.public_key.hex(),
        "height": tip.height,
        "tip": tip.hash.hex(),
        "chain_work": hex(tip.chain_work),
        "peers": len(ctx.peers.peers()),
        "banned": [b.peer_id for b in ctx.peers.banned()],
        "mempool": len(ctx.mempool),
        "mining": {
            "enabled": ctx.mining.enabled,
            "workers": ctx.mining.workers,
            "hash_rate": round(ctx.mining.stats.hash_rate),
            "blocks_found": ctx.mining.stats.blocks_found,
        },
        "training": {
            "enabled": training.enabled,
            "workers": ctx.settings.training.workers,
            "running_jobs": training.running_jobs,
            "jobs_done": training.jobs_done,
            "jobs_failed": training.jobs_failed,
            **({"executor": ctx.executor.describe()} if ctx.executor is not None else {}),
        },
        "verification": {
            "verified": ctx.verification.verified,
            "failed": ctx.verification.failed,
            "blocks_waiting_for_data": len(chain.waiting),
        },
        # Full audits for disputes and the watchtower, by outcome; challenges sent.
        "challenges": {
            "watchtower": ctx.challenges.watchtower if ctx.challenges is not None else False,
            **(dict(ctx.challenges.counts) if ctx.challenges is not None else {}),
        },
        "validation": dict(ctx.validation),
        "ipfs": {
            "mode": ctx.settings.ipfs.mode,
            "state": ctx.datasets.state,
            "swarm": embedded_swarm_addrs(ctx.datasets),
        },
        "uptime": round(time.time() - ctx.started, 1),
    }


def peers(ctx: AdminContext) -> list[dict[str, Any]]:
    return [dataclasses.asdict(p) for p in ctx.peers.peers()]


def connect_address(body: dict[str, Any]) -> str:
    """The multiaddr to dial from a POST /peers body."""
    addr = body.get("addr")
    if not isinstance(addr, str) or not addr:
        raise DecodeError("addr (a multiaddr string) is required")
    problem = check_multiaddr(addr)
    if problem or "/p2p/" not in addr:
        raise ValidationError("bad-multiaddr", problem or "address must end in /p2p/<peer id>")
    return addr


def check_disconnect(ctx: AdminContext, peer_id: str, ban_seconds: int) -> None:
    if not is_peer_id(peer_id):
        raise ValidationError("bad-peer-id", f"{peer_id[:80]!r} is not a libp2p peer id")
    if not ban_seconds and not any(p.peer_id == peer_id for p in ctx.peers.peers()):
        raise NotFoundError("not connected to that peer")


def is_peer_id(text: str) -> bool:
    from libp2p.peer.id import ID

    try:
        return 32 <= len(text) < 128 and bool(ID.from_base58(text).to_bytes())
    except Exception:  # base58 and multihash raise several types
        return False


def chain_headers(ctx: AdminContext, start: int, limit: int) -> list[dict[str, Any]]:
    chain = ctx.chain.chain
    out: list[dict[str, Any]] = []
    h = min(start, chain.height)
    while h >= 0 and len(out) < limit:
        e = chain.at_height(h)
        if e is None:
            break
        out.append(entry_json(chain, e))
        h -= 1
    return out


def chain_tips(ctx: AdminContext) -> list[dict[str, Any]]:
    chain = ctx.chain.chain
    return [entry_json(chain, e) for e in sorted(chain.tips(), key=lambda e: -e.chain_work)]


def block(ctx: AdminContext, ident: str) -> dict[str, Any]:
    chain = ctx.chain.chain
    if ident.isascii() and ident.isdigit() and len(ident) < 20:
        e = chain.at_height(int(ident))
        if e is None:
            raise NotFoundError("no such block")
        h = e.hash
    else:
        try:
            h = parse_hash(ident)
        except DecodeError:
            raise NotFoundError("no such block") from None
    blk = chain.get_block(h)
    if blk is None:
        raise NotFoundError("no such block")
    return block_json(chain, blk)


def _pubkey(pubkey_hex: str) -> bytes:
    try:
        key = bytes.fromhex(pubkey_hex)
    except ValueError:
        raise DecodeError("public key must be hex") from None
    if len(key) != 32:
        raise DecodeError("public key must be 32 bytes")
    return key


def balance(ctx: AdminContext, pubkey_hex: str) -> dict[str, Any]:
    key = _pubkey(pubkey_hex)
    return {
        "public_key": pubkey_hex,
        "balance": int(ctx.chain.chain.state.get(balance_key(key), 0)),
    }


def mempool(ctx: AdminContext) -> list[dict[str, Any]]:
    out = []
    for tx in ctx.mempool.txs.values():
        if isinstance(tx, TaskTx):
            out.append({"id": tx.id.hex(), "type": "task", "fee": tx.fee})
        elif isinstance(tx, TransferTx):
            out.append(
                {
                    "id": tx.id.hex(),
                    "type": "transfer",
                    "fee": tx.fee,
                    "sender": tx.sender.hex(),
                    "recipient": tx.recipient.hex(),
                    "amount": tx.amount,
                }
            )
        elif isinstance(tx, BondTx):
            out.append(
                {
                    "id": tx.id.hex(),
                    "type": "bond",
                    "fee": tx.fee,
                    "trainer": tx.trainer.hex(),
                    "amount": tx.amount,
                }
            )
        elif isinstance(tx, UnbondTx):
            out.append(
                {"id": tx.id.hex(), "type": "unbond", "fee": tx.fee, "trainer": tx.trainer.hex()}
            )
        elif isinstance(tx, ChallengeTx):
            out.append(
                {
                    "id": tx.id.hex(),
                    "type": "challenge",
                    "fee": tx.fee,
                    "challenger": tx.challenger.hex(),
                    "result": tx.result_id.hex(),
                }
            )
        elif isinstance(tx, AttestTx):
            out.append(
                {
                    "id": tx.id.hex(),
                    "type": "attest",
                    "fee": tx.fee,
                    "attester": tx.attester.hex(),
                    "result": tx.result_id.hex(),
                    "passed": tx.passed,
                }
            )
        elif isinstance(tx, UpdateTx):
            out.append(
                {
                    "id": tx.id.hex(),
                    "type": "update",
                    "fee": tx.fee,
                    "task": tx.task_id.hex(),
                    "round": tx.round,
                    "participant": tx.participant.hex(),
                    "update_cid": tx.update_cid,
                    "n_samples": tx.n_samples,
                    "base": tx.base.hex(),
                }
            )
        else:
            out.append(
                {"id": tx.id.hex(), "type": "result", "fee": tx.fee, "task": tx.task_id.hex()}
            )
    return out


# -- bonds ----------------------------------------------------------------------------


def bond(ctx: AdminContext, pubkey_hex: str) -> dict[str, Any]:
    """A key's trainer bond (``null`` fields: none) and its locks."""
    key = _pubkey(pubkey_hex)
    state = ctx.chain.chain.state
    rec = state.get(bond_key(key))
    return {
        "public_key": pubkey_hex,
        "amount": rec["amount"] if rec else None,
        "height": rec["height"] if rec else None,
        "unbond_at": rec["unbond_at"] if rec else None,
        "locked_by": [bytes(t).hex() for t in state.get(lock_key(key), [])],
    }


def bond_order(body: dict[str, Any], min_fee: int, allowed: set[str]) -> tuple[int, int]:
    """(amount, fee) from a POST /bonds or /unbond body (amount 0 if not allowed)."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise DecodeError(f"unknown field {unknown[0]!r}")
    amount, fee = body.get("amount", 0), body.get("fee", min_fee)
    for name, v in (("amount", amount), ("fee", fee)):
        if type(v) is not int or not 0 <= v <= 2**63 - 1:
            raise DecodeError(f"{name} must be an integer in [0, {2**63 - 1}]")
    assert isinstance(amount, int) and isinstance(fee, int)
    return amount, fee


# -- transfers ------------------------------------------------------------------------


def transfer_order(body: dict[str, Any], min_fee: int) -> tuple[bytes, int, int]:
    """(recipient, amount, fee) from a POST /transfers body (DecodeError if
    malformed; the consensus rules judge the rest when it is pooled)."""
    unknown = sorted(set(body) - {"recipient", "amount", "fee"})
    if unknown:
        raise DecodeError(f"unknown field {unknown[0]!r}")
    recipient = body.get("recipient")
    try:
        key = bytes.fromhex(recipient) if isinstance(recipient, str) else b""
    except ValueError:
        key = b""
    if len(key) != 32:
        raise DecodeError("recipient must be a public key (64 hex digits)")
    amount, fee = body.get("amount"), body.get("fee", min_fee)
    for name, v in (("amount", amount), ("fee", fee)):
        if type(v) is not int or not 0 <= v <= 2**63 - 1:
            raise DecodeError(f"{name} must be an integer in [0, {2**63 - 1}]")
    assert isinstance(amount, int) and isinstance(fee, int)
    return key, amount, fee


# -- tasks and results ---------------------------------------------------------------

_SPEC_FIELDS = (
    "dataset_cid",
    "target",
    "model",
    "kind",
    "metric",
    "params",
    "features",
    "format",
    "holdout_fraction",
    "partition_fraction",
    "rounds",
    "federated",
)
FLOAT_KEYS = ("clip", "delta", "epsilon", "noise_multiplier", "sampling_rate")
_ORDER_FIELDS = ("bounty", "fee", "deadline", "result_reward", "max_results")


def task_order(body: dict[str, Any], min_fee: int, min_round_bounty: int = 0) -> TaskTx:
    """An unsigned task from a POST /tasks body (DecodeError if malformed,
    ValidationError naming the rule if the spec breaks one)."""
    spec_fields = {k: body[k] for k in _SPEC_FIELDS if k in body}
    for key in ("dataset_cid", "target", "model", "kind", "metric"):
        if key not in spec_fields:
            raise DecodeError(f"{key} is required")
    if isinstance(spec_fields.get("params"), dict):
        spec_fields["params"] = sorted(spec_fields["params"].items())
    unknown = sorted(set(body) - set(spec_fields) - set(_ORDER_FIELDS))
    if unknown:
        raise DecodeError(f"unknown field {unknown[0]!r}")
    wire = TaskSpec(
        dataset_cid="x", target="y", model="ridge", kind="regression", metric="r2"
    ).to_wire()
    wire.update(spec_fields)
    for k in ("holdout_fraction", "partition_fraction"):
        if type(wire[k]) is int:
            wire[k] = float(wire[k])
    if isinstance(wire.get("features"), tuple):
        wire["features"] = list(wire["features"])
    fed = wire.get("federated")
    if isinstance(fed, dict):  # JSON writes 1.0 as 1: the wire wants float64
        wire["federated"] = {
            k: float(v) if k in FLOAT_KEYS and type(v) is int else v for k, v in fed.items()
        }
    spec = TaskSpec.from_wire(wire)
    spec.validate()  # ValidationError names the rule (bad-task-*)

    def num(name: str, default: int, hi: int = 2**63 - 1) -> int:
        v = body.get(name, default)
        if type(v) is not int or not 0 <= v <= hi:
            raise DecodeError(f"{name} must be an integer in [0, {hi}]")
        return v

    return TaskTx(
        spec=spec,
        bounty=num("bounty", min_round_bounty * spec.rounds),
        fee=num("fee", min_fee),
        deadline=num("deadline", 20, hi=2**32 - 1),
        result_reward=num("result_reward", 0),
        max_results=num("max_results", 3 * spec.rounds, hi=2**32 - 1),
        publisher=b"",
        nonce=0,
    )


def hex_id(text: str, what: str) -> bytes:
    """A 32-byte id from 64 hex digits (NotFoundError otherwise: no such id)."""
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise NotFoundError(f"no such {what}: ids are 64 hex digits")
    return raw


def task(ctx: AdminContext, task_id: bytes) -> dict[str, Any]:
    found = _task_view(ctx, task_id)
    if found is None:
        raise NotFoundError("no such task")
    return found


def _task_view(ctx: AdminContext, task_id: bytes) -> dict[str, Any] | None:
    state = ctx.chain.chain.state
    rec = state.get(task_key(task_id))
    pooled = ctx.mempool.txs.get(task_id)
    if rec is None and not isinstance(pooled, TaskTx):
        return None
    out: dict[str, Any] = {"id": task_id.hex()}
    if rec is None:
        assert isinstance(pooled, TaskTx)
        out.update(
            status="pending",
            spec=pooled.spec.to_wire(),
            publisher=pooled.publisher.hex(),
            bounty=pooled.bounty,
            fee=pooled.fee,
            deadline=pooled.deadline,
            result_reward=pooled.result_reward,
            max_results=pooled.max_results,
            results=[],
            rounds_done=0,
        )
    else:
        results = [_result_view(ctx, bytes(rid)) for rid in rec["results"]]
        best = None
        if rec["winners"]:
            w_trainer, w_rid = rec["winners"][0]
            best = {
                "metric": rec["best"],
                "result": bytes(w_rid).hex(),
                "trainer": bytes(w_trainer).hex(),
                "model_cid": state[result_key(bytes(w_rid))]["model_cid"],
                "winners": [bytes(t).hex() for t, _ in rec["winners"]],
            }
        out.update(
            status="open" if rec["open"] else "closed",
            spec=rec["spec"],
            publisher=bytes(rec["publisher"]).hex(),
            height=rec["height"],
            seed=bytes(rec["seed"]).hex(),
            close_at=rec["close_at"],
            closed_at=rec["closed_at"],
            bounty=rec["bounty"],
            fee=rec["fee"],
            result_reward=rec["result_reward"],
            max_results=rec["max_results"],
            results=results,
            rounds_done=len(results),
            # Results under or after a dispute: the payout counts non-void ones.
            disputes=[
                {"result": r["id"], "verdict": r["verdict"], **r["dispute"]}
                for r in results
                if r.get("dispute")
            ],
            best=best,
            payout=[{"to": bytes(k).hex(), "amount": a} for k, a in rec["payout"]],
            # The payout is credited at this height, W blocks after close.
            payout_height=rec.get("payout_at"),
            paid=bool(rec.get("paid")),
            pending_results=[
                tx.id.hex()
                for tx in ctx.mempool.txs.values()
                if isinstance(tx, ResultTx) and tx.task_id == task_id
            ],
        )
    out["failures"] = [dict(f) for f in ctx.training.failures.get(task_id, [])]
    if rec is not None and "federated" in rec["spec"] and ctx.federated is not None:
        out["federated"] = ctx.federated.describe(task_id)
    return out


def tasks(ctx: AdminContext) -> list[dict[str, Any]]:
    state = ctx.chain.chain.state
    ids = [k[5:] for k in state if k.startswith(b"task:")]
    ids += [
        tx.id
        for tx in ctx.mempool.txs.values()
        if isinstance(tx, TaskTx) and task_key(tx.id) not in state
    ]
    out = [_summary(v) for tid in ids if (v := _task_view(ctx, tid)) is not None]
    return sorted(out, key=lambda t: (t.get("height") or 1 << 62, t["id"]), reverse=True)


def result(ctx: AdminContext, result_id: bytes) -> dict[str, Any]:
    found = _result_view(ctx, result_id)
    if not found:
        raise NotFoundError("no such result")
    return found


def _result_view(ctx: AdminContext, result_id: bytes) -> dict[str, Any]:
    rec = ctx.chain.chain.state.get(result_key(result_id))
    if rec is None:
        tx = ctx.mempool.txs.get(result_id)
        if not isinstance(tx, ResultTx):
            return {}
        return {
            "id": result_id.hex(),
            "status": "pending",
            "task": tx.task_id.hex(),
            "trainer": tx.trainer.hex(),
            "round": tx.round,
            "metric": tx.metric,
            "model_cid": tx.model_cid,
            "train_rows": tx.train_rows,
            "train_ms": tx.train_ms,
            "verdict": None,
            "dispute": None,
        }
    return {
        "id": result_id.hex(),
        "status": "confirmed",
        "task": bytes(rec["task"]).hex(),
        "height": rec["height"],
        "block": bytes(rec["block"]).hex(),
        "trainer": bytes(rec["trainer"]).hex(),
        "round": rec["round"],
        "metric": rec["metric"],
        "model_cid": rec["model_cid"],
        "train_rows": rec["train_rows"],
        "train_ms": rec["train_ms"],
        # Selected for a committee audit by its beacon (False until drawn).
        "audited": bool(rec["audit"]["selected"]),
        "audit": _audit_view(rec),
        # "ok" (included on the cheap checks), "disputed", "void" (a dispute's
        # full audit failed: it earns nothing): docs/consensus.md "Disputes".
        "verdict": rec["status"],
        "dispute": _dispute_view(rec["dispute"]),
        "challenge_pending": any(
            isinstance(tx, ChallengeTx) and tx.result_id == result_id
            for tx in ctx.mempool.txs.values()
        ),
    }


def _audit_view(rec: dict[str, Any]) -> dict[str, Any]:
    """The beacon's draw and the committee's attestations (chain/audits.py)."""
    audit = rec["audit"]
    return {
        "beacon_at": rec["beacon_at"],
        "beacon": bytes(audit["beacon"]).hex() if audit["beacon"] is not None else None,
        "selected": audit["selected"],
        "committee": [bytes(k).hex() for k in audit["committee"]],
        "attest_until": audit["until"],
        "hold": audit["hold"],
        "attestations": [
            {"attester": bytes(k).hex(), "passed": passed, "height": h}
            for k, passed, h in rec["attestations"]
        ],
    }


def _dispute_view(d: dict[str, Any] | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {
        "challenger": bytes(d["by"]).hex(),
        "height": d["at"],
        "resolve_at": d["resolve_at"],
        "outcome": d["outcome"],  # pending, result-void, result-valid
        "reason": d["reason"],  # the failed audit's reason, for result-void
    }


def challenge_order(body: dict[str, Any], min_fee: int) -> tuple[bytes, int]:
    """(result id, fee) from a POST /challenges body (DecodeError if malformed;
    the consensus rules judge the rest when it is pooled)."""
    unknown = sorted(set(body) - {"result", "fee"})
    if unknown:
        raise DecodeError(f"unknown field {unknown[0]!r}")
    rid = body.get("result")
    try:
        result_id = bytes.fromhex(rid) if isinstance(rid, str) else b""
    except ValueError:
        result_id = b""
    if len(result_id) != 32:
        raise DecodeError("result must be a result id (64 hex digits)")
    fee = body.get("fee", min_fee)
    if type(fee) is not int or not 0 <= fee <= 2**63 - 1:
        raise DecodeError(f"fee must be an integer in [0, {2**63 - 1}]")
    return result_id, fee


def results(ctx: AdminContext, task_id: bytes | None) -> list[dict[str, Any]]:
    state = ctx.chain.chain.state
    out = []
    for key in [k for k in state if k.startswith(b"rid:")]:
        v = _result_view(ctx, key[4:])
        if task_id is None or v["task"] == task_id.hex():
            out.append(v)
    for tx in ctx.mempool.txs.values():
        if isinstance(tx, ResultTx) and (task_id is None or tx.task_id == task_id):
            out.append(_result_view(ctx, tx.id))
    return out


def _summary(v: dict[str, Any]) -> dict[str, Any]:
    best = v.get("best")
    return {
        "id": v["id"],
        "status": v["status"],
        "model": v["spec"]["model"],
        "metric": v["spec"]["metric"],
        "dataset_cid": v["spec"]["dataset_cid"],
        "rounds": v["spec"]["rounds"],
        "results": v["rounds_done"],
        "best": None if best is None else best["metric"],
        "height": v.get("height"),
        "bounty": v["bounty"],
    }


# -- metrics ---------------------------------------------------------------------------


def metrics_text(ctx: AdminContext) -> str:
    """Prometheus text exposition of the node's counters and gauges."""
    m = ctx.chain.metrics
    chain = ctx.chain.chain
    lines = [
        "# TYPE p2pml_height gauge",
        f"p2pml_height {chain.height}",
        "# TYPE p2pml_blocks_accepted_total counter",
        f"p2pml_blocks_accepted_total {m.accepted}",
        "# TYPE p2pml_blocks_rejected_total counter",
    ]
    lines += [
        f'p2pml_blocks_rejected_total{{reason="{r}"}} {n}' for r, n in sorted(m.rejected.items())
    ]
    lines += [
        "# TYPE p2pml_reorgs_total counter",
        f"p2pml_reorgs_total {m.reorgs}",
        "# TYPE p2pml_max_reorg_depth gauge",
        f"p2pml_max_reorg_depth {m.max_reorg_depth}",
        "# TYPE p2pml_hash_rate gauge",
        f"p2pml_hash_rate {ctx.mining.stats.hash_rate:.0f}",
        "# TYPE p2pml_peers gauge",
        f"p2pml_peers {len(ctx.peers.peers())}",
        "# TYPE p2pml_mempool_size gauge",
        f"p2pml_mempool_size {len(ctx.mempool)}",
        "# TYPE p2pml_training_jobs_total counter",
        f'p2pml_training_jobs_total{{outcome="done"}} {ctx.training.jobs_done}',
        f'p2pml_training_jobs_total{{outcome="failed"}} {ctx.training.jobs_failed}',
        "# TYPE p2pml_training_jobs_running gauge",
        f"p2pml_training_jobs_running {ctx.training.running_jobs}",
        "# TYPE p2pml_results_verified_total counter",
        f'p2pml_results_verified_total{{verdict="valid"}} {ctx.verification.verified}',
        f'p2pml_results_verified_total{{verdict="false"}} {ctx.verification.failed}',
        "# TYPE p2pml_gossip_result_checks_total counter",
        *(
            f'p2pml_gossip_result_checks_total{{outcome="{k}"}} {v}'
            for k, v in sorted(ctx.result_checks.items())
        ),
        "# TYPE p2pml_committee_audits_total counter",
        *(
            f'p2pml_committee_audits_total{{outcome="{k}"}} {ctx.audits.get(k, 0)}'
            for k in ("passed", "failed", "pending")
        ),
        "# TYPE p2pml_blocks_waiting_for_data gauge",
        f"p2pml_blocks_waiting_for_data {len(chain.waiting)}",
    ]
    for name, value in sorted(ctx.pins.items()):
        lines += [f"# TYPE p2pml_pins_{name} gauge", f"p2pml_pins_{name} {value}"]
    for name, value in sorted(getattr(ctx.datasets, "stats", {}).items()):
        lines += [f"# TYPE p2pml_ipfs_{name}_total counter", f"p2pml_ipfs_{name}_total {value}"]
    for name, value in sorted(ctx.peers.metrics().items()):
        metric = "p2pml_p2p_" + "".join(c if c.isalnum() else "_" for c in name)
        lines += [f"# TYPE {metric} counter", f"{metric} {value}"]
    return "\n".join(lines) + "\n"
