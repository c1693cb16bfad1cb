// The Strata web console: one page over the REST API, no framework, nothing fetched from
// elsewhere. Views are chosen by the URL's hash:
//   #/                      databases (create, drop)
//   #/db/NAME               a database: tables, KV, queue, query
//   #/db/NAME/table/T       a table: schema and rows, page by page
//   #/query                 the query editor (one database, or across all of them)
//   #/metrics               live figures from /metrics
// A server with an access token answers 401 until the token is given; it is kept in this
// tab's sessionStorage and sent as a bearer token.
"use strict";

const PAGE = 50;
const main = document.getElementById("main");
let token = sessionStorage.getItem("strata-token") || "";
let timer = null;

// ---- DOM helpers (text always goes in as text, never as markup) ----

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v !== false && v != null) el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function show(...nodes) {
  main.replaceChildren(...nodes);
}

function errorBox(e) {
  return h("p", { class: "error", role: "alert" }, e.message || String(e));
}

// Path segments: a nested database name keeps its slashes.
function dbPath(name) {
  return name.split("/").map(encodeURIComponent).join("/");
}

// ---- the API ----

class ApiError extends Error {
  constructor(status, message, retryable) {
    super(`${message} (HTTP ${status})`);
    this.status = status;
    this.retryable = retryable;
  }
}

async function api(method, path, body) {
  const headers = {};
  if (token) headers["Authorization"] = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (path === "/metrics" && res.ok) return res.text();
  let data = null;
  try {
    data = await res.json();
  } catch (_) {
    data = null;
  }
  if (res.status === 401) {
    askToken(data && data.error);
  }
  if (!res.ok) {
    throw new ApiError(res.status, (data && data.error) || res.statusText, data && data.retryable);
  }
  return data;
}

function askToken(why) {
  const modal = document.getElementById("login");
  document.getElementById("login-error").textContent = token && why ? why : "";
  modal.hidden = false;
  document.getElementById("token").focus();
}

document.getElementById("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = document.getElementById("token").value.trim();
  sessionStorage.setItem("strata-token", token);
  document.getElementById("login").hidden = true;
  route();
});

document.getElementById("signout").addEventListener("click", () => {
  token = "";
  sessionStorage.removeItem("strata-token");
  route();
});

// Statements that return rows go to query/oltp (or /query across databases), the others to
// execute: the API keeps reads and writes apart.
function isRead(sql) {
  const first = sql.trim().replace(/^(--[^\n]*\n|\/\*[\s\S]*?\*\/|\s)+/, "").split(/[\s(;]/)[0];
  return ["SELECT", "WITH", "VALUES", "TABLE", "SHOW", "EXPLAIN"].includes(first.toUpperCase());
}

// ---- rendering results ----

function resultTable(result) {
  if (!result.columns.length) return h("p", { class: "muted" }, "No rows.");
  const head = h("tr", {}, result.columns.map((c) => h("th", { title: c.type }, c.name)));
  const rows = result.rows.map((r) =>
    h("tr", {}, r.map((v) =>
      v === null
        ? h("td", { class: "null" }, "NULL")
        : h("td", {}, typeof v === "object" ? JSON.stringify(v) : String(v)))),
  );
  return h("table", { class: "grid" }, h("thead", {}, head), h("tbody", {}, rows));
}

function planBlock(result) {
  const planCol = result.columns.findIndex((c) => c.name === "plan");
  const typeCol = result.columns.findIndex((c) => c.name === "plan_type");
  if (planCol < 0) return resultTable(result);
  const text = result.rows
    .map((r) => (typeCol >= 0 ? `${r[typeCol]}:\n` : "") + r[planCol])
    .join("\n\n");
  return h("pre", { class: "plan" }, text);
}

// ---- views ----

async function databasesView() {
  const list = await api("GET", "/db");
  const name = h("input", { id: "new-db", placeholder: "new database (e.g. app or team/app)", size: 34 });
  const message = h("p", { class: "error" });
  const create = h("form", {
    class: "row",
    onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        await api("POST", "/db", { name: name.value.trim() });
        location.hash = `#/db/${dbPath(name.value.trim())}`;
      } catch (e) {
        message.textContent = e.message;
      }
    },
  }, name, h("button", { type: "submit" }, "Create database"));
  const rows = list.map((db) =>
    h("tr", {},
      h("td", {}, h("a", { href: `#/db/${dbPath(db)}` }, db)),
      h("td", {}, h("button", {
        class: "danger",
        "data-drop": db,
        onclick: async () => {
          if (!confirm(`Drop database ${db} and everything in it?`)) return;
          try {
            await api("DELETE", `/db/${dbPath(db)}`);
            route();
          } catch (e) {
            message.textContent = e.message;
          }
        },
      }, "Drop"))));
  show(
    h("h1", {}, "Databases"),
    h("div", { class: "card" }, create, message),
    list.length
      ? h("table", { class: "grid", id: "databases" },
        h("thead", {}, h("tr", {}, h("th", {}, "name"), h("th", {}, ""))),
        h("tbody", {}, rows))
      : h("p", { class: "muted" }, "No databases yet."),
  );
}

