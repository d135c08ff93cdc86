// p2pml dashboard: polls this node's JSON API and renders it. Plain DOM
// (textContent only: task fields and ids come from peers and are never
// parsed as HTML), charts as inline SVG. No dependencies.
"use strict";

const REFRESH_MS = (() => {
  const asked = Number(new URLSearchParams(location.search).get("refresh"));
  return asked >= 200 && asked <= 60000 ? asked : 2000;
})();
const BLOCKS_SHOWN = 12;
const DIRECTIONS = JSON.parse(document.getElementById("metric-directions").textContent);
const SVG_NS = "http://www.w3.org/2000/svg";
const TOKEN_KEY = "p2pml-admin-token";
const blockCache = new Map(); // hash -> summary of the block's transactions (blocks never change)
let selectedTask = null;
let lastTaskIds = "";
let refreshing = false;
let again = false;

// -- small helpers ---------------------------------------------------------------

function $(id) {
  return document.getElementById(id);
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function short(hex, n = 10) {
  return typeof hex === "string" && hex.length > n + 2 ? hex.slice(0, n) + "…" : String(hex ?? "");
}

function fmtMetric(v) {
  return typeof v === "number" ? v.toFixed(4) : "–";
}

function fmtAge(seconds) {
  if (seconds < 0) return "in " + fmtAge(-seconds).replace(" ago", "");
  if (seconds < 60) return Math.round(seconds) + " s ago";
  if (seconds < 3600) return Math.round(seconds / 60) + " min ago";
  if (seconds < 86400) return (seconds / 3600).toFixed(1) + " h ago";
  return (seconds / 86400).toFixed(1) + " d ago";
}

function fmtBytes(n) {
  return n < 1024 ? n + " B" : (n / 1024).toFixed(1) + " KiB";
}

function higherIsBetter(metric) {
  return DIRECTIONS[metric] !== false;
}

function row(cells, attrs) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = c instanceof Node ? wrapTd(c) : el("td", c);
    tr.appendChild(td);
  }
  for (const [k, v] of Object.entries(attrs || {})) tr.setAttribute(k, v);
  return tr;
}

function wrapTd(node) {
  if (node.tagName === "TD") return node;
  const td = document.createElement("td");
  td.appendChild(node);
  return td;
}

function fill(tableId, rows) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren(...rows);
}

async function getJson(path) {
  const resp = await fetch(path, { headers: { Accept: "application/json" } });
  if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status}`);
  return resp.json();
}

async function getText(path) {
  const resp = await fetch(path);
  if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status}`);
  return resp.text();
}

function prometheusValue(text, name) {
  for (const line of text.split("\n")) {
    if (line.startsWith(name + " ")) return Number(line.slice(name.length + 1));
  }
  return null;
}

// -- rendering -------------------------------------------------------------------

function renderStatus(st, metricsText) {
  $("network").textContent = st.network;
  $("height").textContent = st.height;
  $("tip").textContent = short(st.tip, 16);
  $("tip").title = st.tip;
  $("peer-count").textContent = st.peers;
  $("mempool-count").textContent = st.mempool;
  $("uptime").textContent = fmtAge(st.uptime).replace(" ago", "");
  $("peer-id").textContent = st.peer_id;
  const m = st.mining || {};
  $("mining").textContent = m.enabled
    ? `on, ${m.workers} worker(s), ${m.hash_rate} H/s, ${m.blocks_found} block(s) found`
    : `off (${m.blocks_found ?? 0} block(s) found on request)`;
  const t = st.training || {};
  $("training").textContent = t.enabled
    ? `on, ${t.workers} worker(s), ${t.running_jobs} running, ${t.jobs_done} done, ${t.jobs_failed} failed`
    : "off";
  const v = st.verification || {};
  $("verification").textContent =
    `${v.verified ?? 0} result(s) verified, ${v.failed ?? 0} false, ` +
    `${v.blocks_waiting_for_data ?? 0} block(s) waiting for data`;
  const ipfs = st.ipfs || {};
  $("ipfs").textContent = `${ipfs.mode} (${ipfs.state})`;
  const reorgs = prometheusValue(metricsText, "p2pml_reorgs_total");
  const depth = prometheusValue(metricsText, "p2pml_max_reorg_depth");
  $("reorgs").textContent = reorgs === null ? "–" : `${reorgs} (deepest ${depth})`;
}

