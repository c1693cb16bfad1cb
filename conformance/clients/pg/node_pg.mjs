// node-postgres (`pg`) against `strata serve`. Connection settings come from the standard
// PG* environment variables. Exits non-zero, naming the step, at the first surprise.
import assert from "node:assert/strict";
import pg from "pg";

const step = async (name, f) => {
  try {
    await f();
  } catch (e) {
    console.error(`step ${name}: ${e.code ? `[${e.code}] ` : ""}${e.message}`);
    process.exit(1);
  }
};

const connect = async (overrides = {}) => {
  const c = new pg.Client(overrides);
  await c.connect();
  return c;
};

const rejects = async (promise, code) => {
  try {
    await promise;
  } catch (e) {
    assert.equal(e.code, code, `expected SQLSTATE ${code}, got ${e.code}: ${e.message}`);
    return;
  }
  assert.fail(`expected SQLSTATE ${code}, but it succeeded`);
};

const c = await connect();
const name = "Grüße, 世界 🚀 'quoted'";

await step("ddl", async () => {
  await c.query(
    `CREATE TABLE items (id INTEGER PRIMARY KEY, flag BOOLEAN, small SMALLINT, big BIGINT,
     real_v REAL, dbl DOUBLE PRECISION, price DECIMAL(10,2), name TEXT NOT NULL,
     code VARCHAR(8), data BYTEA, day DATE, at TIMESTAMP)`,
  );
  await c.query("CREATE UNIQUE INDEX items_code ON items (code)");
});

await step("every type through parameters", async () => {
  const insert = "INSERT INTO items VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";
  const r = await c.query(insert, [
    1, true, -7, "-9223372036854775807", 1.5, -2.25e300, "-12.34", name, "A-1",
    Buffer.from([0, 1, 2, 255]), "2024-02-29", "2024-02-29 12:34:56.789",
  ]);
  assert.equal(r.rowCount, 1);
  assert.equal(r.command, "INSERT");
  await c.query(insert, [2, null, null, null, null, null, null, "", null, null, null, null]);
  const { rows } = await c.query("SELECT * FROM items WHERE id = $1", [1]);
  assert.equal(rows.length, 1);
  const row = rows[0];
  // int8 and numeric arrive as strings in node-postgres (they may not fit a JS number).
  assert.equal(row.id, "1");
  assert.equal(row.flag, true);
  assert.equal(row.small, "-7");
  assert.equal(row.big, "-9223372036854775807");
  assert.equal(row.real_v, 1.5);
  assert.equal(row.dbl, -2.25e300);
  assert.equal(row.price, "-12.34");
  assert.equal(row.name, name);
  assert.equal(row.code, "A-1");
  assert.deepEqual([...row.data], [0, 1, 2, 255]);
  assert.equal(row.day.toISOString(), "2024-02-29T00:00:00.000Z");
  assert.equal(row.at.toISOString(), "2024-02-29T12:34:56.789Z");
  const nulls = (await c.query("SELECT * FROM items WHERE id = $1", [2])).rows[0];
  for (const col of ["flag", "small", "big", "real_v", "dbl", "price", "code", "data", "day", "at"]) {
    assert.equal(nulls[col], null, `column ${col} of the NULL row`);
  }
  assert.equal(nulls.name, "");
  const byText = await c.query("SELECT id FROM items WHERE name = $1 AND id BETWEEN $2 AND $3", [name, 0, 10]);
  assert.equal(byText.rows.length, 1);
});

await step("transactions", async () => {
  await c.query("BEGIN");
  await c.query("INSERT INTO items (id, name) VALUES ($1, $2)", [3, "rolled back"]);
  await c.query("ROLLBACK");
  await c.query("BEGIN");
  await c.query("INSERT INTO items (id, name) VALUES ($1, $2)", [4, "committed"]);
  await c.query("COMMIT");
  const { rows } = await c.query("SELECT id FROM items ORDER BY id");
  assert.deepEqual(rows.map((r) => r.id), ["1", "2", "4"]);
  // An error inside a transaction aborts it, as in PostgreSQL.
  await c.query("BEGIN");
  await rejects(c.query("INSERT INTO items (id, name) VALUES (1, 'again')"), "23505");
  await rejects(c.query("SELECT 1"), "25P02");
  await c.query("ROLLBACK");
});

await step("serialization conflict", async () => {
  const t = await connect();
  await t.query("BEGIN");
  await t.query("SELECT big FROM items WHERE id = 1");
  await c.query("UPDATE items SET big = 7 WHERE id = 1");
  await t.query("UPDATE items SET big = 8 WHERE id = 1");
  await rejects(t.query("COMMIT"), "40001");
  await t.query("ROLLBACK");
  const { rows } = await t.query("SELECT big FROM items WHERE id = 1");
  assert.equal(rows[0].big, "7");
  await t.end();
});

await step("cross-database join", async () => {
  await c.query("CREATE DATABASE other");
  const o = await connect({ database: "other" });
  await o.query("CREATE TABLE notes (id INTEGER PRIMARY KEY, item INTEGER, note TEXT)");
  await o.query("INSERT INTO notes VALUES ($1, $2, $3)", [1, 4, "see item four"]);
  const { rows } = await o.query(
    `SELECT n.note, i.name FROM notes n JOIN "default".public.items i ON i.id = n.item`,
  );
  assert.deepEqual(rows, [{ note: "see item four", name: "committed" }]);
  await o.end();
});

await step("errors", async () => {
  await rejects(c.query("SELEC 1"), "42601");
  await rejects(c.query("INSERT INTO items (id, name, code) VALUES (9, 'x', 'A-1')"), "23505");
  await rejects(c.query("INSERT INTO items (id) VALUES ($1)", [10]), "23502");
  await rejects(c.query("SELECT * FROM no_such_table"), "42P01");
  await rejects(connect({ password: "not-the-token-at-all" }), "28P01");
  await rejects(connect({ database: "nosuchdb" }), "3D000");
  const saved = process.env.PGPASSWORD;
  delete process.env.PGPASSWORD;
  let refused = false;
  try {
    // node-postgres fails a SCRAM exchange without a password inside its message
    // handler; the attempt ends when the server drops the unfinished startup. Give up
    // waiting after a few seconds: not connected is what counts.
    await Promise.race([
      connect(),
      new Promise((_, reject) => setTimeout(() => reject(new Error("timed out")), 3000)),
    ]);
  } catch {
    refused = true;
  } finally {
    process.env.PGPASSWORD = saved;
  }
  assert.ok(refused, "a connection without a password is refused");
  assert.equal((await c.query("SELECT count(*) AS n FROM items")).rows[0].n, "3");
});

await c.end();
console.log("node-postgres: all steps passed");
// A refused connection attempt may still hold a socket open.
process.exit(0);