function dbTabs(db, active) {
  const tab = (id, label, href) =>
    h("a", { href, class: id === active ? "active" : "", "data-tab": id }, label);
  const base = `#/db/${dbPath(db)}`;
  return h("div", { class: "tabs" },
    tab("tables", "Tables", base),
    tab("kv", "KV", `${base}/kv`),
    tab("queue", "Queue", `${base}/queue`),
    tab("query", "Query", `#/query?db=${encodeURIComponent(db)}`));
}

async function tablesView(db) {
  const tables = await api("GET", `/db/${dbPath(db)}/tables`);
  show(
    h("h1", {}, db),
    dbTabs(db, "tables"),
    tables.length
      ? h("table", { class: "grid", id: "tables" },
        h("thead", {}, h("tr", {}, h("th", {}, "table"))),
        h("tbody", {}, tables.map((t) =>
          h("tr", {}, h("td", {}, h("a", { href: `#/db/${dbPath(db)}/table/${encodeURIComponent(t)}` }, t))))))
      : h("p", { class: "muted" }, "No tables yet: create one in the Query tab."),
  );
}

async function tableView(db, table, offset) {
  const schema = await api("GET", `/db/${dbPath(db)}/schema/${encodeURIComponent(table)}`);
  const quoted = `"${table.replace(/"/g, '""')}"`;
  const rows = await api("POST", `/db/${dbPath(db)}/query/oltp`, {
    sql: `SELECT * FROM ${quoted} LIMIT ${PAGE + 1} OFFSET ${offset}`,
  });
  const more = rows.rows.length > PAGE;
  rows.rows = rows.rows.slice(0, PAGE);
  const pageLink = (to, label) =>
    h("a", { href: `#/db/${dbPath(db)}/table/${encodeURIComponent(table)}?offset=${to}` }, label);
  show(
    h("h1", {}, `${db} / ${table}`),
    dbTabs(db, "tables"),
    h("h2", {}, "Columns"),
    resultTable(schema),
    h("h2", {}, `Rows ${rows.rows.length ? offset + 1 : 0}–${offset + rows.rows.length}`),
    h("div", { id: "rows" }, resultTable(rows)),
    h("p", { class: "row" },
      offset > 0 ? pageLink(Math.max(0, offset - PAGE), "← previous") : null,
      more ? pageLink(offset + PAGE, "next →") : null),
  );
}

