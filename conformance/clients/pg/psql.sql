-- psql against strata serve: the output must equal psql.expected.
\set ON_ERROR_STOP off
\set VERBOSITY verbose
\pset null '(null)'

-- DDL
CREATE TABLE items (id INTEGER PRIMARY KEY, flag BOOLEAN, small SMALLINT, big BIGINT,
  real_v REAL, dbl DOUBLE PRECISION, price DECIMAL(10,2), name TEXT NOT NULL,
  code VARCHAR(8), data BYTEA, day DATE, at TIMESTAMP);
CREATE UNIQUE INDEX items_code ON items (code);

-- Every type, NULLs and Unicode; values through psql variables
\set id 1
\set name 'Grüße, 世界 🚀 ''quoted'''
INSERT INTO items VALUES (:id, true, -7, -9223372036854775807, 1.5, -2.25e300, -12.34,
  :'name', 'A-1', X'000102ff', '2024-02-29', '2024-02-29 12:34:56.789');
INSERT INTO items (id, name) VALUES (2, '');
SELECT * FROM items ORDER BY id;
SELECT id, name FROM items WHERE name = :'name';

-- Transactions
BEGIN;
INSERT INTO items (id, name) VALUES (3, 'rolled back');
ROLLBACK;
BEGIN;
INSERT INTO items (id, name) VALUES (4, 'committed');
COMMIT;
SELECT id, name FROM items ORDER BY id;
-- An error inside a transaction aborts it
BEGIN;
INSERT INTO items (id, name) VALUES (1, 'again');
SELECT 1;
ROLLBACK;

-- A serialization conflict: another connection changes what this transaction read
BEGIN;
SELECT big FROM items WHERE id = 1;
\! psql -X -q -d default -c 'UPDATE items SET big = 7 WHERE id = 1'
UPDATE items SET big = 8 WHERE id = 1;
COMMIT;
SELECT big FROM items WHERE id = 1;

-- A cross-database join
CREATE DATABASE other;
\c other
CREATE TABLE notes (id INTEGER PRIMARY KEY, item INTEGER, note TEXT);
INSERT INTO notes VALUES (1, 4, 'see item four');
SELECT n.note, i.name FROM notes n JOIN "default".public.items i ON i.id = n.item;
\c default

-- psql's catalog commands
CREATE TABLE parts (id INTEGER PRIMARY KEY, item INTEGER REFERENCES items(id),
  qty INTEGER DEFAULT 1 CHECK (qty > 0), label VARCHAR(20));
CREATE INDEX parts_item ON parts (item);
CREATE VIEW cheap AS SELECT id, name FROM items WHERE price < 10;
\l
\dt
\d
\di
\dv
\d items
\d parts
\d cheap
\d parts_item
\d no_such_relation

-- Errors
SELEC 1;
INSERT INTO items (id, name, code) VALUES (9, 'x', 'A-1');
INSERT INTO items (id) VALUES (10);
SELECT * FROM no_such_table;
SELECT count(*) FROM items;
