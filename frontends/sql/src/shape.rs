//! Statement shapes: a point query's text with its literals taken out.
//!
//! OLTP clients that do not prepare statements send the same query over and over with new
//! literals: `SELECT name FROM users WHERE id = 17`, then `… WHERE id = 4242`. Each text is
//! new, so a cache keyed by text never hits, and parsing is most of such a query's cost.
//! Here a text is read once, cheaply, into its *shape*: the text with each literal replaced
//! by a placeholder (`… WHERE id = $1`), and the literals. The session parses a shape once
//! ([`learn`]) and runs later texts of that shape as the parsed shape with their literals as
//! the parameters.
//!
//! That is only sound where a placeholder means exactly what the literal it stands for
//! means, so a shape is kept only when three things hold:
//!
//! * the reader is conservative: anything it does not fully understand (comments, `$` and
//!   `?`, escape and prefixed strings, exotic numbers) leaves the text unshaped;
//! * the text parses to exactly the shape's tree with the literals put back (the parser
//!   builds the same tree whatever a literal's value, so one text proves it for all);
//! * after rewriting, every placeholder is one side of a `column = placeholder` equality in
//!   the WHERE clause of a plain SELECT — where the fast path reads a placeholder and a
//!   literal the same way ([`crate::eval::literal`]), and nowhere else.
//!
//! Anything else runs from its own text, as before.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{self, Expr, SetExpr, Statement, Value};

use crate::types::Datum;

/// A text's shape: the text with its literals replaced by `$1`, `$2`, …, and the literals.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    /// The text with placeholders, then a NUL and one letter per literal (`n` a number,
    /// `s` a string): texts share a shape only with literals of the same kinds.
    pub key: String,
    pub literals: Vec<Value>,
}

impl Shape {
    /// The shape's text, with placeholders where the literals were.
    pub fn text(&self) -> &str {
        self.key.rsplit_once('\0').map_or("", |(text, _)| text)
    }

    /// The literals as parameter values, as the fast path reads literals.
    pub fn params(&self) -> Option<Vec<Datum>> {
        self.literals
            .iter()
            .map(|v| {
                crate::eval::literal(&Expr::value(v.clone()), &[])
                    .ok()
                    .flatten()
            })
            .collect()
    }
}

/// The shape of `sql`; `None` when it has no literal, or holds anything this reader leaves
/// alone.
pub fn of(sql: &str) -> Option<Shape> {
    // Only a SELECT can be learned: other texts are not read at all.
    let head = sql.trim_start().get(..7)?;
    if !head.eq_ignore_ascii_case("select ") && !head.eq_ignore_ascii_case("select\n") {
        return None;
    }
    let b = sql.as_bytes();
    let mut text = String::with_capacity(sql.len() + 8);
    let mut literals = Vec::new();
    let mut kinds = String::new();
    let mut i = 0;
    // Start of the run of text copied as it is.
    let mut copied = 0;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80;
    while i < b.len() {
        match b[i] {
            b'\'' => {
                // A prefixed string (E'…', X'…', N'…', U&'…') reads differently.
                if i > 0 && (ident(b[i - 1]) || b[i - 1] == b'&' || b[i - 1] == b'\'') {
                    return None;
                }
                let mut value = String::new();
                let mut j = i + 1;
                loop {
                    let close = j + b[j..].iter().position(|&c| c == b'\'')?;
                    value.push_str(&sql[j..close]);
                    if b.get(close + 1) == Some(&b'\'') {
                        value.push('\'');
                        j = close + 2;
                    } else {
                        j = close + 1;
                        break;
                    }
                }
                if value.contains('\\') || b.get(j).is_some_and(|&c| ident(c) || c == b'\'') {
                    return None;
                }
                text.push_str(&sql[copied..i]);
                literals.push(Value::SingleQuotedString(value));
                kinds.push('s');
                text.push_str(&format!("${}", literals.len()));
                i = j;
                copied = i;
            }
            b'"' => {
                // A quoted identifier, copied as it is.
                let mut j = i + 1;
                loop {
                    let close = j + b[j..].iter().position(|&c| c == b'"')?;
                    if b.get(close + 1) == Some(&b'"') {
                        j = close + 2;
                    } else {
                        j = close + 1;
                        break;
                    }
                }
                i = j;
            }
            b'0'..=b'9' => {
                if i > 0 && b[i - 1] == b'.' {
                    return None;
                }
                let start = i;
                while b.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                if b.get(i) == Some(&b'.') {
                    i += 1;
                    if !b.get(i).is_some_and(u8::is_ascii_digit) {
                        return None;
                    }
                    while b.get(i).is_some_and(u8::is_ascii_digit) {
                        i += 1;
                    }
                }
                if b.get(i)
                    .is_some_and(|&c| ident(c) || matches!(c, b'.' | b'\'' | b'"' | b'$'))
                {
                    return None;
                }
                text.push_str(&sql[copied..start]);
                literals.push(Value::Number(sql[start..i].to_string(), false));
                kinds.push('n');
                text.push_str(&format!("${}", literals.len()));
                copied = i;
            }
            c if ident(c) => {
                // A word: its digits are part of it.
                while b.get(i).is_some_and(|&c| ident(c)) {
                    i += 1;
                }
            }
            b'$' | b'?' | b'`' | b'\\' | b'#' | b'@' | b'[' | b'{' => return None,
            b'-' if b.get(i + 1) == Some(&b'-') => return None,
            b'/' if b.get(i + 1) == Some(&b'*') => return None,
            _ => i += 1,
        }
    }
    if literals.is_empty() {
        return None;
    }
    text.push_str(&sql[copied..]);
    // `… AS OF <literal>` is read from the text before parsing (time travel): a shape
    // never stands for it.
    let upper = text.to_ascii_uppercase();
    if upper.contains(" OF ") || upper.contains("\nOF ") {
        return None;
    }
    text.push('\0');
    text.push_str(&kinds);
    Some(Shape {
        key: text,
        literals,
    })
}

