//! `add-column` expressions: SQL text with `$column` references, read by a lexer that agrees
//! with PostgreSQL's on where strings, identifiers and parentheses begin and end.

/// A part of an `add-column` expression: SQL text, or a reference to a source column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExprPart {
    Sql(String),
    /// A column, by its *target* name.
    Column(String),
}

/// Splits a DMS expression into SQL text and `$column` references.
///
/// This is a lexer, not a guess: it reads string literals (`'...'` with `''`), quoted
/// identifiers (`"..."` with `""`) and everything between them the way PostgreSQL's own
/// lexer does, so that what it calls balanced is balanced for the server too. What the two
/// could read differently is refused rather than handled: comments (`--`, `/* */`), escape
/// strings (`E'...'`, whose backslashes hide quotes), dollar quotes, `;`, and a
/// parenthesis closed before it was opened. An expression that passes can therefore never
/// close the parenthesis pgferry wraps it in. The server's parser checks it again before it
/// is used (`engine::transform`). DMS's row headers (`$AR_H_...`, `$AR_M_...`) name things
/// that have no PostgreSQL-to-PostgreSQL meaning and are refused.
pub fn parse_expression(expr: &str) -> Result<Vec<ExprPart>, String> {
    let refuse = |what: &str| Err(format!("expression {expr:?} {what}"));
    let mut parts = Vec::new();
    let mut sql = String::new();
    let mut chars = expr.chars().peekable();
    let mut depth = 0i32;
    // The character before the current token, to tell `E'...'` from `name'...'`.
    let mut prev: Option<char> = None;
    let mut prev2: Option<char> = None;
    let is_ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$');
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                if c == '\'' && matches!(prev, Some('e' | 'E')) && !is_ident(prev2) {
                    return refuse(
                        "uses an escape string (E'...'), whose backslashes pgferry does not \
                         read; write a standard '...' literal",
                    );
                }
                sql.push(c);
                let mut closed = false;
                while let Some(n) = chars.next() {
                    sql.push(n);
                    if n == c {
                        if chars.peek() == Some(&c) {
                            sql.push(c);
                            chars.next();
                        } else {
                            closed = true;
                            break;
                        }
                    }
                }
                if !closed {
                    return refuse(if c == '\'' {
                        "has an unclosed quote"
                    } else {
                        "has an unclosed double quote"
                    });
                }
            }
            '$' => {
                let mut name = String::new();
                while let Some(&n) = chars.peek() {
                    if n.is_alphanumeric() || n == '_' {
                        name.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if name.is_empty() {
                    return refuse(
                        "has a `$` without a column name (dollar quoting is not accepted)",
                    );
                }
                if name.starts_with("AR_H_") || name.starts_with("AR_M_") {
                    return Err(format!(
                        "expression {expr:?} uses the DMS header ${name}, which pgferry does not \
                         support; use only the row's columns"
                    ));
                }
                if !sql.is_empty() {
                    parts.push(ExprPart::Sql(std::mem::take(&mut sql)));
                }
                parts.push(ExprPart::Column(name));
                prev2 = None;
                prev = Some('"');
                continue;
            }
            '-' if chars.peek() == Some(&'-') => return refuse("may not contain a comment (`--`)"),
            '/' if chars.peek() == Some(&'*') => return refuse("may not contain a comment (`/*`)"),
            ';' => return refuse("may not contain `;`"),
            '\\' => return refuse("may not contain a backslash outside a quoted literal"),
            '(' | ')' => {
                depth += if c == '(' { 1 } else { -1 };
                if depth < 0 {
                    return refuse("closes a parenthesis it never opened");
                }
                sql.push(c);
            }
            c => sql.push(c),
        }
        prev2 = prev;
        prev = Some(c);
    }
    if depth != 0 {
        return refuse("leaves a parenthesis open");
    }
    if parts.is_empty() && sql.trim().is_empty() {
        return refuse("is empty");
    }
    if !sql.is_empty() {
        parts.push(ExprPart::Sql(sql));
    }
    Ok(parts)
}
