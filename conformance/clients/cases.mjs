// KV Connect behaviour shared by the Deno and Node (@deno/kv) client suites.
//
// Each case gets a context: `open()` opens a fresh database on the server under test (so cases
// never see each other's keys), `KvU64` is the client's u64 class, `client` is "deno" or
// "node". Cases throw on a failed expectation.

export const GROUPS = ["values", "keys", "atomic", "watch", "limits"];

function fail(msg) {
  throw new Error(msg);
}

export function eq(actual, expected, what = "value") {
  const a = show(actual);
  const e = show(expected);
  if (a !== e) fail(`${what}: expected ${e}, got ${a}`);
}

export function ok(cond, msg) {
  if (!cond) fail(msg);
}

function show(v) {
  return JSON.stringify(v, (_k, x) => {
    if (typeof x === "bigint") return `${x}n`;
    if (x instanceof Uint8Array) return `u8[${Array.from(x).join(",")}]`;
    if (x instanceof Map) return { map: [...x.entries()] };
    if (x instanceof Set) return { set: [...x.values()] };
    if (x && typeof x === "object" && "value" in x && typeof x.value === "bigint" && Object.keys(x).length <= 1) {
      return `u64:${x.value}n`;
    }
    return x;
  });
}

async function rejects(fn, pattern, what) {
  try {
    await fn();
  } catch (e) {
    const msg = String(e && e.message ? e.message : e);
    if (pattern && !pattern.test(msg)) fail(`${what}: error ${JSON.stringify(msg)} does not match ${pattern}`);
    return msg;
  }
  fail(`${what}: expected an error`);
}