async function kvView(db, prefix, cursor) {
  const q = new URLSearchParams({ limit: String(PAGE) });
  if (prefix) q.set("prefix", prefix);
  if (cursor) q.set("cursor", cursor);
  const page = await api("GET", `/db/${dbPath(db)}/kv?${q}`);
  const input = h("input", { id: "kv-prefix", value: prefix || "", placeholder: "key prefix", size: 30 });
  const form = h("form", {
    class: "row",
    onsubmit: (ev) => {
      ev.preventDefault();
      location.hash = `#/db/${dbPath(db)}/kv?prefix=${encodeURIComponent(input.value)}`;
    },
  }, input, h("button", { type: "submit" }, "List"));
  const rows = page.entries.map((e) =>
    h("tr", {},
      h("td", {}, e.key),
      h("td", {}, typeof e.value === "string" ? e.value : JSON.stringify(e.value)),
      h("td", {}, e.encoding),
      h("td", {}, e.versionstamp),
      h("td", {}, e.expires_at ? new Date(e.expires_at).toISOString() : "")));
  show(
    h("h1", {}, db),
    dbTabs(db, "kv"),
    h("div", { class: "card" }, form),
    page.entries.length
      ? h("table", { class: "grid", id: "kv" },
        h("thead", {}, h("tr", {}, ["key", "value", "encoding", "versionstamp", "expires"].map((c) => h("th", {}, c)))),
        h("tbody", {}, rows))
      : h("p", { class: "muted" }, "No keys."),
    page.next
      ? h("p", {}, h("a", {
        href: `#/db/${dbPath(db)}/kv?prefix=${encodeURIComponent(prefix || "")}&cursor=${encodeURIComponent(page.next)}`,
      }, "next →"))
      : null,
  );
}

function messagesTable(id, messages, whenLabel) {
  if (!messages.length) return h("p", { class: "muted" }, "None.");
  return h("table", { class: "grid", id },
    h("thead", {}, h("tr", {}, ["id", whenLabel, "attempts", "state", "payload", "dead-letter keys"].map((c) => h("th", {}, c)))),
    h("tbody", {}, messages.map((m) =>
      h("tr", {},
        h("td", {}, m.id),
        h("td", {}, new Date(m.ready_at).toISOString()),
        h("td", {}, String(m.attempts)),
        h("td", {}, m.state),
        h("td", { title: m.encoding }, typeof m.payload === "string" ? m.payload : JSON.stringify(m.payload)),
        h("td", {}, m.dead_letter_keys.join(", "))))));
}

async function queueView(db) {
  const q = await api("GET", `/db/${dbPath(db)}/queue`);
  show(
    h("h1", {}, db),
    dbTabs(db, "queue"),
    h("div", { class: "figures" },
      figure("queue-depth", "messages waiting or leased", q.depth),
      figure("dead-letter-count", "dead letters", q.dead_letter_count)),
    h("h2", {}, "Messages"),
    messagesTable("messages", q.messages, "ready at"),
    h("h2", {}, "Dead letters (newest first)"),
    messagesTable("dead-letters", q.dead_letters, "given up at"),
  );
}

async function queryView(params) {
  const dbs = await api("GET", "/db");
  const chosen = params.get("db") || dbs[0] || "";
  const select = h("select", { id: "query-db" },
    dbs.map((d) => h("option", { value: d, selected: d === chosen }, d)),
    h("option", { value: "" }, "all databases (db.public.table)"));
  const sql = h("textarea", { id: "sql", spellcheck: "false", placeholder: "SELECT …" },
    sessionStorage.getItem("strata-sql") || "");
  const out = h("div", { id: "result" });
  const run = async (explain) => {
    const text = sql.value.trim();
    sessionStorage.setItem("strata-sql", sql.value);
    if (!text) return;
    const db = select.value;
    const started = performance.now();
    out.replaceChildren(h("p", { class: "muted" }, "Running…"));
    try {
      let node;
      if (explain || isRead(text)) {
        const stmt = explain && !/^\s*explain\b/i.test(text) ? `EXPLAIN ${text}` : text;
        const result = db
          ? await api("POST", `/db/${dbPath(db)}/query/oltp`, { sql: stmt })
          : await api("POST", "/query", { sql: stmt });
        node = /^\s*explain\b/i.test(stmt) ? planBlock(result) : resultTable(result);
        const n = result.rows.length;
        out.replaceChildren(node, h("p", { class: "muted" }, `${n} row${n === 1 ? "" : "s"} · ${(performance.now() - started).toFixed(1)} ms`));
      } else {
        if (!db) throw new Error("choose a database to write to");
        const done = await api("POST", `/db/${dbPath(db)}/execute`, { sql: text });
        out.replaceChildren(h("p", { class: "ok", id: "affected" },
          `${done.affected} row${done.affected === 1 ? "" : "s"} affected` +
          (done.version != null ? ` · committed at version ${done.version}` : "") +
          ` · ${(performance.now() - started).toFixed(1)} ms`));
      }
    } catch (e) {
      out.replaceChildren(errorBox(e));
    }
  };
  sql.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      run(false);
    }
  });
  show(
    h("h1", {}, "Query"),
    h("div", { class: "card" },
      h("div", { class: "row" }, h("label", { for: "query-db" }, "Database"), select),
      h("p", {}, sql),
      h("div", { class: "row" },
        h("button", { id: "run", onclick: () => run(false) }, "Run"),
        h("button", { id: "explain", class: "secondary", onclick: () => run(true) }, "Explain"),
        h("span", { class: "muted" }, "Ctrl+Enter runs; one statement at a time"))),
    out,
  );
}

