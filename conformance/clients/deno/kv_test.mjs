// The shared KV Connect cases, run by Deno's own remote KV client (`Deno.openKv(url)`).
// Environment: STRATA_KV_URL (server), DENO_KV_ACCESS_TOKEN, STRATA_GROUP (optional filter).
import { cases } from "../cases.mjs";

const url = Deno.env.get("STRATA_KV_URL");
if (!url) throw new Error("STRATA_KV_URL is not set");
const group = Deno.env.get("STRATA_GROUP");
let n = 0;

const ctx = {
  client: "deno",
  KvU64: Deno.KvU64,
  open: () => Deno.openKv(`${url}/db/deno-${Date.now()}-${n++}-${Math.random().toString(36).slice(2, 8)}`),
  openWithToken: async (token) => {
    const saved = Deno.env.get("DENO_KV_ACCESS_TOKEN") ?? "";
    Deno.env.set("DENO_KV_ACCESS_TOKEN", token);
    try {
      const kv = await Deno.openKv(url);
      await kv.get(["probe"]);
      return kv;
    } finally {
      Deno.env.set("DENO_KV_ACCESS_TOKEN", saved);
    }
  },
};

for (const [g, name, fn] of cases) {
  if (group && g !== group) continue;
  Deno.test({ name: `${g}: ${name}`, fn: () => fn(ctx), sanitizeResources: false, sanitizeOps: false });
}
