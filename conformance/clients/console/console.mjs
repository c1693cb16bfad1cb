// The web console in a real browser (Debian's Chromium driven by playwright-core): sign in,
// create a database, create a table, insert, query, explain, browse the table page by page,
// browse KV by prefix, look at a queue with a dead letter, watch the metrics, drop a
// database. Screenshots are kept in STRATA_ARTIFACTS.
//
// Environment: STRATA_REST_URL, STRATA_KV_URL, STRATA_TOKEN, STRATA_ARTIFACTS,
// CHROMIUM (default /usr/bin/chromium).
import { chromium } from "playwright-core";
import { openKv } from "@deno/kv";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const rest = process.env.STRATA_REST_URL;
const kvUrl = process.env.STRATA_KV_URL;
const token = process.env.STRATA_TOKEN;
const artifacts = process.env.STRATA_ARTIFACTS;
assert.ok(rest && kvUrl && token && artifacts, "STRATA_REST_URL, STRATA_KV_URL, STRATA_TOKEN and STRATA_ARTIFACTS are needed");
mkdirSync(artifacts, { recursive: true });

const auth = { Authorization: `Bearer ${token}`, "Content-Type": "application/json" };
const step = (what) => console.log(`step: ${what}`);

// Chromium hangs under libfaketime (used to run the suites at another date); the page takes
// every time it shows from the server, so the browser runs on the real clock.
const browserEnv = { ...process.env };
for (const name of ["LD_PRELOAD", "FAKETIME", "FAKETIME_DONT_FAKE_MONOTONIC"]) delete browserEnv[name];
const browser = await chromium.launch({
  env: browserEnv,
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(15000);
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    // The browser logs every 4xx answer (a 401 before signing in, the 400 of the bad query
    // below): those are the API's answers. Anything else the page logs is a problem.
    const expected = /Failed to load resource: the server responded with a status of 4\d\d/;
    if (m.type() === "error" && !expected.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  page.on("request", (r) => {
    if (!r.url().startsWith(rest)) problems.push(`request outside the server: ${r.url()}`);
  });

  step("the console asks for the token, refuses a wrong one, accepts the right one");
  await page.goto(`${rest}/ui`);
  await page.locator("#login").waitFor({ state: "visible" });
  await page.fill("#token", "not-the-token-at-all");
  await page.click("#login-form button[type=submit]");
  await page.locator("#login-error", { hasText: "invalid access token" }).waitFor();
  await page.fill("#token", token);
  await page.click("#login-form button[type=submit]");
  await page.locator("#login").waitFor({ state: "hidden" });
  await page.locator("h1", { hasText: "Databases" }).waitFor();

  step("create a database (a nested name) from the dashboard");
  await page.fill("#new-db", "team/shop");
  await page.click("text=Create database");
  await page.locator("h1", { hasText: "team/shop" }).waitFor();
  await page.locator("text=No tables yet").waitFor();

  step("create a table and insert rows in the query editor");
  await page.click("[data-tab=query]");
  await page.locator("#query-db").waitFor();
  assert.equal(await page.inputValue("#query-db"), "team/shop");
  // Each run clears the last answer first, so that waiting finds this run's answer.
  const answer = async (button) => {
    await page.evaluate(() => document.getElementById("result").replaceChildren());
    await page.click(button);
    await page.locator("#result :is(table, #affected, .error, pre)").first().waitFor();
  };
  const run = async (sql) => {
    await page.fill("#sql", sql);
    await answer("#run");
  };
  await run("CREATE TABLE items (id INT PRIMARY KEY, name TEXT NOT NULL, price DOUBLE)");
  await page.locator("#affected").waitFor();
  const values = Array.from({ length: 55 }, (_, i) => `(${i + 1}, 'item ${i + 1}', ${(i + 1) * 1.5})`).join(", ");
  await run(`INSERT INTO items VALUES ${values}`);
  assert.match(await page.textContent("#affected"), /^55 rows affected · committed at version \d+/);

  step("query, explain, and a clear error");
  await run("SELECT name, price FROM items WHERE id = 7");
  const cells = await page.locator("#result td").allTextContents();
  assert.deepEqual(cells, ["item 7", "10.5"]);
  await page.fill("#sql", "SELECT name FROM items WHERE id = 7");
  await answer("#explain");
  assert.ok((await page.textContent("#result pre.plan")).length > 10, "a plan is shown");
  await run("SELECT nope FROM items");
  assert.match(await page.textContent("#result .error"), /nope.*\(HTTP 400\)/);
  await page.selectOption("#query-db", "");
  await run('SELECT count(*) AS n FROM "team/shop".public.items');
  assert.deepEqual(await page.locator("#result td").allTextContents(), ["55"]);
  await page.screenshot({ path: join(artifacts, "console-query.png"), fullPage: true });

  step("browse the table page by page");
  await page.goto(`${rest}/ui#/db/team/shop`);
  await page.click("#tables >> text=items");
  await page.locator("#rows table").waitFor();
  assert.equal(await page.locator("#rows tbody tr").count(), 50);
  assert.ok((await page.textContent("table.grid")).includes("price"), "the schema lists the columns");
  await page.screenshot({ path: join(artifacts, "console-table.png"), fullPage: true });
  await page.click("text=next →");
  await page.locator("h2", { hasText: "Rows 51–55" }).waitFor();
  assert.equal(await page.locator("#rows tbody tr").count(), 5);

  step("browse KV by prefix");
  for (const [k, v] of [["users/1", "ann"], ["users/2", "bob"], ["orders/1", "x"]]) {
    const r = await fetch(`${rest}/db/team/shop/kv/${encodeURIComponent(k)}`, {
      method: "PUT", headers: auth, body: JSON.stringify({ value: v }),
    });
    assert.equal(r.status, 200);
  }
  await page.click("[data-tab=kv]");
  await page.locator("#kv").waitFor();
  assert.equal(await page.locator("#kv tbody tr").count(), 3);
  await page.fill("#kv-prefix", "users/");
  await page.click("form:has(#kv-prefix) button");
  await page.waitForFunction(() => document.querySelectorAll("#kv tbody tr").length === 2);
  assert.deepEqual(await page.locator("#kv tbody td:first-child").allTextContents(), ["users/1", "users/2"]);

  step("a queue with a waiting message and a dead letter");
  const kv = await openKv(`${kvUrl}/db/jobs`, { accessToken: token });
  // @deno/kv sends the backoff schedule [100, 200, 400, 800] ms: five deliveries, all refused.
  assert.ok((await kv.enqueue({ task: "poison" }, { keysIfUndelivered: [["failed", "poison"]] })).ok);
  assert.ok((await kv.enqueue({ task: "later" }, { delay: 3_600_000 })).ok);
  kv.close();
  for (let attempt = 1; attempt <= 5; attempt++) {
    // The lease waits (long-polls) for the retry to come due.
    const leased = await (await fetch(`${kvUrl}/db/jobs/queue/lease`, {
      method: "POST", headers: auth, body: JSON.stringify({ max: 1, wait_ms: 10000 }),
    })).json();
    assert.equal(leased.messages.length, 1);
    const [m] = leased.messages;
    assert.equal(m.attempt, attempt);
    const nack = await fetch(`${kvUrl}/db/jobs/queue/nack`, {
      method: "POST", headers: auth, body: JSON.stringify({ id: m.id, lease: m.lease }),
    });
    assert.equal(nack.status, 204);
  }
  await page.goto(`${rest}/ui#/db/jobs/queue`);
  await page.locator("#queue-depth").waitFor();
  assert.equal(await page.textContent("#queue-depth"), "1");
  assert.equal(await page.textContent("#dead-letter-count"), "1");
  assert.equal(await page.locator("#messages tbody tr").count(), 1);
  // The state comes from the server's clock, not the browser's.
  assert.equal(await page.textContent("#messages tbody td:nth-child(4)"), "scheduled");
  assert.equal(await page.textContent("#dead-letters tbody td:nth-child(4)"), "dead");
  assert.equal(await page.locator("#dead-letters tbody tr").count(), 1);
  assert.match(await page.textContent("#dead-letters"), /poison/);

  step("the metrics panel updates");
  await page.click("nav >> text=Metrics");
  await page.locator("#m-requests").waitFor();
  const first = Number(await page.textContent("#m-requests"));
  assert.ok(first > 0, "requests are counted");
  await page.waitForFunction((n) => Number(document.querySelector("#m-requests")?.textContent) > n, first);
  assert.match(await page.textContent("#m-p50"), /ms|–/);
  assert.match(await page.textContent("#per-database"), /team\/shop/);
  assert.equal(await page.textContent("#m-dead"), "1");
  await page.screenshot({ path: join(artifacts, "console-metrics.png"), fullPage: true });

  step("create and drop a database from the dashboard");
  await page.click("nav >> text=Databases");
  await page.fill("#new-db", "scratch");
  await page.click("text=Create database");
  await page.locator("h1", { hasText: "scratch" }).waitFor();
  await page.click("nav >> text=Databases");
  await page.locator("#databases >> text=scratch").waitFor();
  page.once("dialog", (d) => d.accept());
  await page.click('[data-drop="scratch"]');
  await page.waitForFunction(() => ![...document.querySelectorAll("#databases td a")].some((a) => a.textContent === "scratch"));

  step("signing out asks for the token again");
  await page.click("#signout");
  await page.locator("#login").waitFor({ state: "visible" });

  assert.deepEqual(problems, []);
  console.log("console: all steps passed");
} finally {
  await browser.close();
}
