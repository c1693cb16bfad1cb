// The shared KV Connect cases, run by the `@deno/kv` npm client on Node.
// Environment: STRATA_KV_URL (server), DENO_KV_ACCESS_TOKEN, STRATA_GROUP (optional filter).
import { test } from "node:test";
import { KvU64, openKv } from "@deno/kv";
import { cases } from "../cases.mjs";

const url = process.env.STRATA_KV_URL;
if (!url) throw new Error("STRATA_KV_URL is not set");
const accessToken = process.env.DENO_KV_ACCESS_TOKEN;
const group = process.env.STRATA_GROUP;
let n = 0;

const ctx = {
  client: "node",
  KvU64,
  open: () => openKv(`${url}/db/node-${Date.now()}-${n++}-${Math.random().toString(36).slice(2, 8)}`, { accessToken }),
  openWithToken: async (token) => {
    const kv = await openKv(url, { accessToken: token });
    await kv.get(["probe"]);
    return kv;
  },
};

for (const [g, name, fn] of cases) {
  if (group && g !== group) continue;
  test(`${g}: ${name}`, () => fn(ctx));
}
