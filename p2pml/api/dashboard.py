"""The web dashboard: one HTML page at ``/`` and its static files.

The page is plain HTML/CSS/JavaScript shipped as package data
(``p2pml/api/static/``): no CDN, no build step, nothing fetched from
elsewhere. It reads the node through the JSON API by polling, and sends the
admin token (typed into the page, kept in the tab's session storage) as
``Authorization: Bearer`` only for the actions that change state.

A Content-Security-Policy allowing only the node's own origin makes the
browser refuse any other asset or connection, and no inline script runs,
so data from peers (task fields, ids) cannot become code in the page.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import Any, Final

from aiohttp import web

from p2pml.chain.metrics import METRICS

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
CONTENT_TYPES: Final = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _load_static() -> dict[str, tuple[bytes, str]]:
    """Every shipped asset by file name, read once (a fixed set: a request can
    never name a path outside it)."""
    out: dict[str, tuple[bytes, str]] = {}
    for item in resources.files("p2pml.api").joinpath("static").iterdir():
        suffix = "." + item.name.rsplit(".", 1)[-1] if "." in item.name else ""
        if item.is_file() and suffix in CONTENT_TYPES and item.name != "index.html":
            out[item.name] = (item.read_bytes(), CONTENT_TYPES[suffix])
    return out


def _index_html() -> str:
    page = resources.files("p2pml.api").joinpath("static", "index.html").read_text("utf-8")
    # Metric directions come from the one table the chain ranks results with;
    # a JSON data block is not executed, so the CSP still forbids inline script.
    directions = {name: m.higher_is_better for name, m in METRICS.items()}
    return page.replace("{{METRIC_DIRECTIONS}}", html.escape(json.dumps(directions), quote=False))


def add_dashboard(app: web.Application) -> None:
    """Serve the dashboard at ``/`` and its assets under ``/static/``."""
    static = _load_static()
    index = _index_html().encode("utf-8")

    async def page(_req: web.Request) -> web.Response:
        return web.Response(
            body=index, content_type="text/html", charset="utf-8", headers=SECURITY_HEADERS
        )

    async def asset(req: web.Request) -> web.Response:
        found = static.get(req.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        body, ctype = found
        return web.Response(
            body=body, content_type=ctype, charset="utf-8", headers=SECURITY_HEADERS
        )

    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", asset)


def _html_response(ctype: str) -> dict[str, Any]:
    return {"description": "OK", "content": {ctype: {"schema": {"type": "string"}}}}


ERROR_404: Final = {
    "description": "no such asset",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}

#: The dashboard's routes in the OpenAPI document: they are served by the
#: same server, so the document lists them (and schemathesis probes the asset
#: route with generated names, which must all be a JSON 404).
OPENAPI_PATHS: Final[dict[str, Any]] = {
    "/": {
        "get": {
            "summary": "The web dashboard (HTML page; reads the JSON API)",
            "responses": {"200": _html_response("text/html")},
        }
    },
    "/static/{name}": {
        "get": {
            "summary": "A static asset of the dashboard",
            "parameters": [
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {
                        "text/javascript": {"schema": {"type": "string"}},
                        "text/css": {"schema": {"type": "string"}},
                        "image/svg+xml": {"schema": {"type": "string"}},
                    },
                },
                "404": ERROR_404,
            },
        }
    },
}
