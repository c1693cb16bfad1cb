//! Statement shapes: which texts have one, what it is, and that a learned shape with its
//! literals put back is the text it came from.

use strata_sql::datafusion::sql::sqlparser::ast::Statement;
use strata_sql::datafusion::sql::sqlparser::ast::Value;
use strata_sql::datafusion::sql::sqlparser::dialect::GenericDialect;
use strata_sql::datafusion::sql::sqlparser::parser::{Parser, ParserError};
use strata_sql::shape::{fill, learn, of};
use strata_sql::Datum;

fn parse(sql: &str) -> Result<Vec<Statement>, ParserError> {
    Parser::parse_sql(&GenericDialect {}, sql)
}

#[test]
fn only_selects_and_inserts_are_read() {
    assert!(of("select a FROM t WHERE id = 1").is_some());
    assert!(of("  SELECT\na FROM t WHERE id = 1").is_some());
    assert!(of("INSERT INTO t VALUES (1)").is_some());
    assert!(of("insert\ninto t VALUES (1)").is_some());
    for sql in [
        "UPDATE t SET a = 1 WHERE id = 2",
        "DELETE FROM t WHERE id = 2",
        "WITH x AS (SELECT 1) SELECT * FROM x",
        "SEL",
    ] {
        assert_eq!(of(sql), None, "{sql}");
    }
}

#[test]
fn a_nul_in_the_text_stays_in_the_shape() {
    let shape = of("SELECT \"a\0b\" FROM t WHERE id = 1").unwrap();
    assert_eq!(shape.text(), "SELECT \"a\0b\" FROM t WHERE id = $1");
}

fn shape(sql: &str) -> Option<(String, Vec<Value>)> {
    of(sql).map(|s| (s.text().to_string(), s.literals))
}

fn num(n: &str) -> Value {
    Value::Number(n.into(), false)
}

fn text(s: &str) -> Value {
    Value::SingleQuotedString(s.into())
}

#[test]
fn literals_become_numbered_placeholders() {
    assert_eq!(
        shape("SELECT name FROM users WHERE id = 17 AND tag = 'it''s' AND t2.x = 1.50"),
        Some((
            "SELECT name FROM users WHERE id = $1 AND tag = $2 AND t2.x = $3".into(),
            vec![num("17"), text("it's"), num("1.50")]
        ))
    );
    // Digits inside words and quoted identifiers are not literals.
    assert_eq!(
        shape("SELECT \"col 1\" FROM t1 WHERE c2 = 3"),
        Some((
            "SELECT \"col 1\" FROM t1 WHERE c2 = $1".into(),
            vec![num("3")]
        ))
    );
}

#[test]
fn texts_differing_only_in_literals_share_a_shape_if_the_kinds_agree() {
    let a = of("SELECT * FROM t WHERE id = 1").unwrap();
    let b = of("SELECT * FROM t WHERE id = 2000").unwrap();
    let c = of("SELECT * FROM t WHERE id = '1'").unwrap();
    assert_eq!(a.key, b.key);
    assert_ne!(a.key, c.key);
}

#[test]
fn anything_unusual_leaves_the_text_unshaped() {
    for sql in [
        "SELECT * FROM t",
        "SELECT * FROM t WHERE id = $1",
        "SELECT * FROM t WHERE id = ?",
        "SELECT * FROM t WHERE id = 1 -- one",
        "SELECT * FROM t WHERE id = /* one */ 1",
        "SELECT * FROM t WHERE s = E'a'",
        "SELECT * FROM t WHERE s = X'0a'",
        "SELECT * FROM t WHERE s = 'a\\'",
        "SELECT * FROM t WHERE s = 'unterminated",
        "SELECT * FROM t WHERE id = 1e5",
        "SELECT * FROM t WHERE id = 0x10",
        "SELECT * FROM t WHERE id = .5",
        "SELECT * FROM t WHERE id = 5.",
        "SELECT * FROM t WHERE s = $$a$$",
        "SELECT * FROM t AS OF 12",
    ] {
        assert_eq!(shape(sql), None, "{sql}");
    }
}

fn learned(sql: &str) -> bool {
    learn(sql, &of(sql).unwrap()).is_some()
}

#[test]
fn only_key_equalities_of_a_plain_select_are_learned() {
    assert!(learned("SELECT name FROM users WHERE id = 17"));
    assert!(learned("SELECT * FROM t WHERE a = 1 AND (b = 'x')"));
    assert!(learned("SELECT * FROM t WHERE 1 = a"));
    for sql in [
        // A literal elsewhere: its meaning is the literal's, not a parameter's.
        "SELECT name, 1 FROM users WHERE id = 17",
        "SELECT * FROM t WHERE id = 1 ORDER BY 1",
        "SELECT * FROM t WHERE id = 1 LIMIT 5",
        "SELECT * FROM t WHERE id > 1",
        "SELECT * FROM t WHERE id = -1",
        "SELECT * FROM t WHERE id = 1 + 1",
        "SELECT * FROM t WHERE d = DATE '2020-01-01'",
        "SELECT * FROM t WHERE id = 1 OR id = 2",
        "UPDATE t SET a = 1 WHERE id = 2",
        "SELECT * FROM t WHERE id = 1; SELECT 2",
    ] {
        assert!(of(sql).is_none() || !learned(sql), "{sql}");
    }
}

#[test]
fn only_whole_values_of_an_insert_are_learned() {
    assert!(learned("INSERT INTO t VALUES (1, 'a', 2.5)"));
    assert!(learned("insert into t (b, a) values ('x', 7), (NULL, 8)"));
    assert!(learned(
        "INSERT INTO t VALUES (1, 'a') ON CONFLICT DO NOTHING"
    ));
    for sql in [
        // A literal inside an expression, or outside the rows: its meaning is its own.
        "INSERT INTO t VALUES (-1)",
        "INSERT INTO t VALUES (1 + 1)",
        "INSERT INTO t VALUES (CAST('1' AS INTEGER))",
        "INSERT INTO t VALUES (DATE '2020-01-01')",
        "INSERT INTO t VALUES (1) RETURNING id, 2",
        "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = 2",
        "INSERT INTO t SELECT 1",
        "INSERT INTO t SELECT * FROM u WHERE id = 1",
        "INSERT INTO t VALUES (1) ORDER BY 1",
        "INSERT INTO t VALUES (1); SELECT 2",
    ] {
        assert!(of(sql).is_none() || !learned(sql), "{sql}");
    }
}

#[test]
fn a_learned_shape_with_its_literals_put_back_is_the_text() {
    let sql = "SELECT a, b AS c FROM t WHERE a = 'x''y' AND b = 7";
    let shape = of(sql).unwrap();
    let template = parse(shape.text()).unwrap().pop().unwrap();
    let mut filled = template.clone();
    assert!(fill(&mut filled, &shape.literals));
    assert_eq!(filled, parse(sql).unwrap().pop().unwrap());
    assert!(
        !fill(&mut template.clone(), &shape.literals[..1]),
        "a literal short"
    );
    assert_eq!(
        shape.params(),
        Some(vec![Datum::Text("x'y".into()), Datum::Int(7)])
    );
}
