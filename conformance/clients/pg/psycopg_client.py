"""psycopg 3 against `strata serve`.

Connection settings come from the standard PG* environment variables. Exits non-zero,
naming the step, at the first surprise.
"""

import datetime
import os
import sys
from decimal import Decimal

import psycopg
from psycopg import errors

NAME = "Grüße, 世界 🚀 'quoted'"


def fail(step, message):
    print(f"step {step}: {message}", file=sys.stderr)
    sys.exit(1)


def expect_error(step, sqlstate, f):
    try:
        f()
    except psycopg.Error as e:
        if e.sqlstate != sqlstate:
            fail(step, f"expected SQLSTATE {sqlstate}, got {e.sqlstate}: {e}")
        return
    fail(step, f"expected SQLSTATE {sqlstate}, but it succeeded")


def main():
    c = psycopg.connect(autocommit=True)

    step = "ddl"
    c.execute(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, flag BOOLEAN, small SMALLINT, big BIGINT, "
        "real_v REAL, dbl DOUBLE PRECISION, price DECIMAL(10,2), name TEXT NOT NULL, "
        "code VARCHAR(8), data BYTEA, day DATE, at TIMESTAMP)"
    )
    c.execute("CREATE UNIQUE INDEX items_code ON items (code)")

    step = "every type through parameters"
    day = datetime.date(2024, 2, 29)
    at = datetime.datetime(2024, 2, 29, 12, 34, 56, 789000)
    values = (1, True, -7, -(2**63) + 1, 1.5, -2.25e300, Decimal("-12.34"), NAME, "A-1",
              bytes([0, 1, 2, 255]), day, at)
    insert = "INSERT INTO items VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    cur = c.execute(insert, values)
    if cur.rowcount != 1:
        fail(step, f"insert reported {cur.rowcount} rows")
    c.execute(insert, (2, None, None, None, None, None, None, "", None, None, None, None))
    # Both formats of results: text (the default) and binary.
    for binary in (False, True):
        row = c.cursor(binary=binary).execute("SELECT * FROM items WHERE id = %s", (1,)).fetchone()
        if tuple(row) != values:
            fail(step, f"binary={binary}: the row came back as {row!r}")
        nulls = c.cursor(binary=binary).execute("SELECT * FROM items WHERE id = %s", (2,)).fetchone()
        if tuple(nulls) != (2, None, None, None, None, None, None, "", None, None, None, None):
            fail(step, f"binary={binary}: the NULL row came back as {nulls!r}")
    rows = c.execute(
        "SELECT id FROM items WHERE name = %s AND id BETWEEN %s AND %s", (NAME, 0, 10)
    ).fetchall()
    if rows != [(1,)]:
        fail(step, f"select by text found {rows!r}")
    # The same statement many times: psycopg prepares it on the server after a few runs.
    for i in range(10):
        got = c.execute("SELECT name FROM items WHERE id = %s", (1,)).fetchone()
        if got != (NAME,):
            fail(step, f"run {i} of a repeated statement returned {got!r}")

    step = "transactions"
    t = psycopg.connect()
    with t.transaction():
        t.execute("INSERT INTO items (id, name) VALUES (%s, %s)", (4, "committed"))
    try:
        with t.transaction():
            t.execute("INSERT INTO items (id, name) VALUES (%s, %s)", (3, "rolled back"))
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    t.commit()
    ids = [r[0] for r in c.execute("SELECT id FROM items ORDER BY id").fetchall()]
    if ids != [1, 2, 4]:
        fail(step, f"after one rollback and one commit the ids are {ids}")
    # An error inside a transaction aborts it, as in PostgreSQL.
    expect_error(step, "23505", lambda: t.execute("INSERT INTO items (id, name) VALUES (1, 'again')"))
    expect_error(step, "25P02", lambda: t.execute("SELECT 1"))
    t.rollback()

    step = "serialization conflict"
    t.execute("SELECT big FROM items WHERE id = 1")
    c.execute("UPDATE items SET big = 7 WHERE id = 1")
    t.execute("UPDATE items SET big = 8 WHERE id = 1")
    try:
        t.commit()
        fail(step, "the conflicting commit succeeded")
    except errors.SerializationFailure:
        pass
    t.rollback()
    big = c.execute("SELECT big FROM items WHERE id = 1").fetchone()[0]
    if big != 7:
        fail(step, f"after the conflict big is {big}")
    t.close()

    step = "cross-database join"
    c.execute("CREATE DATABASE other")
    with psycopg.connect(dbname="other", autocommit=True) as o:
        o.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, item INTEGER, note TEXT)")
        o.execute("INSERT INTO notes VALUES (%s, %s, %s)", (1, 4, "see item four"))
        rows = o.execute(
            'SELECT n.note, i.name FROM notes n JOIN "default".public.items i ON i.id = n.item'
        ).fetchall()
        if rows != [("see item four", "committed")]:
            fail(step, f"the join returned {rows!r}")

    step = "errors"
    expect_error(step, "42601", lambda: c.execute("SELEC 1"))
    expect_error(step, "23505", lambda: c.execute(
        "INSERT INTO items (id, name, code) VALUES (9, 'x', 'A-1')"))
    expect_error(step, "23502", lambda: c.execute("INSERT INTO items (id) VALUES (%s)", (10,)))
    expect_error(step, "42P01", lambda: c.execute("SELECT * FROM no_such_table"))
    try:
        psycopg.connect(password="not-the-token-at-all")
        fail(step, "a wrong password was accepted")
    except psycopg.OperationalError as e:
        if "password authentication failed" not in str(e):
            fail(step, f"a wrong password: {e}")
    try:
        psycopg.connect(dbname="nosuchdb")
        fail(step, "an unknown database was accepted")
    except psycopg.OperationalError as e:
        if 'database "nosuchdb" does not exist' not in str(e):
            fail(step, f"an unknown database: {e}")
    password = os.environ.pop("PGPASSWORD", None)
    try:
        psycopg.connect(passfile=os.devnull)
        fail(step, "a connection without a password was accepted")
    except psycopg.OperationalError as e:
        if "no password supplied" not in str(e):
            fail(step, f"without a password: {e}")
    finally:
        if password is not None:
            os.environ["PGPASSWORD"] = password
    n = c.execute("SELECT count(*) FROM items").fetchone()[0]
    if n != 3:
        fail(step, f"count is {n}")
    c.close()
    print("psycopg: all steps passed")


if __name__ == "__main__":
    main()
