//! PostgreSQL's system catalogs over a session: what psql and drivers read.

use strata_sql::{Datum, Output, Session};

mod common;
use common::{engine, rows};

fn text(v: &str) -> Datum {
    Datum::Text(v.into())
}

async fn schema(s: &mut Session) {
    for sql in [
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, \
         price DECIMAL(10,2) DEFAULT 0, code VARCHAR(8))",
        "CREATE UNIQUE INDEX items_code ON items (code)",
        "CREATE TABLE parts (id BIGINT PRIMARY KEY, item INTEGER REFERENCES items(id), \
         qty INTEGER CHECK (qty > 0))",
        "CREATE VIEW cheap AS SELECT id, name FROM items WHERE price < 10",
    ] {
        s.execute(sql).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relations_columns_and_indexes() {
    let mut s = Session::new(engine());
    schema(&mut s).await;
    let relations = rows(
        &mut s,
        "SELECT c.relname, c.relkind, n.nspname FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace ORDER BY 1",
    )
    .await;
    let names: Vec<(String, String)> = relations
        .iter()
        .map(|r| (r[0].to_string(), r[1].to_string()))
        .collect();
    assert_eq!(
        names,
        [
            ("cheap", "v"),
            ("items", "r"),
            ("items_code", "i"),
            ("items_pkey", "i"),
            ("parts", "r"),
            ("parts_pkey", "i"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert!(relations.iter().all(|r| r[2] == text("public")));

    // Columns with their declared types, NOT NULL and defaults; unqualified names find the
    // catalogs too.
    let columns = rows(
        &mut s,
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, \
           (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d \
             WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef) \
         FROM pg_attribute a WHERE a.attrelid = 'items'::regclass AND a.attnum > 0 \
         ORDER BY a.attnum",
    )
    .await;
    assert_eq!(
        columns,
        vec![
            vec![text("id"), text("integer"), Datum::Bool(true), Datum::Null],
            vec![text("name"), text("text"), Datum::Bool(true), Datum::Null],
            vec![
                text("price"),
                text("numeric(10,2)"),
                Datum::Bool(false),
                text("0")
            ],
            vec![
                text("code"),
                text("character varying(8)"),
                Datum::Bool(false),
                Datum::Null
            ],
        ]
    );

    let indexes = rows(
        &mut s,
        "SELECT c2.relname, i.indisprimary, i.indisunique, pg_get_indexdef(i.indexrelid, 0, true) \
         FROM pg_catalog.pg_class c, pg_catalog.pg_class c2, pg_catalog.pg_index i \
         WHERE c.relname = 'items' AND c.oid = i.indrelid AND i.indexrelid = c2.oid \
         ORDER BY i.indisprimary DESC, c2.relname",
    )
    .await;
    assert_eq!(
        indexes,
        vec![
            vec![
                text("items_pkey"),
                Datum::Bool(true),
                Datum::Bool(true),
                text("CREATE UNIQUE INDEX items_pkey ON public.items USING btree (id)")
            ],
            vec![
                text("items_code"),
                Datum::Bool(false),
                Datum::Bool(true),
                text("CREATE UNIQUE INDEX items_code ON public.items USING btree (code)")
            ],
        ]
    );

    let constraints = rows(
        &mut s,
        "SELECT conname, contype, pg_get_constraintdef(oid, true), confrelid::regclass \
         FROM pg_constraint WHERE conrelid = 'parts'::regclass ORDER BY 1",
    )
    .await;
    assert_eq!(constraints.len(), 3, "{constraints:?}");
    let defs: Vec<String> = constraints.iter().map(|r| r[2].to_string()).collect();
    assert!(defs.contains(&"PRIMARY KEY (id)".to_string()), "{defs:?}");
    assert!(defs.contains(&"CHECK (qty > 0)".to_string()), "{defs:?}");
    assert!(
        defs.contains(&"FOREIGN KEY (item) REFERENCES items(id)".to_string()),
        "{defs:?}"
    );
    let fk = constraints.iter().find(|r| r[1] == text("f")).unwrap();
    assert_eq!(fk[3], text("items"));

    // A view's columns come from its query.
    let view = rows(
        &mut s,
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute \
         WHERE attrelid = 'cheap'::regclass ORDER BY attnum",
    )
    .await;
    assert_eq!(
        view,
        vec![
            vec![text("id"), text("bigint")],
            vec![text("name"), text("text")]
        ]
    );
    assert_eq!(
        rows(&mut s, "SELECT viewname FROM pg_views").await,
        vec![vec![text("cheap")]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oids_are_stable_and_follow_ddl() {
    let mut s = Session::new(engine());
    schema(&mut s).await;
    let oid = rows(&mut s, "SELECT oid FROM pg_class WHERE relname = 'items'").await;
    // The same oid in a later statement, as text (psql's way) or through ::regclass.
    assert_eq!(
        rows(
            &mut s,
            &format!(
                "SELECT relname, oid::regclass FROM pg_class WHERE oid = '{}'",
                oid[0][0]
            )
        )
        .await,
        vec![vec![text("items"), text("items")]]
    );
    assert_eq!(
        rows(&mut s, "SELECT 'items'::regclass").await,
        vec![oid[0].clone()]
    );
    // Inside a transaction, the catalogs follow its own DDL.
    s.execute("BEGIN").await.unwrap();
    s.execute("CREATE TABLE later (id INTEGER PRIMARY KEY)")
        .await
        .unwrap();
    assert_eq!(
        rows(
            &mut s,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'later'"
        )
        .await,
        vec![vec![Datum::Int(1)]]
    );
    s.execute("ROLLBACK").await.unwrap();
    assert_eq!(
        rows(
            &mut s,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'later'"
        )
        .await,
        vec![vec![Datum::Int(0)]]
    );
    // The catalogs are read-only; a point query on one is still a query of the catalog.
    for sql in [
        "INSERT INTO pg_catalog.pg_class (oid) VALUES (1)",
        "DELETE FROM pg_catalog.pg_class WHERE oid = 1",
        "DROP TABLE pg_catalog.pg_class",
    ] {
        let err = s.execute(sql).await.unwrap_err();
        assert!(err.to_string().contains("system catalog"), "{sql}: {err}");
    }
    assert_eq!(
        rows(
            &mut s,
            "SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid = pg_catalog.to_regclass('items')"
        )
        .await,
        vec![vec![text("items")]]
    );
    // An unknown name is an error, as in PostgreSQL.
    let err = s.execute("SELECT 'nope'::regclass").await.unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    // Unqualified, a table of one's own takes precedence over a catalog of that name;
    // qualified, the catalog is still there.
    s.execute("CREATE TABLE pg_views (x INTEGER PRIMARY KEY)")
        .await
        .unwrap();
    s.execute("INSERT INTO pg_views VALUES (7)").await.unwrap();
    assert_eq!(
        rows(&mut s, "SELECT * FROM pg_views").await,
        vec![vec![Datum::Int(7)]]
    );
    assert_eq!(
        rows(&mut s, "SELECT viewname FROM pg_catalog.pg_views").await,
        vec![vec![text("cheap")]]
    );
    // Every database lists the others.
    s.execute("CREATE DATABASE other").await.unwrap();
    assert_eq!(
        rows(&mut s, "SELECT datname FROM pg_database ORDER BY 1").await,
        vec![vec![text("default")], vec![text("other")]]
    );
    // The catalog functions read the current database's catalog.
    s.set_database("other").await.unwrap();
    assert_eq!(
        rows(
            &mut s,
            "SELECT current_database(), to_regclass('items'), pg_catalog.pg_get_viewdef('cheap')"
        )
        .await,
        vec![vec![text("other"), Datum::Null, Datum::Null]]
    );
    s.set_database("default").await.unwrap();
    assert_eq!(
        rows(&mut s, "SELECT current_database(), pg_get_viewdef('cheap')").await,
        vec![vec![
            text("default"),
            text("SELECT id, name FROM items WHERE price < 10")
        ]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_over_empty_catalogs_return_no_rows_whatever_they_use() {
    let mut s = Session::new(engine());
    schema(&mut s).await;
    // psql's publication query: arrays, set-returning functions, subscripts. It reads an
    // always-empty catalog through inner joins, so it has no rows and keeps its columns.
    let sql = "SELECT pubname, NULL, NULL FROM pg_catalog.pg_publication p \
       JOIN pg_catalog.pg_publication_namespace pn ON p.oid = pn.pnpubid \
       JOIN pg_catalog.pg_class pc ON pc.relnamespace = pn.pnnspid \
       WHERE pc.oid = '16386' \
     UNION \
     SELECT pubname, pg_get_expr(pr.prqual, c.oid), \
       (CASE WHEN pr.prattrs IS NOT NULL THEN \
         (SELECT string_agg(attname, ', ') \
            FROM pg_catalog.generate_series(0, pg_catalog.array_upper(pr.prattrs::pg_catalog.int2[], 1)) s, \
                 pg_catalog.pg_attribute WHERE attrelid = pr.prrelid AND attnum = prattrs[s]) \
        ELSE NULL END) \
     FROM pg_catalog.pg_publication p JOIN pg_catalog.pg_publication_rel pr ON p.oid = pr.prpubid \
       JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid \
     ORDER BY 1";
    match s.execute(sql).await.unwrap() {
        Output::Rows(r) => {
            assert_eq!(r.schema.fields().len(), 3);
            assert_eq!(r.schema.field(0).name(), "pubname");
            assert!(r.rows().unwrap().is_empty());
        }
        other => panic!("{other:?}"),
    }
    // An aggregate over an empty catalog still has its one row.
    assert_eq!(
        rows(&mut s, "SELECT count(*) FROM pg_catalog.pg_trigger").await,
        vec![vec![Datum::Int(0)]]
    );
    // A left join keeps the other side.
    assert_eq!(
        rows(
            &mut s,
            "SELECT c.relname, t.tgname FROM pg_catalog.pg_class c \
             LEFT JOIN pg_catalog.pg_trigger t ON t.tgrelid = c.oid WHERE c.relname = 'items'"
        )
        .await,
        vec![vec![text("items"), Datum::Null]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correlated_scalar_subqueries_yield_their_first_row() {
    let mut s = Session::new(engine());
    for sql in [
        "CREATE TABLE a (id INTEGER PRIMARY KEY, k INTEGER)",
        "CREATE TABLE b (id INTEGER PRIMARY KEY, k INTEGER, v TEXT)",
        "INSERT INTO a VALUES (1, 10), (2, 20), (3, 30)",
        "INSERT INTO b VALUES (1, 10, 'x'), (2, 10, 'y'), (3, 20, 'z')",
    ] {
        s.execute(sql).await.unwrap();
    }
    assert_eq!(
        rows(
            &mut s,
            "SELECT id, (SELECT v FROM b WHERE b.k = a.k ORDER BY v DESC) FROM a ORDER BY id"
        )
        .await,
        vec![
            vec![Datum::Int(1), text("y")],
            vec![Datum::Int(2), text("z")],
            vec![Datum::Int(3), Datum::Null],
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn now_is_the_transaction_start_in_values_and_defaults() {
    let mut s = Session::new(engine());
    s.execute("CREATE TABLE h (id INTEGER PRIMARY KEY, at TIMESTAMP, made TIMESTAMP DEFAULT CURRENT_TIMESTAMP)")
        .await
        .unwrap();
    s.execute("INSERT INTO h (id, at) VALUES (1, now())")
        .await
        .unwrap();
    s.execute("BEGIN").await.unwrap();
    s.execute("INSERT INTO h (id, at) VALUES (2, now()), (3, CURRENT_TIMESTAMP)")
        .await
        .unwrap();
    s.execute("INSERT INTO h (id, at) SELECT 4, now()")
        .await
        .unwrap();
    s.execute("COMMIT").await.unwrap();
    let got = rows(&mut s, "SELECT id, at, made FROM h ORDER BY id").await;
    assert!(
        got.iter().all(|r| matches!(r[1], Datum::Timestamp(_))),
        "{got:?}"
    );
    assert!(
        got.iter().all(|r| matches!(r[2], Datum::Timestamp(_))),
        "{got:?}"
    );
    // One transaction, one time.
    assert_eq!(got[1][1], got[2][1]);
    assert_eq!(got[1][1], got[3][1]);
    assert_eq!(got[1][1], got[1][2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn information_schema_lists_tables_columns_and_constraints() {
    let mut s = Session::new(engine());
    schema(&mut s).await;
    assert_eq!(
        rows(
            &mut s,
            "SELECT table_name, table_type FROM information_schema.tables \
             WHERE table_schema = 'public' ORDER BY 1"
        )
        .await,
        vec![
            vec![text("cheap"), text("VIEW")],
            vec![text("items"), text("BASE TABLE")],
            vec![text("parts"), text("BASE TABLE")],
        ]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT column_name, data_type, is_nullable, character_maximum_length, \
               numeric_precision, numeric_scale, column_default \
             FROM information_schema.columns WHERE table_name = 'items' ORDER BY ordinal_position"
        )
        .await,
        vec![
            vec![
                text("id"),
                text("integer"),
                text("NO"),
                Datum::Null,
                Datum::Int(32),
                Datum::Int(0),
                Datum::Null
            ],
            vec![
                text("name"),
                text("text"),
                text("NO"),
                Datum::Null,
                Datum::Null,
                Datum::Null,
                Datum::Null
            ],
            vec![
                text("price"),
                text("numeric"),
                text("YES"),
                Datum::Null,
                Datum::Int(10),
                Datum::Int(2),
                text("0")
            ],
            vec![
                text("code"),
                text("character varying"),
                text("YES"),
                Datum::Int(8),
                Datum::Null,
                Datum::Null,
                Datum::Null
            ],
        ]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT tc.constraint_type, k.column_name FROM information_schema.table_constraints tc \
             JOIN information_schema.key_column_usage k ON k.constraint_name = tc.constraint_name \
             WHERE tc.table_name = 'parts' ORDER BY 1"
        )
        .await,
        vec![
            vec![text("FOREIGN KEY"), text("item")],
            vec![text("PRIMARY KEY"), text("id")],
        ]
    );
    let err = s
        .execute("DELETE FROM information_schema.tables")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("system catalog"), "{err}");
}
