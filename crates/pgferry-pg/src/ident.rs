//! Identifiers and literals in generated SQL.
//!
//! This is the only place pgferry turns a name into SQL text. Every identifier is always
//! double-quoted, so capitals, spaces, embedded quotes and keywords survive as they are.
//! Values travel as bind parameters; [`quote_literal`] exists only for the few statements
//! that take no parameters (`SET TRANSACTION SNAPSHOT`, replication commands).

use std::fmt;

use serde::{Deserialize, Serialize};

/// `"name"`, with embedded double quotes doubled.
pub fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// An escape-string literal, `E'...'`, that means the same whatever
/// `standard_conforming_strings` is.
pub fn quote_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 3);
    out.push_str("E'");
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Whether `name` can be shown without quotes: lower case letters, digits and `_`, not
/// starting with a digit. Only for messages; SQL always quotes.
fn is_plain(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$')
}

/// A schema-qualified relation name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QualifiedName {
    pub schema: String,
    pub name: String,
}

impl QualifiedName {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// `"schema"."name"`, for SQL.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

/// For people: `public.orders`, or `"Sales"."Order Lines"` where quotes are needed.
impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let part = |s: &str| {
            if is_plain(s) {
                s.to_owned()
            } else {
                quote_ident(s)
            }
        };
        write!(f, "{}.{}", part(&self.schema), part(&self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_always_quoted_and_quotes_doubled() {
        assert_eq!(quote_ident("orders"), "\"orders\"");
        assert_eq!(quote_ident("Order \"Lines\""), "\"Order \"\"Lines\"\"\"");
        assert_eq!(quote_ident("select"), "\"select\"");
        assert_eq!(quote_ident(""), "\"\"");
    }

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(quote_literal("00000003-1"), "E'00000003-1'");
        assert_eq!(quote_literal("it's \\ ok"), "E'it''s \\\\ ok'");
    }

    #[test]
    fn qualified_names_quote_for_sql_and_stay_readable_for_people() {
        let n = QualifiedName::new("public", "orders");
        assert_eq!(n.quoted(), "\"public\".\"orders\"");
        assert_eq!(n.to_string(), "public.orders");
        let odd = QualifiedName::new("Sales", "order lines");
        assert_eq!(odd.to_string(), "\"Sales\".\"order lines\"");
    }
}
