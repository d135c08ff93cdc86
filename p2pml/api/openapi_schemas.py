"""The component schemas of the admin API's OpenAPI document (data only;
the paths that use them are in :mod:`p2pml.api.openapi`)."""

from __future__ import annotations

from typing import Any

HEX64 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
ERROR = {
    "type": "object",
    "required": ["error", "reason"],
    "properties": {"error": {"type": "string"}, "reason": {"type": "string"}},
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


SCHEMAS: dict[str, Any] = {
    "Error": ERROR,
    "Header": {
        "type": "object",
        "required": ["hash", "height", "prev_hash", "tx_root", "time", "bits", "nonce"],
        "properties": {
            "hash": HEX64,
            "version": {"type": "integer"},
            "height": {"type": "integer", "minimum": 0},
            "prev_hash": HEX64,
            "tx_root": HEX64,
            "time": {"type": "integer"},
            "bits": {"type": "string"},
            "nonce": {"type": "integer"},
            "chain_work": {"type": "string"},
            "status": {
                "type": "string",
                "enum": ["active", "valid-fork", "invalid", "headers-only"],
            },
        },
    },
    "Block": {
        "type": "object",
        "required": ["header", "size", "txs"],
        "properties": {
            "header": ref("Header"),
            "size": {"type": "integer"},
            "txs": {"type": "array", "items": {"type": "object"}},
            "status": {"type": "string"},
            "chain_work": {"type": "string"},
            "confirmations": {"type": "integer"},
        },
    },
    "Status": {
        "type": "object",
        "required": ["network", "height", "tip", "chain_work", "peers", "version", "uptime"],
        "properties": {
            "version": {"type": "string"},
            "network": {"type": "string"},
            "peer_id": {"type": "string"},
            "public_key": {"type": "string"},
            "height": {"type": "integer"},
            "tip": HEX64,
            "chain_work": {"type": "string"},
            "peers": {"type": "integer"},
            "banned": {"type": "array", "items": {"type": "string"}},
            "listen": {"type": "array", "items": {"type": "string"}},
            "mempool": {"type": "integer"},
            "mining": {"type": "object"},
            "training": {"type": "object"},
            "ipfs": {"type": "object"},
            "validation": {
                "type": "object",
                "description": "mode (validator or follower), runtime, network_runtime",
            },
            "uptime": {"type": "number"},
        },
    },
    "Peer": {
        "type": "object",
        "required": ["peer_id", "direction", "addrs"],
        "properties": {
            "peer_id": {"type": "string"},
            "direction": {"type": "string", "enum": ["inbound", "outbound"]},
            "addrs": {"type": "array", "items": {"type": "string"}},
            "connected_since": {"type": "number"},
            "score": {"type": "integer"},
            "tip": {"type": "string", "nullable": True},
            "height": {"type": "integer"},
            "chain_work": {"type": "integer"},
        },
    },
    "TaskSummary": {
        "type": "object",
        "required": ["id", "status", "model", "metric", "rounds", "results"],
        "properties": {
            "id": HEX64,
            "status": {"type": "string", "enum": ["pending", "open", "closed"]},
            "model": {"type": "string"},
            "metric": {"type": "string"},
            "dataset_cid": {"type": "string"},
            "rounds": {"type": "integer"},
            "results": {"type": "integer"},
            "best": {"type": "number", "nullable": True},
            "height": {"type": "integer", "nullable": True},
            "bounty": {"type": "integer"},
        },
    },
    "Task": {
        "type": "object",
        "required": ["id", "status", "spec", "publisher", "results", "failures"],
        "properties": {
            "id": HEX64,
            "status": {"type": "string", "enum": ["pending", "open", "closed"]},
            "spec": {"type": "object"},
            "publisher": {"type": "string"},
            "height": {"type": "integer"},
            "seed": HEX64,
            "close_at": {"type": "integer"},
            "closed_at": {"type": "integer", "nullable": True},
            "bounty": {"type": "integer"},
            "fee": {"type": "integer"},
            "results": {"type": "array", "items": {"$ref": "#/components/schemas/Result"}},
            "rounds_done": {"type": "integer"},
            "best": {"type": "object", "nullable": True},
            # Federated tasks only: rounds, global models and their holdout metric.
            "federated": {"type": "object", "nullable": True},
            "payout": {"type": "array", "items": {"type": "object"}},
            "payout_height": {"type": "integer", "nullable": True},
            "paid": {"type": "boolean"},
            "disputes": {"type": "array", "items": {"type": "object"}},
            "failures": {"type": "array", "items": {"type": "object"}},
        },
    },
    "Result": {
        "type": "object",
        "required": ["id", "status", "task", "trainer", "round", "metric", "model_cid"],
        "properties": {
            "id": HEX64,
            "status": {"type": "string", "enum": ["pending", "confirmed"]},
            "task": HEX64,
            "trainer": {"type": "string"},
            "round": {"type": "integer"},
            "metric": {"type": "number"},
            "model_cid": {"type": "string"},
            "train_rows": {"type": "integer"},
            "train_ms": {"type": "integer"},
            "height": {"type": "integer"},
            "block": HEX64,
            "verdict": {
                "type": "string",
                "nullable": True,
                "enum": ["ok", "disputed", "void"],
                "description": "included on the cheap checks (ok), under dispute, or void "
                "(its dispute's full audit failed: it earns nothing); null while pooled",
            },
            "dispute": {"nullable": True, "allOf": [{"$ref": "#/components/schemas/Dispute"}]},
            "challenge_pending": {"type": "boolean"},
            "audited": {"type": "boolean"},
            "audit": {
                "type": "object",
                "properties": {
                    "beacon_at": {"type": "integer"},
                    "beacon": {"type": "string", "nullable": True},
                    "selected": {"type": "boolean", "nullable": True},
                    "committee": {"type": "array", "items": {"type": "string"}},
                    "attest_until": {"type": "integer", "nullable": True},
                    "hold": {"type": "integer"},
                    "attestations": {"type": "array", "items": {"type": "object"}},
                },
            },
        },
    },
    "Dispute": {
        "type": "object",
        "required": ["challenger", "height", "resolve_at", "outcome", "reason"],
        "properties": {
            "challenger": HEX64,
            "height": {"type": "integer"},
            "resolve_at": {"type": "integer"},
            "outcome": {"type": "string", "enum": ["pending", "result-void", "result-valid"]},
            "reason": {"type": "string"},
        },
    },
    "NewChallenge": {
        "type": "object",
        "required": ["result"],
        "properties": {"result": HEX64, "fee": {"type": "integer", "minimum": 0}},
    },
    "NewTask": {
        "type": "object",
        "required": ["dataset_cid", "target", "model", "kind", "metric"],
        "properties": {
            "dataset_cid": {"type": "string"},
            "target": {"type": "string"},
            "features": {"type": "array", "items": {"type": "string"}},
            "model": {"type": "string"},
            "kind": {"type": "string", "enum": ["regression", "classification"]},
            "metric": {"type": "string"},
            "params": {"type": "object"},
            "rounds": {"type": "integer"},
            "holdout_fraction": {"type": "number"},
            "partition_fraction": {"type": "number"},
            "bounty": {"type": "integer", "minimum": 0},
            "fee": {"type": "integer", "minimum": 0},
            "deadline": {"type": "integer", "minimum": 0},
            "result_reward": {"type": "integer", "minimum": 0},
            "max_results": {"type": "integer", "minimum": 0},
        },
    },
    "NewTransfer": {
        "type": "object",
        "required": ["recipient", "amount"],
        "properties": {
            "recipient": HEX64,
            "amount": {"type": "integer", "minimum": 1},
            "fee": {"type": "integer", "minimum": 0},
        },
    },
    "Balance": {
        "type": "object",
        "required": ["public_key", "balance"],
        "properties": {"public_key": {"type": "string"}, "balance": {"type": "integer"}},
    },
    "NewBond": {
        "type": "object",
        "required": ["amount"],
        "properties": {
            "amount": {"type": "integer", "minimum": 1},
            "fee": {"type": "integer", "minimum": 0},
        },
    },
    "NewUnbond": {
        "type": "object",
        "properties": {"fee": {"type": "integer", "minimum": 0}},
    },
    "Bond": {
        "type": "object",
        "required": ["public_key", "amount", "height", "unbond_at", "locked_by"],
        "properties": {
            "public_key": {"type": "string"},
            "amount": {"type": "integer", "nullable": True},
            "height": {"type": "integer", "nullable": True},
            "unbond_at": {"type": "integer", "nullable": True},
            "locked_by": {"type": "array", "items": HEX64},
        },
    },
}


SCHEMAS["ModelCard"] = {
    "type": "object",
    "required": [
        "v",
        "task",
        "result",
        "model_cid",
        "model",
        "kind",
        "params",
        "target",
        "features",
        "random_state",
        "metric",
        "metric_value",
    ],
    "properties": {
        "v": {"type": "integer"},
        "task": HEX64,
        "result": HEX64,
        "model_cid": {"type": "string"},
        "model": {"type": "string"},
        "kind": {"type": "string"},
        "params": {"type": "object"},
        "random_state": {"type": "integer"},
        "target": {"type": "string"},
        "features": {"type": "array", "items": {"type": "string"}},
        "metric": {"type": "string"},
        "metric_value": {"type": "number"},
    },
}
SCHEMAS["DatasetEntry"] = {
    "type": "object",
    "required": ["cid", "name", "size", "rows", "columns", "added"],
    "properties": {
        "cid": {"type": "string"},
        "name": {"type": "string"},
        "size": {"type": "integer"},
        "rows": {"type": "integer", "nullable": True},
        "columns": {"type": "integer", "nullable": True},
        "added": {"type": "integer"},
    },
}
SCHEMAS["Ban"] = {
    "type": "object",
    "required": ["peer_id", "reason", "until", "expires_in"],
    "properties": {
        "peer_id": {"type": "string"},
        "reason": {"type": "string"},
        "until": {"type": "number"},
        "expires_in": {"type": "integer"},
    },
}
