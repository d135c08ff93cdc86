"""The admin HTTP API (aiohttp, JSON). Handlers are thin: they parse, call a
Node method, and render. Every error is ``{"error": ..., "reason": ...}``.

POST and DELETE need ``Authorization: Bearer <token>`` (the token file in
the data dir); GETs are open on the bound address (127.0.0.1 by default).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from p2pml.api.calllog import call_log_middlewares
from p2pml.api.openapi import openapi_document
from p2pml.errors import DecodeError, P2PMLError, ValidationError

if TYPE_CHECKING:
    from p2pml.node import Node

log = logging.getLogger("p2pml.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HTTPError(Exception):
    def __init__(self, status: int, error: str, reason: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.reason = reason


def error_response(status: int, error: str, reason: str) -> web.Response:
    return web.json_response({"error": error, "reason": reason}, status=status)


def ok(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, default=str))


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HTTPError as exc:
        return error_response(exc.status, exc.error, exc.reason)
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, "request body too large", "body-too-large")
    except web.HTTPNotFound:
        return error_response(404, "no such endpoint", "not-found")
    except web.HTTPMethodNotAllowed:
        return error_response(405, "method not allowed", "method-not-allowed")
    except web.HTTPException as exc:
        return error_response(exc.status, exc.reason or "http error", "http-error")
    except ValidationError as exc:
        return error_response(400, str(exc), exc.reason)
    except DecodeError as exc:
        return error_response(400, str(exc), "bad-request")
    except P2PMLError as exc:
        return error_response(503, str(exc), "unavailable")
    except Exception:  # a bug: log it, but never hand the client a bare 500 page
        log.exception("admin API handler failed: %s %s", request.method, request.path)
        return error_response(500, "internal error (see the node log)", "internal")


def auth_middleware(token: Callable[[], str]) -> Any:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in ("POST", "DELETE", "PUT", "PATCH"):
            header = request.headers.get("Authorization", "")
            scheme, _, given = header.partition(" ")
            supplied = given.strip().encode("utf-8", "replace")
            if scheme != "Bearer" or not hmac.compare_digest(supplied, token().encode()):
                return error_response(401, "missing or wrong bearer token", "unauthorized")
        return await handler(request)

    return check


async def json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # bad JSON, bad UTF-8, huge ints, deep nesting
        raise HTTPError(400, "body is not valid JSON", "bad-json") from None
    if not isinstance(body, dict):
        raise HTTPError(400, "body must be a JSON object", "bad-json")
    return body


def int_query(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        v = int(text)
    except ValueError:
        raise HTTPError(400, f"{name} must be an integer", "bad-request") from None
    if not lo <= v <= hi:
        raise HTTPError(400, f"{name} must be in [{lo}, {hi}]", "bad-request")
    return v


def make_app(node: Node) -> web.Application:
    app = web.Application(
        client_max_size=node.settings.admin.max_body_bytes,
        middlewares=[
            *call_log_middlewares(),
            errors_middleware,
            auth_middleware(lambda: node.admin_token),
        ],
    )
    r = app.router

    async def status(_req: web.Request) -> web.Response:
        return ok(node.status())

    async def peers(_req: web.Request) -> web.Response:
        return ok(node.peers())

    async def connect_peer(req: web.Request) -> web.Response:
        body = await json_body(req)
        addr = body.get("addr")
        if not isinstance(addr, str) or not addr:
            raise HTTPError(400, "addr (a multiaddr string) is required", "bad-request")
        return ok(await node.connect_peer(addr))

    async def disconnect_peer(req: web.Request) -> web.Response:
        ban = int_query(req, "ban", 0, 0, 10 * 365 * 86400)
        try:
            return ok(await node.disconnect_peer(req.match_info["peer_id"], ban))
        except LookupError:
            raise HTTPError(404, "not connected to that peer", "not-found") from None

    async def chain(req: web.Request) -> web.Response:
        limit = int_query(req, "limit", 20, 1, 1000)
        start = int_query(req, "start", node.chain.height, 0, 2**32)
        return ok(node.chain_headers(start, limit))

    async def tips(_req: web.Request) -> web.Response:
        return ok(node.chain_tips())

    async def block(req: web.Request) -> web.Response:
        found = node.block(req.match_info["id"])
        if found is None:
            raise HTTPError(404, "no such block", "not-found")
        return ok(found)

    async def mempool(_req: web.Request) -> web.Response:
        return ok(node.mempool_view())

    def hex_id(req: web.Request) -> bytes:
        try:
            raw = bytes.fromhex(req.match_info["id"])
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise HTTPError(404, "ids are 64 hex digits", "not-found")
        return raw

    async def tasks(_req: web.Request) -> web.Response:
        return ok(node.tasks.tasks())

    async def task(req: web.Request) -> web.Response:
        found = node.tasks.task_view(hex_id(req))
        if found is None:
            raise HTTPError(404, "no such task", "not-found")
        return ok(found)

    async def publish_task(req: web.Request) -> web.Response:
        return ok(await node.publish_task(await json_body(req)), status=201)

    async def results(req: web.Request) -> web.Response:
        task_hex = req.query.get("task")
        task_id = None
        if task_hex:
            try:
                task_id = bytes.fromhex(task_hex)
            except ValueError:
                raise HTTPError(400, "task must be 64 hex digits", "bad-request") from None
            if len(task_id) != 32:
                raise HTTPError(400, "task must be 64 hex digits", "bad-request")
        return ok(node.tasks.results(task_id))

    async def result(req: web.Request) -> web.Response:
        found = node.tasks.result_view(hex_id(req))
        if not found:
            raise HTTPError(404, "no such result", "not-found")
        return ok(found)

    async def add_dataset(req: web.Request) -> web.Response:
        limit = node.settings.ipfs.max_dataset_bytes
        if req.content_length is not None and req.content_length > limit:
            raise HTTPError(413, f"dataset over {limit} bytes", "body-too-large")
        uploads = node.data_dir / "uploads"
        uploads.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=uploads, suffix=".part")
        path = Path(name)
        try:
            size = 0
            with os.fdopen(fd, "wb") as fh:
                async for chunk in req.content.iter_chunked(1 << 20):
                    size += len(chunk)
                    if size > limit:
                        raise HTTPError(413, f"dataset over {limit} bytes", "body-too-large")
                    await asyncio.to_thread(fh.write, chunk)
            if size == 0:
                raise HTTPError(400, "empty body", "bad-request")
            return ok(await node.add_dataset_file(path), status=201)
        finally:
            path.unlink(missing_ok=True)

    async def balances(req: web.Request) -> web.Response:
        return ok(node.balance(req.match_info["pubkey"]))

    async def mine(req: web.Request) -> web.Response:
        if node.params.name != "regtest":
            raise HTTPError(403, "mining on request is for regtest only", "forbidden")
        body = await json_body(req)
        n = body.get("blocks", 1)
        if type(n) is not int or not 1 <= n <= 1000:
            raise HTTPError(400, "blocks must be an integer in [1, 1000]", "bad-request")
        return ok({"hashes": await node.mine(n)})

    async def metrics(_req: web.Request) -> web.Response:
        return web.Response(text=node.metrics_text(), content_type="text/plain", charset="utf-8")

    async def openapi(_req: web.Request) -> web.Response:
        return ok(openapi_document())

    r.add_get("/status", status)
    r.add_get("/peers", peers)
    r.add_post("/peers", connect_peer)
    r.add_delete("/peers/{peer_id}", disconnect_peer)
    r.add_get("/chain", chain)
    r.add_get("/chain/tips", tips)
    r.add_get("/blocks/{id}", block)
    r.add_get("/mempool", mempool)
    r.add_get("/tasks", tasks)
    r.add_post("/tasks", publish_task)
    r.add_get("/tasks/{id}", task)
    r.add_get("/results", results)
    r.add_get("/results/{id}", result)
    r.add_post("/datasets", add_dataset)
    r.add_get("/balances/{pubkey}", balances)
    r.add_post("/mine", mine)
    r.add_get("/metrics", metrics)
    r.add_get("/openapi.json", openapi)
    return app