// ---- metrics ----

function figure(id, label, value) {
  return h("div", { class: "figure" },
    h("div", { class: "value", id }, String(value)),
    h("div", { class: "label" }, label));
}

// Prometheus text: name{labels} value, one sample per line.
function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const l of (m[3] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    samples.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return samples;
}

function sum(samples, name, filter) {
  return samples
    .filter((s) => s.name === name && (!filter || filter(s.labels)))
    .reduce((a, s) => a + s.value, 0);
}

// A latency quantile from the change in the cumulative histogram buckets since last time.
function quantile(prev, now, q) {
  const buckets = new Map();
  for (const s of now) {
    if (s.name !== "strata_http_request_duration_seconds_bucket") continue;
    buckets.set(s.labels.le, (buckets.get(s.labels.le) || 0) + s.value);
  }
  for (const s of prev) {
    if (s.name !== "strata_http_request_duration_seconds_bucket") continue;
    buckets.set(s.labels.le, (buckets.get(s.labels.le) || 0) - s.value);
  }
  const sorted = [...buckets.entries()]
    .map(([le, n]) => [le === "+Inf" ? Infinity : Number(le), n])
    .sort((a, b) => a[0] - b[0]);
  const total = sorted.length ? sorted[sorted.length - 1][1] : 0;
  if (!total) return null;
  for (const [le, n] of sorted) if (n >= q * total) return le;
  return null;
}

function ms(seconds) {
  if (seconds == null) return "–";
  if (seconds === Infinity) return "> 13 s";
  return seconds < 0.001 ? `≤ ${(seconds * 1000).toFixed(2)} ms` : `≤ ${(seconds * 1000).toFixed(1)} ms`;
}

