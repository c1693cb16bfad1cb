//! Database names: `letters, digits, '-', '_'`, and `/` to nest; at most 128 characters.

use crate::error::{EngineError, Result};

pub const MAX_NAME_LEN: usize = 128;

/// Check a database name, returning it unchanged when valid.
pub fn validate_name(name: &str) -> Result<&str> {
    let bad = |reason| {
        Err(EngineError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("it is longer than 128 characters");
    }
    if name.starts_with('/') || name.starts_with('.') {
        return bad("it starts with '/' or '.'");
    }
    if name.ends_with('/') {
        return bad("it ends with '/'");
    }
    if name.contains("//") {
        return bad("it contains '//'");
    }
    if name.contains("..") {
        return bad("it contains '..'");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/'))
    {
        return bad("only letters, digits, '-', '_' and '/' are allowed");
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_and_nested_names() {
        for n in [
            "default",
            "a",
            "team-1/orders_2024",
            "A/B/C",
            &"x".repeat(128),
        ] {
            assert!(validate_name(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn rejects_unsafe_names() {
        for n in [
            "",
            "/abs",
            ".hidden",
            "a//b",
            "a/../b",
            "a/",
            "sp ace",
            "é",
            &"x".repeat(129),
            "a.b",
        ] {
            assert!(validate_name(n).is_err(), "{n:?}");
        }
    }
}
