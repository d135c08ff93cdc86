"""The admin HTTP API (aiohttp, JSON). Handlers are thin: they parse, call a
service through :class:`~p2pml.api.ports.AdminContext`, and render with
:mod:`p2pml.api.views`. Every error is ``{"error": ..., "reason": ...}``;
project errors map to statuses through one table (``ERROR_STATUS``).

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
from typing import Any

from aiohttp import web

from p2pml.api import views
from p2pml.api.bans import BanRoutes
from p2pml.api.calllog import call_log_middlewares
from p2pml.api.dashboard import add_dashboard
from p2pml.api.datasets import DatasetLog
from p2pml.api.hosts import host_middleware
from p2pml.api.models import ModelRoutes
from p2pml.api.openapi import openapi_document
from p2pml.api.ports import AdminContext
from p2pml.errors import (
    DaemonUnavailable,
    DatasetError,
    DatasetTooLarge,
    DecodeError,
    MissingDataError,
    NetworkError,
    NotFoundError,
    P2PMLError,
    ValidationError,
)

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


#: Project errors -> (HTTP status, reason when the error carries none). The
#: first matching class wins, so subclasses come before their bases.
ERROR_STATUS: tuple[tuple[type[P2PMLError], int, str], ...] = (
    (NotFoundError, 404, "not-found"),
    (MissingDataError, 503, "pending-data"),
    (ValidationError, 400, "invalid"),
    (DecodeError, 400, "bad-request"),
    (DaemonUnavailable, 503, "ipfs-unavailable"),
    (DatasetTooLarge, 413, "dataset-too-large"),
    (DatasetError, 400, "dataset-add-failed"),
    (P2PMLError, 503, "unavailable"),
)


def status_of(exc: P2PMLError) -> tuple[int, str]:
    """The HTTP status and reason for a project error (see ERROR_STATUS)."""
    for cls, status, reason in ERROR_STATUS:
        if isinstance(exc, cls):
            return status, getattr(exc, "reason", None) or reason
    raise AssertionError("P2PMLError is in the table")


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
    except P2PMLError as exc:
        status, reason = status_of(exc)
        return error_response(status, str(exc), reason)
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


def make_app(ctx: AdminContext) -> web.Application:
    app = web.Application(
        client_max_size=ctx.settings.admin.max_body_bytes,
        middlewares=[
            *call_log_middlewares(),
            errors_middleware,
            auth_middleware(lambda: ctx.token),
        ],
    )
    app.middlewares.insert(0, host_middleware(ctx.settings.admin.allowed_hosts))
    r = app.router
    dataset_log = DatasetLog(ctx.data_dir)

    async def status(_req: web.Request) -> web.Response:
        return ok(views.status(ctx))

    async def peers(_req: web.Request) -> web.Response:
        return ok(views.peers(ctx))

    async def connect_peer(req: web.Request) -> web.Response:
        addr = views.connect_address(await json_body(req))
        return ok({"peer_id": await ctx.peers.connect(addr), "addr": addr})

    async def disconnect_peer(req: web.Request) -> web.Response:
        ban = int_query(req, "ban", 0, 0, 10 * 365 * 86400)
        peer_id = req.match_info["peer_id"]
        views.check_disconnect(ctx, peer_id, ban)
        await ctx.peers.disconnect(peer_id, ban)
        return ok({"peer_id": peer_id, "banned_seconds": ban})

    async def chain(req: web.Request) -> web.Response:
        limit = int_query(req, "limit", 20, 1, 1000)
        start = int_query(req, "start", ctx.chain.chain.height, 0, 2**32)
        return ok(views.chain_headers(ctx, start, limit))

    async def tips(_req: web.Request) -> web.Response:
        return ok(views.chain_tips(ctx))

    async def block(req: web.Request) -> web.Response:
        return ok(views.block(ctx, req.match_info["id"]))

    async def mempool(_req: web.Request) -> web.Response:
        return ok(views.mempool(ctx))

    async def tasks(_req: web.Request) -> web.Response:
        return ok(views.tasks(ctx))

    async def task(req: web.Request) -> web.Response:
        return ok(views.task(ctx, views.hex_id(req.match_info["id"], "task")))

    async def publish_task(req: web.Request) -> web.Response:
        body = await json_body(req)
        if "federated" in body and ctx.federated is not None:
            body = await ctx.federated.complete(body)
        order = views.task_order(body, ctx.params.min_task_fee, ctx.params.min_round_bounty)
        tx = await ctx.tasks.publish(order)
        return ok({"id": tx.id.hex()}, status=201)

    async def send_transfer(req: web.Request) -> web.Response:
        body = await json_body(req)
        recipient, amount, fee = views.transfer_order(body, ctx.params.min_transfer_fee)
        tx = await ctx.transfers.send(recipient, amount, fee)
        return ok({"id": tx.id.hex(), "sender": tx.sender.hex()}, status=201)

    async def post_bond(req: web.Request) -> web.Response:
        body = await json_body(req)
        amount, fee = views.bond_order(body, ctx.params.min_bond_fee, {"amount", "fee"})
        if ctx.bonds is None:
            raise HTTPError(503, "this node does not bond", "unavailable")
        tx = await ctx.bonds.bond(amount, fee)
        return ok({"id": tx.id.hex()}, status=201)

    async def post_unbond(req: web.Request) -> web.Response:
        body = await json_body(req)
        _, fee = views.bond_order(body, ctx.params.min_bond_fee, {"fee"})
        if ctx.bonds is None:
            raise HTTPError(503, "this node does not bond", "unavailable")
        tx = await ctx.bonds.unbond(fee)
        return ok({"id": tx.id.hex()}, status=201)

    async def post_challenge(req: web.Request) -> web.Response:
        body = await json_body(req)
        result_id, fee = views.challenge_order(body, ctx.params.min_challenge_fee)
        if ctx.challenges is None:
            raise HTTPError(503, "this node does not challenge", "unavailable")
        tx = await ctx.challenges.challenge(result_id, fee)
        return ok({"id": tx.id.hex(), "challenger": tx.challenger.hex()}, status=201)

    async def get_bond(req: web.Request) -> web.Response:
        return ok(views.bond(ctx, req.match_info["pubkey"]))

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
        return ok(views.results(ctx, task_id))

    async def result(req: web.Request) -> web.Response:
        return ok(views.result(ctx, views.hex_id(req.match_info["id"], "result")))

    async def add_dataset(req: web.Request) -> web.Response:
        limit = ctx.settings.ipfs.max_dataset_bytes
        if req.content_length is not None and req.content_length > limit:
            raise HTTPError(413, f"dataset over {limit} bytes", "body-too-large")
        uploads = ctx.data_dir / "uploads"
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
            cid = await ctx.datasets.add(path)
            await dataset_log.record(cid, req.headers.get("X-Filename"), path, size)
            return ok({"cid": cid, "size": size}, status=201)
        finally:
            path.unlink(missing_ok=True)

    async def balances(req: web.Request) -> web.Response:
        return ok(views.balance(ctx, req.match_info["pubkey"]))

    async def mine(req: web.Request) -> web.Response:
        if ctx.params.name != "regtest":
            raise HTTPError(403, "mining on request is for regtest only", "forbidden")
        body = await json_body(req)
        n = body.get("blocks", 1)
        if type(n) is not int or not 1 <= n <= 1000:
            raise HTTPError(400, "blocks must be an integer in [1, 1000]", "bad-request")
        return ok({"hashes": [h.hex() for h in await ctx.mining.mine(n)]})

    async def metrics(_req: web.Request) -> web.Response:
        return web.Response(
            text=views.metrics_text(ctx), content_type="text/plain", charset="utf-8"
        )

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
    r.add_post("/transfers", send_transfer)
    r.add_post("/bonds", post_bond)
    r.add_get("/bonds/{pubkey}", get_bond)
    r.add_post("/unbond", post_unbond)
    r.add_post("/challenges", post_challenge)
    r.add_get("/results", results)
    r.add_get("/results/{id}", result)
    r.add_post("/datasets", add_dataset)
    r.add_get("/datasets", dataset_log.list_handler)
    BanRoutes(ctx.peers).add_to(r)
    models = ModelRoutes(ctx.datasets, lambda t: views.task(ctx, t), lambda r: views.result(ctx, r))
    models.add_to(r)
    r.add_get("/balances/{pubkey}", balances)
    r.add_post("/mine", mine)
    r.add_get("/metrics", metrics)
    r.add_get("/openapi.json", openapi)
    add_dashboard(app)
    return app


class AdminServer:
    """The admin API on ``[admin] listen``; ``url`` once started."""

    def __init__(self, ctx: AdminContext) -> None:
        self._ctx = ctx
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        """Listen (NetworkError with one clear line if the address is busy)."""
        listen = self._ctx.settings.admin.listen
        host, _, port = listen.rpartition(":")
        runner = web.AppRunner(
            make_app(self._ctx), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, host, int(port)).start()
        except OSError as exc:
            await runner.cleanup()
            why = (exc.strerror or str(exc)).rsplit(": ", 1)[-1]
            raise NetworkError(f"admin API cannot listen on {listen}: {why}") from None
        self._runner = runner
        bound = runner.addresses[0]
        self.url = f"http://{bound[0]}:{bound[1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
