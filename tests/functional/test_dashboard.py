"""The web dashboard in a real browser (Debian's headless Chromium) against a
real three-node devnet on loopback.

The page must show the node's current height, a published task with its
best metric, the leaderboard and chart of that task, and follow new blocks
and a reorg as they arrive; it must change nothing without the admin token;
its actions (mine on regtest, publish a task) must work with it. Chromium
is pinned to loopback, every URL the page asked for is on the node's own
origin, and no socket of the browser's process tree ever touched an address
outside loopback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.framework.browser import Browser
from tests.framework.tasks import publish_ridge_task, upload_diabetes
from tests.framework.testnode import (
    NodeSet,
    TestNode,
    connect_nodes,
    split_network,
    sync_blocks,
    wait_until_sync,
)

HOSTILE_TARGET = '<img id="xss" src="/static/none" onerror="document.body.dataset.pwned=1">'


def text_of(selector: str) -> str:
    """A JS expression: the trimmed text of the first element matching selector."""
    return f"(document.querySelector({json.dumps(selector)})?.textContent ?? '').trim()"


def page_height_is(n: int) -> str:
    return f"{text_of('#height')} === '{n}'"


def publish_and_finish_task(nodes: list[TestNode], tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """A ridge task trained by all three nodes for two rounds, mined to the end."""
    a, b, _ = nodes
    cid = upload_diabetes(a, tmp_path)
    task_id = publish_ridge_task(
        b,
        cid,
        params={"alpha": 0.3},
        rounds=2,
        partition_fraction=0.6,
        bounty=300_000,
        fee=5_000,
        deadline=4,
        max_results=6,
    )
    wait_until_sync(lambda: len(a.api.get("/mempool")) == 1, 30, what="task gossiped to node0")
    a.mine(1)
    sync_blocks(nodes)
    wait_until_sync(
        lambda: len(a.api.get("/mempool")) == 6, 180, what="six verified results at node0"
    )
    a.mine(1)
    sync_blocks(nodes)
    view = dict(a.api.get(f"/tasks/{task_id}"))
    assert view["status"] == "closed" and len(view["results"]) == 6
    return task_id, view


def test_dashboard_in_chromium(nodes: NodeSet, tmp_path: Path) -> None:
    trio = [
        nodes.add(node={"dev_key": i}, training={"enabled": True, "workers": 1}) for i in range(3)
    ]
    nodes.start_mesh()
    a, b, c = trio
    connect_nodes(a, b)
    connect_nodes(b, c)
    connect_nodes(a, c)
    task_id, view = publish_and_finish_task(trio, tmp_path)
    best = view["best"]
    height = a.height
    base = a.api.base

    browser = Browser(tmp_path / "chromium-profile")
    try:
        browser.goto(base + "/?refresh=500")

        # The current height, and the task with its best metric.
        browser.wait_for(page_height_is(height), 60, what=f"page to show height {height}")
        row = f'#tasks tr[data-task-id="{task_id}"]'
        browser.wait_for(f"!!document.querySelector('{row}')", 30, what="the task row")
        shown = browser.wait_for(
            f"document.querySelector('{row} td.best').dataset.value", 30, what="best metric"
        )
        assert float(shown) == best["metric"]
        assert browser.eval(text_of(f"{row} td.best")) == f"{best['metric']:.4f}"
        assert browser.eval(text_of(f"{row} td:nth-child(2)")) == "closed"

        # Its leaderboard (best first, rewards paid) and its chart (one dot per result).
        rows = "document.querySelectorAll('#leaderboard tbody tr')"
        browser.wait_for(f"{rows}.length === 6", 30, what="leaderboard")
        first = browser.eval("document.querySelector('#leaderboard tbody tr').dataset.resultId")
        assert first == best["result"]
        rewards = browser.eval(
            "Object.fromEntries([...document.querySelectorAll('#leaderboard tbody tr')]"
            ".filter(tr => tr.querySelector('td.reward').dataset.amount)"
            ".map(tr => [tr.dataset.trainer, Number(tr.querySelector('td.reward').dataset.amount)])"
            ")"
        )
        trainers = {r["trainer"] for r in view["results"]}
        paid = {p["to"]: p["amount"] for p in view["payout"] if p["to"] in trainers}
        assert rewards == paid and paid
        dots = browser.eval(
            "[...document.querySelectorAll('#chart svg circle')].map(c => c.dataset.resultId)"
        )
        assert sorted(dots) == sorted(r["id"] for r in view["results"])

        # The verdict of each result (no dispute here: the cheap checks).
        audits = browser.eval(
            f"Object.fromEntries([...{rows}].map(tr => [tr.dataset.resultId, "
            "tr.querySelector('td:nth-child(5)').textContent]))"
        )
        assert audits == {r["id"]: f"metric checked, block {r['height']}" for r in view["results"]}
        # The best-so-far line has a point per round.
        line = browser.eval("document.querySelector('#chart polyline').getAttribute('points')")
        assert len(line.split()) == 2

        # Recent blocks: the task's block shows one task, the next one six results.
        task_height = view["height"]
        for h, col, want in ((task_height, 6, "1"), (task_height + 1, 7, "6")):
            got = browser.eval(text_of(f'#blocks tr[data-height="{h}"] td:nth-child({col})'))
            assert got == want, (h, col, got)
        assert browser.eval(text_of('#tips tr[data-status="active"] td')) == str(height)
        assert browser.eval("document.querySelectorAll('#peers tbody tr').length") == 2

        # A block mined elsewhere reaches node 0 and the page follows.
        c.mine(1)
        browser.wait_for(page_height_is(height + 1), 60, what="page to follow a gossiped block")

        # Read-only without the token: the action asks for it and changes nothing.
        browser.click("#mine-button")
        browser.wait_for(f"{text_of('#action-status')}.includes('admin token')", 10)
        browser.type_into("#token", "not-the-token")
        browser.click("#mine-button")
        browser.wait_for(f"{text_of('#action-status')}.includes('unauthorized')", 10)
        assert a.height == height + 1

        # With the token it mines on node 0 (regtest) and the page shows it.
        browser.eval("document.getElementById('token').value = ''")
        browser.type_into("#token", a.api.token or "")
        browser.click("#mine-button")
        browser.wait_for(f"{text_of('#action-status')}.startsWith('mined 1 block')", 30)
        browser.wait_for(page_height_is(height + 2), 30, what="page to show the mined block")
        assert a.height == height + 2

        # Publishing through the page's form (the token is still there). Task
        # fields come from peers: markup in them is shown as text, never run.
        hostile_spec = {
            "dataset_cid": view["spec"]["dataset_cid"],
            "target": HOSTILE_TARGET,
            "model": "ridge",
            "kind": "regression",
            "metric": "r2",
            "rounds": 1,
            "bounty": 1000,
            "fee": 1000,
        }
        browser.click("#publish-form summary")
        browser.eval("document.getElementById('task-json').value = ''")
        browser.type_into("#task-json", json.dumps(hostile_spec))
        browser.click("#publish-button")
        browser.wait_for(f"{text_of('#action-status')}.startsWith('published task')", 30)
        hostile = browser.eval("document.getElementById('action-status').dataset.taskId")
        browser.wait_for(f"document.getElementById('task-id').title === '{hostile}'", 10)
        assert a.api.get(f"/tasks/{hostile}")["spec"]["target"] == HOSTILE_TARGET
        browser.wait_for(f"{text_of('#task-summary')}.includes({json.dumps(HOSTILE_TARGET)})", 30)
        assert browser.eval("document.getElementById('xss') === null")
        assert browser.eval("document.body.dataset.pwned === undefined")

        # A reorg: node 0 mines alone, the others mine a longer branch, they meet.
        sync_blocks(trio)
        split_network([[a], [b, c]])
        a.mine(1)
        c.mine(2)
        sync_blocks([b, c])
        connect_nodes(a, c)
        sync_blocks(trio)
        browser.wait_for(page_height_is(height + 4), 60, what="page to show the heavier branch")
        browser.wait_for(f"{text_of('#reorgs')} === '1 (deepest 1)'", 30, what="reorg count")
        fork = '#tips tr[data-status="valid-fork"] td'
        browser.wait_for(f"{text_of(fork)} === '{height + 3}'", 30, what="the fork's tip")

        # Back to the trained task for the picture: its leaderboard and chart.
        browser.click(row)
        browser.wait_for(f"{rows}.length === 6", 30, what="leaderboard of the trained task")
        shot = browser.screenshot(tmp_path / "dashboard.png")
        print(f"dashboard screenshot: {shot}")
        assert shot.stat().st_size > 10_000

        # The node goes away: the page says so instead of showing stale figures as live.
        a.stop()
        browser.wait_for(f"{text_of('#conn')}.startsWith('node unreachable')", 30)
    finally:
        browser.close()

    assert browser.exceptions == [], browser.exceptions
    # The only console errors allowed are the two refused actions above (HTTP 401)
    # and the failed fetches after node 0 stopped.
    expected = ("401", "ERR_CONNECTION_REFUSED")
    unexpected = [e for e in browser.console_errors if not any(x in e for x in expected)]
    assert unexpected == [], browser.console_errors
    outside = [u for u in browser.requests if not u.startswith(base + "/")]
    assert outside == [], outside
    assert any(u.endswith("/static/dashboard.js") for u in browser.requests)
    assert browser.guard.violations == [], browser.guard.violations
    assert browser.guard.samples > 10 and browser.guard.sockets_seen > 0