async function metricsView() {
  const canvas = h("canvas", { id: "rate", width: 900, height: 120 });
  const panel = h("div", { id: "figures", class: "figures" });
  const perDb = h("div", { id: "per-database" });
  const failure = h("div");
  show(
    h("h1", {}, "Metrics"),
    h("p", { class: "muted" }, "From /metrics, every 2 seconds."),
    panel,
    h("h2", {}, "Requests per second"),
    canvas,
    h("h2", {}, "Databases"),
    perDb,
    failure,
  );
  const history = [];
  let prev = null;
  let prevAt = 0;
  const tick = async () => {
    let samples;
    try {
      samples = parseMetrics(await api("GET", "/metrics"));
      failure.replaceChildren();
    } catch (e) {
      failure.replaceChildren(errorBox(e));
      return;
    }
    const now = performance.now();
    const requests = sum(samples, "strata_http_requests_total");
    const errors = sum(samples, "strata_http_requests_total", (l) => Number(l.status) >= 500);
    let rate = 0;
    if (prev) rate = (requests - sum(prev, "strata_http_requests_total")) / ((now - prevAt) / 1000);
    history.push(Math.max(0, rate));
    if (history.length > 90) history.shift();
    panel.replaceChildren(
      figure("m-requests", "HTTP requests", requests),
      figure("m-rate", "requests/s", rate.toFixed(1)),
      figure("m-p50", "p50 latency (last 2 s)", prev ? ms(quantile(prev, samples, 0.5)) : "–"),
      figure("m-p99", "p99 latency (last 2 s)", prev ? ms(quantile(prev, samples, 0.99)) : "–"),
      figure("m-5xx", "5xx answers", errors),
      figure("m-commits", "commits", sum(samples, "strata_commits_total")),
      figure("m-conflicts", "conflicts", sum(samples, "strata_conflicts_total")),
      figure("m-queue", "queue depth", sum(samples, "strata_queue_depth")),
      figure("m-dead", "dead letters", sum(samples, "strata_queue_dead_letters")),
      figure("m-tx", "open HTTP transactions", sum(samples, "strata_http_open_transactions")),
    );
    const dbs = [...new Set(samples.filter((s) => s.name === "strata_version").map((s) => s.labels.database))].sort();
    const of = (name, db) => sum(samples, name, (l) => l.database === db);
    perDb.replaceChildren(dbs.length
      ? h("table", { class: "grid" },
        h("thead", {}, h("tr", {}, ["database", "commits", "conflicts", "commit groups", "queue depth", "dead letters", "version"].map((c) => h("th", {}, c)))),
        h("tbody", {}, dbs.map((db) => h("tr", {},
          h("td", {}, db),
          ["strata_commits_total", "strata_conflicts_total", "strata_commit_groups_total", "strata_queue_depth", "strata_queue_dead_letters", "strata_version"]
            .map((n) => h("td", {}, String(of(n, db))))))))
      : h("p", { class: "muted" }, "No database is open yet."));
    drawRate(canvas, history);
    prev = samples;
    prevAt = now;
  };
  await tick();
  timer = setInterval(tick, 2000);
}

function drawRate(canvas, history) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width;
  const ht = canvas.height;
  ctx.clearRect(0, 0, w, ht);
  const max = Math.max(1, ...history);
  ctx.strokeStyle = "#2856c8";
  ctx.lineWidth = 2;
  ctx.beginPath();
  history.forEach((v, i) => {
    const x = (i / 89) * (w - 10) + 5;
    const y = ht - 8 - (v / max) * (ht - 24);
    if (i === 0) ctx.moveTo(x, y);
    else ctx.lineTo(x, y);
  });
  ctx.stroke();
  ctx.fillStyle = "#6b7385";
  ctx.font = "12px system-ui, sans-serif";
  ctx.fillText(`max ${max.toFixed(1)}/s`, 8, 14);
}

// ---- routing ----

async function route() {
  if (timer) {
    clearInterval(timer);
    timer = null;
  }
  document.getElementById("signout").hidden = !token;
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const section = parts[0] === "query" ? "query" : parts[0] === "metrics" ? "metrics" : "databases";
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.nav === section);
  }
  try {
    if (parts[0] === "query") return await queryView(params);
    if (parts[0] === "metrics") return await metricsView();
    if (parts[0] === "db" && parts.length > 1) {
      // The database name may itself hold slashes: the view's keyword is found from the end.
      const rest = parts.slice(1);
      const t = rest.lastIndexOf("table");
      if (t > 0 && t === rest.length - 2) {
        return await tableView(rest.slice(0, t).join("/"), rest[t + 1], Number(params.get("offset")) || 0);
      }
      const last = rest[rest.length - 1];
      if (rest.length > 1 && last === "kv") return await kvView(rest.slice(0, -1).join("/"), params.get("prefix"), params.get("cursor"));
      if (rest.length > 1 && last === "queue") return await queueView(rest.slice(0, -1).join("/"));
      return await tablesView(rest.join("/"));
    }
    return await databasesView();
  } catch (e) {
    show(errorBox(e));
  }
}

async function health() {
  try {
    const res = await fetch("/health");
    const body = await res.json();
    document.getElementById("health").textContent = `server ${body.status}`;
  } catch (_) {
    document.getElementById("health").textContent = "server unreachable";
  }
}

window.addEventListener("hashchange", route);
health();
setInterval(health, 10000);
route();