function blockSummary(block) {
  const s = { txs: block.txs.length, tasks: 0, results: 0, miner: null, size: block.size };
  for (const tx of block.txs) {
    if (tx.type === "coinbase") s.miner = tx.miner;
    else if (tx.type === "tasktx") s.tasks += 1;
    else if (tx.type === "resulttx") s.results += 1;
  }
  return s;
}

async function renderBlocks(headers) {
  const now = Date.now() / 1000;
  const missing = headers.filter((h) => !blockCache.has(h.hash));
  const fetched = await Promise.all(missing.map((h) => getJson("/blocks/" + h.hash)));
  fetched.forEach((b) => blockCache.set(b.header.hash, blockSummary(b)));
  fill(
    "blocks",
    headers.map((h) => {
      const s = blockCache.get(h.hash);
      return row(
        [h.height, short(h.hash, 16), fmtAge(now - h.time), short(s.miner, 12), s.txs, s.tasks,
          s.results, fmtBytes(s.size)],
        { "data-height": h.height, "data-hash": h.hash },
      );
    }),
  );
  if (blockCache.size > 500) blockCache.clear();
}

function renderTips(tips) {
  fill(
    "tips",
    tips.map((t) =>
      row([t.height, short(t.hash, 16), t.status], { "data-status": t.status, class: t.status }),
    ),
  );
}

function renderPeers(peers) {
  const now = Date.now() / 1000;
  fill(
    "peers",
    peers.map((p) =>
      row([short(p.peer_id, 10), p.direction, p.height ?? "–", p.score ?? "–",
        p.connected_since ? fmtAge(now - p.connected_since) : "–"]),
    ),
  );
}

function renderMempool(txs) {
  fill("mempool", txs.map((t) => row([short(t.id, 14), t.type, t.fee, short(t.task ?? "", 12)])));
}

function renderTasks(tasks) {
  $("tasks-empty").hidden = tasks.length > 0;
  fill(
    "tasks",
    tasks.map((t) => {
      const best = el("td", fmtMetric(t.best), "best");
      if (typeof t.best === "number") best.dataset.value = String(t.best);
      const tr = row(
        [short(t.id, 12), t.status, t.model, `${t.metric} (${higherIsBetter(t.metric) ? "↑" : "↓"})`,
          t.rounds, t.results, best, t.bounty, t.height ?? "–"],
        { "data-task-id": t.id, class: "clickable" + (t.id === selectedTask ? " selected" : "") },
      );
      tr.title = t.id;
      tr.addEventListener("click", () => selectTask(t.id));
      return tr;
    }),
  );
  // Follow the newest task until the user picks one.
  const ids = tasks.map((t) => t.id).join(",");
  if (ids !== lastTaskIds) {
    lastTaskIds = ids;
    if (!selectedTask && tasks.length) selectedTask = tasks[0].id;
  }
}

function selectTask(id) {
  selectedTask = id;
  for (const tr of $("tasks").tBodies[0].rows) {
    tr.classList.toggle("selected", tr.dataset.taskId === id);
  }
  // Nothing of the previous task stays on screen while this one loads.
  $("task-id").textContent = short(id, 16);
  $("task-id").title = id;
  for (const part of ["task-status", "task-summary", "chart-caption"]) $(part).textContent = "";
  $("chart").replaceChildren();
  $("chart-legend").replaceChildren();
  fill("leaderboard", []);
  refresh();
}

