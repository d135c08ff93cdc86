"""The OpenAPI 3.0 document of the admin API (kept next to the handlers;
tests run schemathesis against a live node to hold the two together)."""

from __future__ import annotations

from typing import Any

from p2pml import __version__
from p2pml.api.dashboard import OPENAPI_PATHS as DASHBOARD_PATHS
from p2pml.api.openapi_schemas import HEX64, SCHEMAS, ref


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return _json(ref("Error"), description)


AUTH: list[dict[str, list[str]]] = [{"bearer": []}]
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
                    "200": _json(ref("ModelCard")),
                    "404": _err(missing),
                    "503": _err("the dataset cannot be fetched from IPFS now"),
                },
            }
        }
    return out


def openapi_document() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/status": {"get": {"summary": "Node status", "responses": {"200": _json(ref("Status"))}}},
        "/peers": {
            "get": {
                "summary": "Connected peers",
                "responses": {"200": _json({"type": "array", "items": ref("Peer")})},
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
                "responses": {"200": _json({"type": "array", "items": ref("Ban")})},
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
                    "200": _json({"type": "array", "items": ref("Header")}),
                    "400": _err("bad parameter"),
                },
            }
        },
        "/chain/tips": {
            "get": {
                "summary": "Every known tip with its status",
                "responses": {"200": _json({"type": "array", "items": ref("Header")})},
            }
        },
        "/blocks/{id}": {
            "get": {
                "summary": "A block by hash or height",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": _json(ref("Block")), "404": _err("unknown block")},
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
                "responses": {"200": _json({"type": "array", "items": ref("TaskSummary")})},
            },
            "post": {
                "summary": "Publish a task signed with the node's key",
                "security": AUTH,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": ref("NewTask")}},
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
                "responses": {"200": _json(ref("Task")), "404": _err("unknown task")},
            }
        },
        "/transfers": {
            "post": {
                "summary": "Send coins from the node's key (signed, pooled, gossiped)",
                "security": AUTH,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": ref("NewTransfer")}},
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
                    "content": {"application/json": {"schema": ref("NewBond")}},
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
                "responses": {"200": _json(ref("Bond")), "400": _err("not a public key")},
            }
        },
        "/challenges": {
            "post": {
                "summary": "Challenge a result with the node's bonded key (signed, pooled, "
                "gossiped); every node re-runs its full audit dispute_delay blocks after the "
                "challenge's block, and the loser's bond is slashed",
                "security": AUTH,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": ref("NewChallenge")}},
                },
                "responses": {
                    "201": _json(
                        {
                            "type": "object",
                            "required": ["id", "challenger"],
                            "properties": {"id": HEX64, "challenger": HEX64},
                        }
                    ),
                    "400": _err(
                        "refused (reason says which rule, e.g. challenge-too-late, "
                        "duplicate-challenge, challenge-no-bond)"
                    ),
                    "401": _err("no or wrong token"),
                    "413": _err("body too large"),
                    "503": _err("this node does not challenge"),
                },
            },
        },
        "/unbond": {
            "post": {
                "summary": "Release the node's bond (after the network's unbond delay)",
                "security": AUTH,
                "requestBody": {
                    "content": {"application/json": {"schema": ref("NewUnbond")}},
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
                    "200": _json({"type": "array", "items": ref("Result")}),
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
                "responses": {"200": _json(ref("Result")), "404": _err("unknown result")},
            }
        },
        "/datasets": {
            "get": {
                "summary": "Datasets this node added, newest first",
                "responses": {"200": _json({"type": "array", "items": ref("DatasetEntry")})},
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
                "responses": {"200": _json(ref("Balance")), "400": _err("not a public key")},
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