/// The statement a shape stands for, parsed and rewritten, if the shape may stand for its
/// texts (see the module docs): `sql` must parse to the shape's tree with the literals put
/// back, and every placeholder must be an equality of a plain SELECT's WHERE clause.
pub fn learn(sql: &str, shape: &Shape) -> Option<Statement> {
    let mut original = crate::planner::parse(sql).ok()?;
    let mut parsed = crate::planner::parse(shape.text()).ok()?;
    if original.len() != 1 || parsed.len() != 1 {
        return None;
    }
    let (original, mut template) = (original.pop()?, parsed.pop()?);
    let mut filled = template.clone();
    if !fill(&mut filled, &shape.literals) || filled != original {
        return None;
    }
    crate::planner::rewrite(&mut template);
    (point_equalities_only(&template) == Some(shape.literals.len())).then_some(template)
}

/// Put `literals` where their placeholders are; false if a placeholder has no literal.
fn fill(stmt: &mut Statement, literals: &[Value]) -> bool {
    let flow = ast::visit_expressions_mut(stmt, |e: &mut Expr| {
        if let Expr::Value(v) = e {
            if let Value::Placeholder(p) = &v.value {
                let n: Option<usize> = p.strip_prefix('$').and_then(|n| n.parse().ok());
                match n.and_then(|n| literals.get(n.checked_sub(1)?)) {
                    Some(lit) => v.value = lit.clone(),
                    None => return ControlFlow::Break(()),
                }
            }
        }
        ControlFlow::Continue(())
    });
    flow.is_continue()
}

/// How many placeholders `stmt` holds, if every one is a side of a `column = placeholder`
/// equality of a SELECT whose WHERE clause is a conjunction of equalities (what the fast
/// path reads); `None` otherwise.
fn point_equalities_only(stmt: &Statement) -> Option<usize> {
    let Statement::Query(q) = stmt else {
        return None;
    };
    let SetExpr::Select(select) = q.body.as_ref() else {
        return None;
    };
    let is_column = |e: &Expr| matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_));
    let mut in_equalities = 0;
    crate::fastpath::each_equality(select.selection.as_ref()?, &mut |left, right| {
        if (is_column(left) && is_placeholder(right)) || (is_placeholder(left) && is_column(right))
        {
            in_equalities += 1;
        }
        Some(())
    })?;
    let mut everywhere = 0;
    let _ = ast::visit_expressions(stmt, |e: &Expr| {
        if is_placeholder(e) {
            everywhere += 1;
        }
        ControlFlow::<()>::Continue(())
    });
    (everywhere == in_equalities).then_some(everywhere)
}

fn is_placeholder(e: &Expr) -> bool {
    matches!(e, Expr::Value(v) if matches!(v.value, Value::Placeholder(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_selects_are_read() {
        assert!(of("select a FROM t WHERE id = 1").is_some());
        assert!(of("  SELECT\na FROM t WHERE id = 1").is_some());
        for sql in [
            "INSERT INTO t VALUES (1)",
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
            "INSERT INTO t VALUES (1)",
            "UPDATE t SET a = 1 WHERE id = 2",
            "SELECT * FROM t WHERE id = 1; SELECT 2",
        ] {
            assert!(of(sql).is_none() || !learned(sql), "{sql}");
        }
    }

    #[test]
    fn a_learned_shape_with_its_literals_put_back_is_the_text() {
        let sql = "SELECT a, b AS c FROM t WHERE a = 'x''y' AND b = 7";
        let shape = of(sql).unwrap();
        let template = crate::planner::parse(shape.text()).unwrap().pop().unwrap();
        let mut filled = template.clone();
        assert!(fill(&mut filled, &shape.literals));
        assert_eq!(filled, crate::planner::parse(sql).unwrap().pop().unwrap());
        assert!(
            !fill(&mut template.clone(), &shape.literals[..1]),
            "a literal short"
        );
        assert_eq!(
            shape.params(),
            Some(vec![Datum::Text("x'y".into()), Datum::Int(7)])
        );
    }
}
