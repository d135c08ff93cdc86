"""The OpenAPI 3.0 document of the admin API (kept next to the handlers;
tests run schemathesis against a live node to hold the two together)."""

from __future__ import annotations

from typing import Any

from p2pml import __version__
from p2pml.api.dashboard import OPENAPI_PATHS as DASHBOARD_PATHS

HEX64 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
ERROR = {
    "type": "object",
    "required": ["error", "reason"],
    "properties": {"error": {"type": "string"}, "reason": {"type": "string"}},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


AUTH: list[dict[str, list[str]]] = [{"bearer": []}]

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
            "header": _ref("Header"),
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
            "payout": {"type": "array", "items": {"type": "object"}},
            "payout_height": {"type": "integer", "nullable": True},
            "paid": {"type": "boolean"},
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
            "audited": {"type": "boolean"},
        },
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

_ID_PARAM = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
_BINARY = {
    "description": "the model artifact (skops), verified against X-Model-CID",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}


def _model_paths() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for base, what in (("/tasks/{id}", "task's best"), ("/results/{id}", "result's")):
        missing = "unknown id, or no result yet (reason no-result)"
        out[base + "/model"] = {
            "get": {
                "summary": f"Download the {what} model artifact",
                "parameters": _ID_PARAM,
                "responses": {
                    "200": _BINARY,
                    "404": _err(missing),
                    "503": _err("the model cannot be fetched from IPFS now"),
                },
            }
        }
        out[base + "/model/card"] = {
            "get": {
                "summary": f"The {what} model card: estimator, params, feature columns",
                "parameters": _ID_PARAM,
                "responses": {
                    "200": _json(_ref("ModelCard")),
                    "404": _err(missing),
                    "503": _err("the dataset cannot be fetched from IPFS now"),
                },
            }
        }
    return out