async function collect(iter) {
  const out = [];
  for await (const e of iter) out.push(e);
  return out;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export const cases = [
  // ---------------------------------------------------------------- values
  ["values", "every value type round-trips", async ({ open, KvU64 }) => {
    const kv = await open();
    const values = {
      string: "héllo ✓",
      empty: "",
      int: 42,
      float: -3.25,
      nan: NaN,
      inf: Infinity,
      bigint: 12345678901234567890n,
      negbig: -5n,
      t: true,
      f: false,
      nil: null,
      bytes: new Uint8Array([0, 1, 255]),
      object: { a: 1, nested: { b: [1, "two", null] } },
      array: [1, "x", false],
      date: new Date(1700000000123),
      map: new Map([["k", 1], [2, "v"]]),
      set: new Set([1, "a"]),
      u64: new KvU64(18446744073709551615n),
    };
    for (const [name, v] of Object.entries(values)) {
      const r = await kv.set(["v", name], v);
      ok(r.ok, `set ${name}`);
      const got = await kv.get(["v", name]);
      eq(got.versionstamp, r.versionstamp, `${name} versionstamp`);
      if (name === "date") {
        ok(got.value instanceof Date && got.value.getTime() === v.getTime(), "date round-trips");
      } else if (name === "nan") {
        ok(Number.isNaN(got.value), "NaN round-trips");
      } else if (name === "map") {
        ok(got.value instanceof Map, "map is a Map");
        eq([...got.value.entries()], [...v.entries()], "map entries");
      } else if (name === "set") {
        ok(got.value instanceof Set, "set is a Set");
        eq([...got.value.values()], [...v.values()], "set values");
      } else if (name === "u64") {
        ok(got.value instanceof KvU64, "KvU64 comes back as KvU64");
        eq(got.value.value, v.value, "u64 value");
      } else if (name === "bytes") {
        ok(got.value instanceof Uint8Array, "bytes come back as Uint8Array");
        eq(got.value, v, "bytes");
      } else {
        eq(got.value, v, name);
      }
    }
    const missing = await kv.get(["v", "missing"]);
    eq(missing.value, null, "missing value");
    eq(missing.versionstamp, null, "missing versionstamp");
    kv.close();
  }],
  ["values", "getMany returns each key in order", async ({ open }) => {
    const kv = await open();
    await kv.set(["a"], 1);
    await kv.set(["c"], 3);
    const got = await kv.getMany([["a"], ["b"], ["c"]]);
    eq(got.map((e) => e.value), [1, null, 3], "values");
    eq(got.map((e) => e.key), [["a"], ["b"], ["c"]], "keys");
    kv.close();
  }],
  ["values", "delete removes a key", async ({ open }) => {
    const kv = await open();
    await kv.set(["d"], "x");
    await kv.delete(["d"]);
    eq((await kv.get(["d"])).value, null, "deleted");
    kv.close();
  }],
  ["values", "eventual reads see committed data", async ({ open }) => {
    const kv = await open();
    await kv.set(["e"], "x");
    const got = await kv.get(["e"], { consistency: "eventual" });
    eq(got.value, "x", "eventual get");
    const listed = await collect(kv.list({ prefix: [] }, { consistency: "eventual" }));
    eq(listed.length, 1, "eventual list");
    kv.close();
  }],
  ["values", "expireIn hides the key after its deadline", async ({ open }) => {
    // No assumption on how fast the server answers: a key whose deadline is an hour away
    // must be visible now, and a short-lived key must be gone once the client's own clock
    // (the same machine's) has passed the latest deadline the server can have given it.
    const kv = await open();
    await kv.set(["later"], "an hour left", { expireIn: 3_600_000 });
    await kv.set(["tmp"], "soon gone", { expireIn: 300 });
    const deadline = Date.now() + 300;
    await kv.set(["keep"], "stays");
    eq((await kv.get(["later"])).value, "an hour left", "before expiry");
    while (Date.now() <= deadline + 20) await sleep(deadline + 25 - Date.now());
    eq((await kv.get(["tmp"])).value, null, "after expiry");
    eq((await collect(kv.list({ prefix: [] }))).map((e) => e.key), [["keep"], ["later"]], "list after expiry");
    kv.close();
  }],

  // ---------------------------------------------------------------- keys
  ["keys", "keys order by type, then value", async ({ open }) => {
    // (-0 is left out: @deno/kv folds it into 0 on the client side.)
    const kv = await open();
    const keys = [
      [new Uint8Array([])],
      [new Uint8Array([0])],
      [new Uint8Array([0, 0])],
      [new Uint8Array([1])],
      [""],
      ["\u0000"],
      ["a"],
      ["a", 1],
      ["a\u0000"],
      ["b"],
      [-(2n ** 70n)],
      [-200n],
      [-1n],
      [0n],
      [1n],
      [255n],
      [256n],
      [2n ** 70n],
      [-Infinity],
      [-1.5],
      [0],
      [1],
      [1.5],
      [Infinity],
      [false],
      [true],
    ];
    const shuffled = [...keys].reverse();
    for (let i = 0; i < shuffled.length; i++) await kv.set(shuffled[i], i);
    const listed = await collect(kv.list({ prefix: [] }));
    eq(listed.map((e) => e.key), keys, "list order");
    const rev = await collect(kv.list({ prefix: [] }, { reverse: true }));
    eq(rev.map((e) => e.key), [...keys].reverse(), "reverse order");
    kv.close();
  }],
  ["keys", "list selectors and options", async ({ open }) => {
    const kv = await open();
    for (let i = 0; i < 30; i++) await kv.set(["items", i], i);
    await kv.set(["other"], "x");
    const all = await collect(kv.list({ prefix: ["items"] }));
    eq(all.length, 30, "prefix");
    eq((await collect(kv.list({ prefix: ["items"] }, { limit: 5 }))).map((e) => e.value), [0, 1, 2, 3, 4], "limit");
    eq((await collect(kv.list({ prefix: ["items"] }, { limit: 3, reverse: true }))).map((e) => e.value), [29, 28, 27], "reverse");
    eq((await collect(kv.list({ start: ["items", 10], end: ["items", 13] }))).map((e) => e.value), [10, 11, 12], "start/end");
    eq((await collect(kv.list({ prefix: ["items"], start: ["items", 27] }))).map((e) => e.value), [27, 28, 29], "prefix+start");
    eq((await collect(kv.list({ prefix: ["items"], end: ["items", 2] }))).map((e) => e.value), [0, 1], "prefix+end");
    eq((await collect(kv.list({ prefix: ["items"] }, { batchSize: 7 }))).length, 30, "batchSize");
    const it = kv.list({ prefix: ["items"] }, { limit: 10 });
    const first = await collect(it);
    eq(first.length, 10, "first page");
    const rest = await collect(kv.list({ prefix: ["items"] }, { cursor: it.cursor }));
    eq(rest.map((e) => e.value), Array.from({ length: 20 }, (_, i) => i + 10), "cursor resumes");
    const revIt = kv.list({ prefix: ["items"] }, { limit: 5, reverse: true });
    await collect(revIt);
    const revRest = await collect(kv.list({ prefix: ["items"] }, { cursor: revIt.cursor, reverse: true, limit: 2 }));
    eq(revRest.map((e) => e.value), [24, 23], "reverse cursor");
    kv.close();
  }],
  ["keys", "versionstamps increase with every commit", async ({ open }) => {
    const kv = await open();
    let last = "";
    for (let i = 0; i < 10; i++) {
      const r = await kv.set(["vs"], i);
      ok(/^[0-9a-f]{20}$/.test(r.versionstamp), `versionstamp format ${r.versionstamp}`);
      ok(r.versionstamp > last, `${r.versionstamp} after ${last}`);
      last = r.versionstamp;
    }
    kv.close();
  }],

  // ---------------------------------------------------------------- atomic
  ["atomic", "checks pass and fail", async ({ open }) => {
    const kv = await open();
    const r1 = await kv.set(["acct"], 10);
    const ok1 = await kv.atomic().check({ key: ["acct"], versionstamp: r1.versionstamp }).check({ key: ["new"], versionstamp: null })
      .set(["acct"], 20).set(["new"], 1).commit();
    ok(ok1.ok, "matching checks commit");
    eq((await kv.get(["acct"])).versionstamp, ok1.versionstamp, "one versionstamp per commit");
    eq((await kv.get(["new"])).versionstamp, ok1.versionstamp, "one versionstamp per commit");
    const stale = await kv.atomic().check({ key: ["acct"], versionstamp: r1.versionstamp }).set(["acct"], 99).commit();
    eq(stale.ok, false, "stale check fails");
    eq((await kv.get(["acct"])).value, 20, "nothing written");
    const exists = await kv.atomic().check({ key: ["new"], versionstamp: null }).set(["x"], 1).commit();
    eq(exists.ok, false, "absent check on an existing key fails");
    eq((await kv.get(["x"])).value, null, "nothing written");
    kv.close();
  }],
  ["atomic", "sum, min and max on KvU64", async ({ open, KvU64 }) => {
    const kv = await open();
    await kv.atomic().sum(["s"], 5n).commit();
    eq((await kv.get(["s"])).value.value, 5n, "sum on missing");
    await kv.set(["w"], new KvU64(18446744073709551615n));
    await kv.atomic().sum(["w"], 2n).commit();
    eq((await kv.get(["w"])).value.value, 1n, "sum wraps");
    await kv.atomic().min(["m"], 10n).commit();
    await kv.atomic().min(["m"], 3n).commit();
    await kv.atomic().min(["m"], 7n).commit();
    eq((await kv.get(["m"])).value.value, 3n, "min");
    await kv.atomic().max(["x"], 3n).commit();
    await kv.atomic().max(["x"], 9n).commit();
    await kv.atomic().max(["x"], 4n).commit();
    eq((await kv.get(["x"])).value.value, 9n, "max");
    kv.close();
  }],
  ["atomic", "sum on a non-U64 value is a clear error", async ({ open }) => {
    const kv = await open();
    await kv.set(["str"], "text");
    await rejects(() => kv.atomic().sum(["str"], 1n).commit(), /non-U64 value/, "sum on a string");
    await rejects(() => kv.atomic().min(["str"], 1n).commit(), /non-U64 value/, "min on a string");
    await rejects(() => kv.atomic().max(["str"], 1n).commit(), /non-U64 value/, "max on a string");
    eq((await kv.get(["str"])).value, "text", "value untouched");
    kv.close();
  }],
  ["atomic", "enqueue is accepted as part of a commit", async ({ open, client }) => {
    // Deno's built-in remote client refuses enqueue over KV Connect; @deno/kv sends it.
    if (client === "deno") return;
    const kv = await open();
    const r = await kv.atomic().set(["job"], "queued").enqueue({ task: 1 }, { delay: 10, keysIfUndelivered: [["dead"]] }).commit();
    ok(r.ok, "enqueue commits");
    const r2 = await kv.enqueue("plain");
    ok(r2.ok, "kv.enqueue commits");
    kv.close();
  }],

  // ---------------------------------------------------------------- watch
  ["watch", "watch reports current entries, then changes", async ({ open }) => {
    const kv = await open();
    await kv.set(["w", "a"], 1);
    const stream = kv.watch([["w", "a"], ["w", "b"]]);
    const reader = stream.getReader();
    const first = await reader.read();
    eq(first.value.map((e) => e.value), [1, null], "first frame");
    await kv.set(["w", "b"], 2);
    let next = await reader.read();
    while (next.value[1].value !== 2) next = await reader.read();
    eq(next.value.map((e) => e.value), [1, 2], "after a set");
    await kv.delete(["w", "a"]);
    next = await reader.read();
    while (next.value[0].value !== null) next = await reader.read();
    eq(next.value.map((e) => e.value), [null, 2], "after a delete");
    await reader.cancel();
    kv.close();
  }],

  // ---------------------------------------------------------------- limits
  ["limits", "oversized keys and values are refused", async ({ open }) => {
    const kv = await open();
    await rejects(() => kv.set(["k", "x".repeat(2100)], 1), /key|size|large|limit/i, "2100-byte key");
    await rejects(() => kv.set(["k"], new Uint8Array(70000)), /value|size|large|limit/i, "70000-byte value");
    eq((await collect(kv.list({ prefix: [] }))).length, 0, "nothing written");
    kv.close();
  }],
  ["limits", "too many mutations and checks are refused", async ({ open }) => {
    const kv = await open();
    const op = kv.atomic();
    for (let i = 0; i < 1001; i++) op.set(["m", i], i);
    await rejects(() => op.commit(), null, "1001 mutations");
    const op2 = kv.atomic();
    for (let i = 0; i < 1000; i++) op2.set(["m", i], i);
    ok((await op2.commit()).ok, "1000 mutations commit");
    kv.close();
  }],
  ["limits", "a wrong token is refused", async ({ openWithToken }) => {
    await rejects(async () => {
      const kv = await openWithToken("not-the-right-token");
      try {
        await kv.get(["x"]);
      } finally {
        kv.close();
      }
    }, /401|token|unauthori/i, "wrong token");
  }],
];
