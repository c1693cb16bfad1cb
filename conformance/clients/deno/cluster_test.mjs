// Deno's own remote KV client (`Deno.openKv(url)`) against a 3-node Strata cluster.
// Environment: STRATA_KV_URLS (every node's KV Connect URL, comma-separated),
// DENO_KV_ACCESS_TOKEN.
//
// What a Deno user of a cluster relies on:
// - every node accepts writes (a follower forwards them to the leader);
// - a strong read on any node, right after a write acknowledged by any other node, sees it;
// - a read with `consistency: "eventual"` works on every node and catches up with the write;
// - the metadata lists every node of the cluster as an `eventual` endpoint, which is what
//   lets a client read from the replica nearest to it.
import { eq, ok } from "../cases.mjs";

const urls = (Deno.env.get("STRATA_KV_URLS") ?? "").split(",").filter((u) => u);
if (urls.length < 2) throw new Error("STRATA_KV_URLS must list the cluster's nodes");
const token = Deno.env.get("DENO_KV_ACCESS_TOKEN");

// A test given a client of every node's default database (the cluster is new, and
// nothing else writes to it), closed after.
function onEveryNode(name, fn) {
  Deno.test({
    name,
    sanitizeResources: false,
    fn: async () => {
      const kvs = await Promise.all(urls.map((u) => Deno.openKv(u)));
      try {
        await fn(kvs);
      } finally {
        kvs.forEach((kv) => kv.close());
      }
    },
  });
}

// Poll `read` until it returns `want`, for at most `ms` (eventual reads are bounded-stale).
async function eventually(read, want, ms) {
  const until = Date.now() + ms;
  let got;
  while (Date.now() < until) {
    got = await read();
    if (got === want) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`an eventual read still returned ${got}, want ${want}, after ${ms} ms`);
}

Deno.test({
  name: "the metadata lists every node as an eventual endpoint",
  sanitizeResources: false,
  fn: async () => {
    const res = await fetch(urls[0], {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ supportedVersions: [2, 3] }),
    });
    eq(res.status, 200);
    const meta = await res.json();
    const strong = meta.endpoints.filter((e) => e.consistency === "strong");
    const eventual = meta.endpoints.filter((e) => e.consistency === "eventual").map((e) => e.url);
    eq(strong.length, 1);
    for (const u of urls) {
      ok(
        eventual.some((e) => e.startsWith(u)),
        `node ${u} is missing from the eventual endpoints ${JSON.stringify(eventual)}`,
      );
    }
  },
});

onEveryNode("writes through every node; strong reads see them on every node at once", async (kvs) => {
  for (let i = 0; i < kvs.length; i++) {
    const res = await kvs[i].set(["written-through", i], `node ${i}`);
    ok(res.ok, `the write through node ${i} was not acknowledged`);
    for (let j = 0; j < kvs.length; j++) {
      const got = await kvs[j].get(["written-through", i]);
      eq(got.value, `node ${i}`, `a strong read on node ${j} missed a write`);
      eq(got.versionstamp, res.versionstamp);
    }
  }
  // A check-and-set from one node conflicts with a write made through another.
  const first = await kvs[0].get(["written-through", 0]);
  await kvs[1].set(["written-through", 0], "overwritten");
  const stale = await kvs[2].atomic().check(first).set(["written-through", 0], "lost").commit();
  eq(stale.ok, false, "a stale check passed on another node");
  eq((await kvs[0].get(["written-through", 0])).value, "overwritten");
});

onEveryNode("eventual reads on every node catch up with a write", async (kvs) => {
  for (let round = 0; round < 5; round++) {
    const value = `round ${round}`;
    ok((await kvs[round % kvs.length].set(["eventual"], value)).ok, "a write was not acknowledged");
    for (const kv of kvs) {
      await eventually(
        async () => (await kv.get(["eventual"], { consistency: "eventual" })).value,
        value,
        10_000,
      );
      const many = await kv.getMany([["eventual"], ["absent"]], { consistency: "eventual" });
      eq(many[1].value, null);
      const listed = [];
      for await (const e of kv.list({ prefix: [] }, { consistency: "eventual" })) {
        listed.push(e.key[0]);
      }
      ok(listed.includes("eventual"), `an eventual list missed the key: ${listed}`);
    }
  }
});