function renderTask(task) {
  if (task.id !== selectedTask) return; // fetched before the user picked another
  $("task-detail").hidden = false;
  $("task-id").textContent = short(task.id, 16);
  $("task-id").title = task.id;
  $("task-status").textContent = task.status;
  const spec = task.spec || {};
  const metric = spec.metric;
  const up = higherIsBetter(metric);
  $("task-summary").textContent =
    `${spec.model} (${spec.kind}) on ${spec.dataset_cid}, target ${spec.target}; ` +
    `${metric} ${up ? "higher" : "lower"} is better; ${spec.rounds} round(s); ` +
    `bounty ${task.bounty}` + (task.best ? `; best ${fmtMetric(task.best.metric)}` : "");

  const reward = new Map();
  for (const p of task.payout || []) reward.set(p.to, (reward.get(p.to) || 0) + p.amount);
  const ranked = [...(task.results || [])].sort((a, b) =>
    up ? b.metric - a.metric : a.metric - b.metric,
  );
  const bestId = task.best ? task.best.result : null;
  const rewarded = new Set();
  fill(
    "leaderboard",
    ranked.map((r, i) => {
      const claimed = el("td", fmtMetric(r.metric), "metric");
      claimed.dataset.value = String(r.metric);
      // Every result's metric is recomputed on the holdout (the cheap checks);
      // a result is re-trained (audited) only when disputed, and void if that
      // audit failed (docs/consensus.md "Disputes").
      const verdicts = { ok: "metric checked", disputed: "disputed", void: "void" };
      const audit =
        r.status !== "confirmed"
          ? "metric checked, pending"
          : `${verdicts[r.verdict] || r.verdict}, block ${r.height}`;
      // The payout is per trainer key: show it once, on the trainer's best row.
      const pay = el("td", "–", "reward");
      if (reward.has(r.trainer) && !rewarded.has(r.trainer)) {
        pay.textContent = pay.dataset.amount = String(reward.get(r.trainer));
        rewarded.add(r.trainer);
      }
      const tr = row([i + 1, short(r.trainer, 12), r.round, claimed, audit, pay], {
        "data-result-id": r.id,
        "data-trainer": r.trainer,
        class: r.id === bestId ? "best-row" : "",
      });
      tr.title = r.trainer;
      return tr;
    }),
  );
  const failures = task.failures || [];
  $("failures-title").hidden = failures.length === 0;
  $("failures").replaceChildren(
    ...failures.map((f) => el("li", `round ${f.round}: ${f.reason} — ${f.detail}`)),
  );
  renderChart(task.results || [], metric, up);
}

