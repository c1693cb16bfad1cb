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
//!   the WHERE clause of a plain SELECT, or a whole value of a row of an `INSERT … VALUES`
//!   — where the fast path and the insert read a placeholder and a literal the same way
//!   ([`crate::eval::literal`]), and nowhere else.
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
    // Only a SELECT or an INSERT can be learned: other texts are not read at all.
    let head = sql.trim_start().get(..7)?;
    if !["select ", "select\n", "insert ", "insert\n"]
        .iter()
        .any(|h| head.eq_ignore_ascii_case(h))
    {
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
    let placeholders = match &template {
        Statement::Insert(_) => values_only(&template),
        _ => point_equalities_only(&template),
    };
    (placeholders == Some(shape.literals.len())).then_some(template)
}

/// Put `literals` where their placeholders are; false if a placeholder has no literal.
pub fn fill(stmt: &mut Statement, literals: &[Value]) -> bool {
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
    let everywhere = placeholders(stmt);
    (everywhere == in_equalities).then_some(everywhere)
}

/// How many placeholders `stmt` holds, if it is an `INSERT … VALUES` where each one is a
/// whole value of a row (`VALUES ($1, $2)`, not `-$1` or `$1 + 1`) and there are none
/// anywhere else. The insert reads such a value with [`crate::eval::literal`], the function
/// that turns the text's literals into the parameters, so a placeholder there is the literal.
fn values_only(stmt: &Statement) -> Option<usize> {
    let Statement::Insert(insert) = stmt else {
        return None;
    };
    let values = crate::dml::plain_values(insert.source.as_ref()?)?;
    let in_values = values
        .rows
        .iter()
        .flat_map(|row| row.content.iter())
        .filter(|e| is_placeholder(e))
        .count();
    let everywhere = placeholders(stmt);
    (everywhere == in_values).then_some(everywhere)
}

/// How many placeholders `stmt` holds, wherever they are.
fn placeholders(stmt: &Statement) -> usize {
    let mut n = 0;
    let _ = ast::visit_expressions(stmt, |e: &Expr| {
        if is_placeholder(e) {
            n += 1;
        }
        ControlFlow::<()>::Continue(())
    });
    n
}

fn is_placeholder(e: &Expr) -> bool {
    matches!(e, Expr::Value(v) if matches!(v.value, Value::Placeholder(_)))
}
