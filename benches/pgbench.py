#!/usr/bin/env python3
"""pgbench against PostgreSQL and Strata, side by side, in one run.

PostgreSQL runs at its defaults (fsync=on, synchronous_commit=on); Strata serves a redb
store whose databases commit with `sync` durability (the default). Both get the same
tables and rows, loaded with SQL, and the same pgbench scripts with `-M prepared`:

  select   SELECT abalance FROM pgbench_accounts WHERE aid = :aid   (100,000 rows)
  insert   INSERT INTO bench_insert VALUES (:id, 1, 'pgbench')      (one durable row)
  tpcb     pgbench's own TPC-B-like transaction (scale 1), retried on 40001

Each workload runs with 1, 8 and 32 clients. Prints a Markdown table: throughput (tps) and
p50/p99 latency per transaction, and Strata's throughput as a ratio of PostgreSQL's.

  cargo build --release
  python3 benches/pgbench.py                      # PGBENCH_SECONDS=10, PGBENCH_CLIENTS="1 8 32"

Needs Debian's postgresql-15 (server and pgbench). Run as root, it starts PostgreSQL as
the postgres user.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
STRATA = os.environ.get("STRATA_BIN", "target/release/strata")
SECONDS = int(os.environ.get("PGBENCH_SECONDS", "10"))
CLIENTS = [int(c) for c in os.environ.get("PGBENCH_CLIENTS", "1 8 32").split()]
WORKLOADS = os.environ.get("PGBENCH_WORKLOADS", "select insert tpcb").split()
PG_PORT, STRATA_PORT = 55432, 55433
ACCOUNTS = 100_000

SCHEMA = [
    "CREATE TABLE pgbench_accounts (aid INTEGER PRIMARY KEY, bid INTEGER, abalance INTEGER, filler CHAR(84))",
    "CREATE TABLE pgbench_branches (bid INTEGER PRIMARY KEY, bbalance INTEGER, filler CHAR(88))",
    "CREATE TABLE pgbench_tellers (tid INTEGER PRIMARY KEY, bid INTEGER, tbalance INTEGER, filler CHAR(84))",
    "CREATE TABLE pgbench_history (tid INTEGER, bid INTEGER, aid INTEGER, delta INTEGER, mtime TIMESTAMP, filler CHAR(22))",
    "CREATE TABLE bench_insert (id BIGINT PRIMARY KEY, v INTEGER, note TEXT)",
    "INSERT INTO pgbench_branches VALUES (1, 0, '')",
] + [f"INSERT INTO pgbench_tellers VALUES ({t}, 1, 0, '')" for t in range(1, 11)]

SCRIPTS = {
    "select": "\\set aid random(1, 100000)\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n",
    "insert": "\\set id random(1, 9000000000000000000)\nINSERT INTO bench_insert VALUES (:id, 1, 'pgbench');\n",
}


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def psql(port, sql):
    run(["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(port), "-U", "bench", "-d", "bench",
         "-v", "ON_ERROR_STOP=1", "-c", sql])


def load(port, series):
    for s in SCHEMA:
        psql(port, s)
    chunk = 10_000
    for lo in range(1, ACCOUNTS + 1, chunk):
        hi = lo + chunk - 1
        psql(port, series(lo, hi))


def wait_port(port, db):
    for _ in range(300):
        try:
            run(["psql", "-X", "-h", "127.0.0.1", "-p", str(port), "-U", "bench", "-d", db,
                 "-c", "SELECT 1"])
            return
        except subprocess.CalledProcessError:
            time.sleep(0.1)
    sys.exit(f"nothing answers on port {port}")


def pgbench(port, workload, clients, logdir):
    args = ["pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", "bench", "-n", "-M", "prepared",
            "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(SECONDS), "-l",
            "--log-prefix", os.path.join(logdir, "tx")]
    if workload == "tpcb":
        args += ["-b", "tpcb-like", "--max-tries", "1000"]
    else:
        path = os.path.join(logdir, f"{workload}.sql")
        with open(path, "w") as f:
            f.write(SCRIPTS[workload])
        args += ["-f", path]
    done = subprocess.run(args + ["bench"], capture_output=True, text=True)
    if done.returncode != 0:
        reason = next((l for l in done.stderr.splitlines() if "error" in l.lower()), "failed")
        print(f"{workload} c={clients} on port {port}: {reason}", file=sys.stderr)
        return float("nan"), float("nan"), float("nan"), reason
    out = done.stdout
    tps = next(float(l.split("=")[1].split()[0]) for l in out.splitlines() if l.startswith("tps"))
    lat = []
    for name in os.listdir(logdir):
        if name.startswith("tx"):
            with open(os.path.join(logdir, name)) as f:
                lat += [int(l.split()[2]) for l in f if l.strip()]
            os.remove(os.path.join(logdir, name))
    lat.sort()
    pct = lambda p: lat[min(len(lat) - 1, int(len(lat) * p))] / 1000 if lat else float("nan")
    retried = next((l.strip() for l in out.splitlines() if "retried" in l), "")
    return tps, pct(0.50), pct(0.99), retried


def main():
    work = tempfile.mkdtemp(prefix="pgbench-")
    os.chmod(work, 0o777)
    pgdata = os.path.join(work, "pg")
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    run(as_pg + [f"{PG_BIN}/initdb", "-D", pgdata, "-U", "bench", "--auth=trust"])
    run(as_pg + [f"{PG_BIN}/pg_ctl", "-D", pgdata, "-l", os.path.join(work, "pg.log"), "-w",
                 "-o", f"-p {PG_PORT} -k {work} -c listen_addresses=127.0.0.1 -c max_connections=100",
                 "start"])
    strata = subprocess.Popen(
        [STRATA, "--store", f"redb:{work}/strata", "serve", "--no-auth", "--kv-connect",
         "127.0.0.1:0", "--pgwire", f"127.0.0.1:{STRATA_PORT}", "--no-rest"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(PG_PORT, "postgres")
        wait_port(STRATA_PORT, "default")
        run(["psql", "-X", "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "bench", "-d", "postgres",
             "-c", "CREATE DATABASE bench"])
        run(["psql", "-X", "-h", "127.0.0.1", "-p", str(STRATA_PORT), "-U", "bench", "-d", "default",
             "-c", "CREATE DATABASE bench"])
        load(PG_PORT, lambda lo, hi: "INSERT INTO pgbench_accounts SELECT g, 1, 0, '' "
                                     f"FROM generate_series({lo}, {hi}) g")
        load(STRATA_PORT, lambda lo, hi: "INSERT INTO pgbench_accounts SELECT value, 1, 0, '' "
                                         f"FROM generate_series({lo}, {hi})")
        psql(PG_PORT, "VACUUM ANALYZE")
        logdir = os.path.join(work, "logs")
        os.makedirs(logdir)
        rows = []
        for workload in WORKLOADS:
            for clients in CLIENTS:
                pg = pgbench(PG_PORT, workload, clients, logdir)
                st = pgbench(STRATA_PORT, workload, clients, logdir)
                rows.append((workload, clients, pg, st))
                print(f"{workload} c={clients}: PostgreSQL {pg[0]:.0f} tps, Strata {st[0]:.0f} tps "
                      f"{st[3]}", file=sys.stderr)
        print(f"\n{SECONDS} s per run, `-M prepared`; latency per transaction in ms.\n")
        print("| workload | clients | PostgreSQL tps | p50 | p99 | Strata tps | p50 | p99 | Strata / PostgreSQL |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for workload, clients, pg, st in rows:
            print(f"| {workload} | {clients} | {pg[0]:,.0f} | {pg[1]:.3f} | {pg[2]:.3f} | "
                  f"{st[0]:,.0f} | {st[1]:.3f} | {st[2]:.3f} | {st[0] / pg[0]:.2f}× |")
    finally:
        strata.terminate()
        strata.wait()
        subprocess.run(as_pg + [f"{PG_BIN}/pg_ctl", "-D", pgdata, "-m", "fast", "stop"],
                       capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
