"""The dashboard's routes on a bare aiohttp app (no node): the page, its
assets from package data, the security headers, and nothing else served."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from p2pml.api.dashboard import CSP, add_dashboard
from p2pml.chain.metrics import METRICS


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    add_dashboard(app)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


class Refs(HTMLParser):
    """Every URL the page refers to, and its JSON data blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.data: dict[str, str] = {}
        self.inline_scripts = 0
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.urls += [v for k, v in a.items() if k in ("src", "href") and v]
        if tag == "script" and a.get("type") == "application/json":
            self._in = a.get("id") or ""
        elif tag == "script" and "src" not in a:
            self.inline_scripts += 1

    def handle_data(self, data: str) -> None:
        if self._in is not None:
            self.data[self._in] = self.data.get(self._in, "") + data

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in = None


async def test_page_refers_only_to_its_own_assets(
    client: TestClient[web.Request, web.Application],
) -> None:
    resp = await client.get("/")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    assert resp.headers["Content-Security-Policy"] == CSP
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    refs = Refs()
    refs.feed(await resp.text())
    assert refs.inline_scripts == 0  # the CSP would refuse them
    assert refs.urls, "the page links its script and style"
    for url in refs.urls:
        assert url.startswith("/") and not url.startswith("//"), url
        if url.startswith("/static/"):  # others are API routes (a bare app has none)
            asset = await client.get(url)
            assert asset.status == 200, url
    assert "/static/dashboard.js" in refs.urls and "/static/dashboard.css" in refs.urls
    # Metric directions are the chain's own table, not a copy in the script.
    directions = json.loads(refs.data["metric-directions"])
    assert directions == {n: m.higher_is_better for n, m in METRICS.items()}


@pytest.mark.parametrize(
    ("name", "ctype"),
    [
        ("dashboard.js", "text/javascript"),
        ("dashboard.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ],
)
async def test_assets_have_their_content_type(
    client: TestClient[web.Request, web.Application], name: str, ctype: str
) -> None:
    resp = await client.get(f"/static/{name}")
    assert resp.status == 200
    assert resp.content_type == ctype
    assert resp.headers["Content-Security-Policy"] == CSP
    assert len(await resp.read()) > 100


@pytest.mark.parametrize(
    "path",
    [
        "/static/index.html",
        "/static/nope.js",
        "/static/..%2Fdashboard.py",
        "/static/../dashboard.py",
        "/static/",
        "/static",
    ],
)
async def test_nothing_else_is_served(
    client: TestClient[web.Request, web.Application], path: str
) -> None:
    resp = await client.get(path, allow_redirects=False)
    assert resp.status == 404


async def test_script_loads_nothing_from_elsewhere(
    client: TestClient[web.Request, web.Application],
) -> None:
    js = await (await client.get("/static/dashboard.js")).text()
    css = await (await client.get("/static/dashboard.css")).text()
    for text in (js, css):
        assert not re.search(r"https?://", text.replace("http://www.w3.org/2000/svg", ""))
        assert "@import" not in text and "url(" not in text
    assert "innerHTML" not in js  # data from peers is set as text only