def openapi_document() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/status": {"get": {"summary": "Node status", "responses": {"200": _json(_ref("Status"))}}},
        "/peers": {
            "get": {
                "summary": "Connected peers",
                "responses": {"200": _json({"type": "array", "items": _ref("Peer")})},
            },
            "post": {
                "summary": "Connect to a peer",
                "security": AUTH,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["addr"],
                                "properties": {"addr": {"type": "string"}},
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json({"type": "object"}),
                    "400": _err("bad multiaddr"),
                    "401": _err("no or wrong token"),
                    "413": _err("body too large"),
                    "503": _err("could not connect"),
                },
            },
        },
        "/peers/{peer_id}": {
            "delete": {
                "summary": "Disconnect (and optionally ban) a peer",
                "security": AUTH,
                "parameters": [
                    {
                        "name": "peer_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[1-9A-HJ-NP-Za-km-z]{32,127}$"},
                    },
                    {
                        "name": "ban",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0, "maximum": 315360000},
                    },
                ],
                "responses": {
                    "200": _json({"type": "object"}),
                    "400": _err("bad parameter or not a peer id"),
                    "401": _err("no or wrong token"),
                    "404": _err("unknown peer"),
                    "503": _err("network unavailable"),
                },
            }
        },
        "/peers/bans": {
            "get": {
                "summary": "Active peer bans with their expiry",
                "responses": {"200": _json({"type": "array", "items": _ref("Ban")})},
            }
        },
        "/peers/{peer_id}/ban": {
            "delete": {
                "summary": "Lift a peer's ban now",
                "security": AUTH,
                "parameters": [
                    {
                        "name": "peer_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[1-9A-HJ-NP-Za-km-z]{32,127}$"},
                    }
                ],
                "responses": {
                    "200": _json({"type": "object"}),
                    "400": _err("not a peer id"),
                    "401": _err("no or wrong token"),
                    "404": _err("the peer is not banned (reason not-banned)"),
                },
            }
        },
        "/chain": {
            "get": {
                "summary": "Headers on the best chain, newest first",
                "parameters": [
                    {
                        "name": "start",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0, "maximum": 4294967296},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                ],
                "responses": {
                    "200": _json({"type": "array", "items": _ref("Header")}),
                    "400": _err("bad parameter"),
                },
            }
        },
        "/chain/tips": {
            "get": {
                "summary": "Every known tip with its status",
                "responses": {"200": _json({"type": "array", "items": _ref("Header")})},
            }
        },
        "/blocks/{id}": {
            "get": {
                "summary": "A block by hash or height",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": _json(_ref("Block")), "404": _err("unknown block")},
            }
        },
        "/mempool": {
            "get": {
                "summary": "Transactions waiting for a block",
                "responses": {"200": _json({"type": "array", "items": {"type": "object"}})},
            }
        },
        "/tasks": {
            "get": {
                "summary": "Every task (pooled and in the chain)",
                "responses": {"200": _json({"type": "array", "items": _ref("TaskSummary")})},
            },
            "post": {
                "summary": "Publish a task signed with the node's key",
                "security": AUTH,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("NewTask")}},
                },
                "responses": {
                    "201": _json(
                        {"type": "object", "required": ["id"], "properties": {"id": HEX64}}
                    ),
                    "400": _err("bad spec (reason says which rule)"),
                    "401": _err("no or wrong token"),
                    "413": _err("body too large"),
                },
            },
        },
        "/tasks/{id}": {
            "get": {
                "summary": "One task: spec, status, results, best model, payout, failures",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": _json(_ref("Task")), "404": _err("unknown task")},
            }
        },
        "/transfers": {
            "post": {
                "summary": "Send coins from the node's key (signed, pooled, gossiped)",
                "security": AUTH,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("NewTransfer")}},
                },
                "responses": {
                    "201": _json(
                        {
                            "type": "object",
                            "required": ["id", "sender"],
                            "properties": {"id": HEX64, "sender": HEX64},
                        }
                    ),
                    "400": _err("bad transfer (reason says which rule, e.g. insufficient-funds)"),
                    "401": _err("no or wrong token"),
                    "413": _err("body too large"),
                },
            },
        },
        "/bonds": {
            "post": {
                "summary": "Bond the node's key as a trainer (signed, pooled, gossiped)",
                "security": AUTH,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("NewBond")}},
                },
                "responses": {
                    "201": _json(
                        {"type": "object", "required": ["id"], "properties": {"id": HEX64}}
                    ),
                    "400": _err("bad bond (reason says which rule, e.g. bad-bond-amount)"),
                    "401": _err("no or wrong token"),
                    "413": _err("body too large"),
                },
            },
        },
        "/bonds/{pubkey}": {
            "get": {
                "summary": "A key's trainer bond and the tasks that lock it",
                "parameters": [
                    {"name": "pubkey", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": _json(_ref("Bond")), "400": _err("not a public key")},
            }
        },
        "/unbond": {
            "post": {
                "summary": "Release the node's bond (after the network's unbond delay)",
                "security": AUTH,
                "requestBody": {
                    "content": {"application/json": {"schema": _ref("NewUnbond")}},
                },
                "responses": {
                    "201": _json(
                        {"type": "object", "required": ["id"], "properties": {"id": HEX64}}
                    ),
                    "400": _err("refused (reason says which rule, e.g. bond-locked)"),
                    "401": _err("no or wrong token"),
                    "413": _err("body too large"),
                },
            },
        },
        "/results": {
            "get": {
                "summary": "Results, optionally of one task",
                "parameters": [{"name": "task", "in": "query", "schema": {"type": "string"}}],
                "responses": {
                    "200": _json({"type": "array", "items": _ref("Result")}),
                    "400": _err("bad task id"),
                },
            }
        },
        "/results/{id}": {
            "get": {
                "summary": "One result",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": _json(_ref("Result")), "404": _err("unknown result")},
            }
        },
        "/datasets": {
            "get": {
                "summary": "Datasets this node added, newest first",
                "responses": {"200": _json({"type": "array", "items": _ref("DatasetEntry")})},
            },
            "post": {
                "summary": "Add a dataset to IPFS (streamed body); returns its CID",
                "security": AUTH,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        }
                    },
                },
                "responses": {
                    "201": _json(
                        {
                            "type": "object",
                            "required": ["cid", "size"],
                            "properties": {"cid": {"type": "string"}, "size": {"type": "integer"}},
                        }
                    ),
                    "400": _err("empty body or add failed"),
                    "401": _err("no or wrong token"),
                    "413": _err("over the dataset size limit"),
                },
            },
        },
        "/balances/{pubkey}": {
            "get": {
                "summary": "Balance of a public key",
                "parameters": [
                    {"name": "pubkey", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": _json(_ref("Balance")), "400": _err("not a public key")},
            }
        },
        "/mine": {
            "post": {
                "summary": "Regtest only: mine N blocks now",
                "security": AUTH,
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "blocks": {"type": "integer", "minimum": 1, "maximum": 1000}
                                },
                            }
                        }
                    }
                },
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["hashes"],
                            "properties": {"hashes": {"type": "array", "items": HEX64}},
                        }
                    ),
                    "400": _err("bad request"),
                    "401": _err("no or wrong token"),
                    "403": _err("not regtest"),
                    "413": _err("body too large"),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        **_model_paths(),
        "/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": _json({"type": "object"})}}
        },
    }
    paths.update(DASHBOARD_PATHS)
    return {
        "openapi": "3.0.3",
        "info": {"title": "p2pml admin API", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