// The metric per round: every result as a dot, the best so far as a line.
function renderChart(results, metric, up) {
  const W = 460, H = 240, L = 58, R = 14, T = 14, B = 34;
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("width", W);
  svg.setAttribute("height", H);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${metric} per round`);
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.appendChild(e);
    return e;
  };
  add("rect", { x: L, y: T, width: W - L - R, height: H - T - B, class: "plot" });
  $("chart-caption").textContent = results.length
    ? `${metric} per round (${results.length} result(s)); line: best so far`
    : "no results yet";
  if (results.length) {
    const rounds = results.map((r) => r.round);
    const values = results.map((r) => r.metric);
    const r0 = Math.min(...rounds), r1 = Math.max(...rounds);
    let v0 = Math.min(...values), v1 = Math.max(...values);
    if (v0 === v1) { v0 -= Math.abs(v0) * 0.05 || 0.5; v1 += Math.abs(v1) * 0.05 || 0.5; }
    const pad = (v1 - v0) * 0.08;
    v0 -= pad; v1 += pad;
    const x = (r) => (r1 === r0 ? (L + W - R) / 2 : L + ((r - r0) / (r1 - r0)) * (W - L - R - 20) + 10);
    const y = (v) => T + (1 - (v - v0) / (v1 - v0)) * (H - T - B);
    for (const v of [v0 + pad, (v0 + v1) / 2, v1 - pad]) {
      add("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" });
      add("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", class: "tick" }, v.toPrecision(4));
    }
    for (let r = r0; r <= r1; r++) {
      add("text", { x: x(r), y: H - B + 16, "text-anchor": "middle", class: "tick" }, String(r));
    }
    add("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle", class: "axis" }, "round");
    const pick = up ? Math.max : Math.min;
    const points = [];
    let best = null;
    for (let r = r0; r <= r1; r++) {
      const here = values.filter((_, i) => rounds[i] === r);
      if (here.length) best = best === null ? pick(...here) : pick(best, ...here);
      if (best !== null) points.push(`${x(r)},${y(best)}`);
    }
    add("polyline", { points: points.join(" "), class: "best-line" });
    const trainers = [...new Set(results.map((r) => r.trainer))];
    results.forEach((r) => {
      const c = add("circle", {
        cx: x(r.round), cy: y(r.metric), r: 4.5,
        class: "dot c" + (trainers.indexOf(r.trainer) % 6),
        "data-result-id": r.id,
      });
      const t = document.createElementNS(SVG_NS, "title");
      t.textContent = `round ${r.round}, ${short(r.trainer, 12)}: ${r.metric}`;
      c.appendChild(t);
    });
  }
  $("chart").replaceChildren(svg);
  const trainers = [...new Set(results.map((r) => r.trainer))];
  $("chart-legend").replaceChildren(
    ...trainers.map((t, i) => {
      const item = el("span", short(t, 12), "legend-item");
      item.prepend(el("span", null, "swatch c" + (i % 6)));
      item.title = t;
      return item;
    }),
  );
}

// -- refresh loop ----------------------------------------------------------------

async function refresh() {
  if (refreshing) {
    again = true; // asked for while one runs: run once more right after it
    return;
  }
  refreshing = true;
  again = false;
  try {
    const [st, chain, tips, peers, mempool, tasks, metricsText] = await Promise.all([
      getJson("/status"),
      getJson(`/chain?limit=${BLOCKS_SHOWN}`),
      getJson("/chain/tips"),
      getJson("/peers"),
      getJson("/mempool"),
      getJson("/tasks"),
      getText("/metrics"),
    ]);
    renderStatus(st, metricsText);
    renderTips(tips);
    renderPeers(peers);
    renderMempool(mempool);
    renderTasks(tasks);
    await renderBlocks(chain);
    if (selectedTask) renderTask(await getJson("/tasks/" + selectedTask));
    $("conn").textContent = "live";
    $("conn").className = "conn ok";
    $("last-update").textContent = new Date().toLocaleTimeString();
    document.body.dataset.height = st.height;
  } catch (err) {
    $("conn").textContent = "node unreachable: " + err.message;
    $("conn").className = "conn bad";
  } finally {
    refreshing = false;
  }
  if (again) await refresh();
}

function loop() {
  refresh().finally(() => setTimeout(loop, REFRESH_MS));
}

// -- actions (token only here, only for state-changing requests) ------------------

function token() {
  return $("token").value.trim();
}

function say(text, ok) {
  const s = $("action-status");
  delete s.dataset.taskId;
  s.textContent = text;
  s.className = "status " + (ok ? "ok" : "bad");
}

async function send(method, path, body) {
  if (!token()) {
    say("enter the admin token first (the file admin.token in the node's data dir)", false);
    $("token").focus();
    return null;
  }
  sessionStorage.setItem(TOKEN_KEY, token());
  const resp = await fetch(path, {
    method,
    headers: { Authorization: "Bearer " + token(), "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  let data = null;
  try {
    data = await resp.json();
  } catch (_) {
    data = { error: `HTTP ${resp.status}`, reason: "" };
  }
  if (!resp.ok) {
    say(`refused: ${data.error} (${data.reason})`, false);
    return null;
  }
  return data;
}

async function mineOne() {
  const got = await send("POST", "/mine", { blocks: 1 });
  if (got) {
    say(`mined 1 block: ${short(got.hashes[0], 16)}`, true);
    refresh();
  }
}

async function publishTask() {
  let body;
  try {
    body = JSON.parse($("task-json").value);
  } catch (err) {
    say("the task is not valid JSON: " + err.message, false);
    return;
  }
  const got = await send("POST", "/tasks", body);
  if (got) {
    say(`published task ${short(got.id, 16)}`, true);
    $("action-status").dataset.taskId = got.id;
    selectTask(got.id);
  }
}

const TASK_TEMPLATE = {
  dataset_cid: "Qm… (from p2pml dataset add)",
  target: "target",
  model: "ridge",
  kind: "regression",
  metric: "r2",
  params: { alpha: 1.0 },
  rounds: 2,
  bounty: 100000,
  fee: 1000,
};

document.addEventListener("DOMContentLoaded", () => {
  $("interval").textContent = (REFRESH_MS / 1000).toString();
  $("token").value = sessionStorage.getItem(TOKEN_KEY) || "";
  $("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $("token").value = "";
    say("token forgotten", true);
  });
  $("token-form").addEventListener("submit", (ev) => ev.preventDefault()); // Enter in the field
  $("mine-button").addEventListener("click", mineOne);
  $("publish-button").addEventListener("click", publishTask);
  $("task-json").value = JSON.stringify(TASK_TEMPLATE, null, 2);
  loop();
});
