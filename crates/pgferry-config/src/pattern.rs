//! Name patterns with DMS wildcards.
//!
//! AWS DMS object locators use SQL `LIKE` wildcards: `%` matches any run of characters and
//! `_` matches exactly one. A literal `_` or `%` is written in brackets, `[_]`, as DMS
//! documents. Matching is case-sensitive, because PostgreSQL identifiers are.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    AnyOne,
    AnyRun,
}

/// A compiled `%`/`_` pattern for a schema or table name.
#[derive(Clone, PartialEq, Eq)]
pub struct NamePattern {
    source: String,
    tokens: Vec<Token>,
}

impl NamePattern {
    pub fn new(pattern: &str) -> Self {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::with_capacity(chars.len());
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '[' if i + 2 < chars.len() && chars[i + 2] == ']' => {
                    tokens.push(Token::Literal(chars[i + 1]));
                    i += 3;
                    continue;
                }
                '%' => {
                    if tokens.last() != Some(&Token::AnyRun) {
                        tokens.push(Token::AnyRun);
                    }
                }
                '_' => tokens.push(Token::AnyOne),
                c => tokens.push(Token::Literal(c)),
            }
            i += 1;
        }
        Self {
            source: pattern.to_owned(),
            tokens,
        }
    }

    /// The pattern as the user wrote it.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True when the pattern is a single `%`, which matches every name.
    pub fn matches_everything(&self) -> bool {
        self.tokens == [Token::AnyRun]
    }

    /// True when the pattern has no wildcard and so names exactly one object.
    pub fn is_exact(&self) -> bool {
        self.tokens.iter().all(|t| matches!(t, Token::Literal(_)))
    }

    pub fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        // Classic wildcard matching with one backtrack point for the last `%` seen.
        let (mut p, mut n) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while n < name.len() {
            match self.tokens.get(p) {
                Some(Token::Literal(c)) if *c == name[n] => {
                    p += 1;
                    n += 1;
                }
                Some(Token::AnyOne) => {
                    p += 1;
                    n += 1;
                }
                Some(Token::AnyRun) => {
                    star = Some((p, n));
                    p += 1;
                }
                _ => match star {
                    Some((sp, sn)) => {
                        p = sp + 1;
                        n = sn + 1;
                        star = Some((sp, sn + 1));
                    }
                    None => return false,
                },
            }
        }
        self.tokens[p..].iter().all(|t| *t == Token::AnyRun)
    }
}

/// A pattern that matches exactly `name`: its wildcard characters (and the bracket that
/// escapes) are written in brackets.
pub fn exact(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '%' | '_' | '[') {
            out.push('[');
            out.push(c);
            out.push(']');
        } else {
            out.push(c);
        }
    }
    out
}

impl fmt::Debug for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NamePattern({:?})", self.source)
    }
}

impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::NamePattern;

    fn m(p: &str, n: &str) -> bool {
        NamePattern::new(p).matches(n)
    }

    #[test]
    fn percent_matches_any_run_including_empty() {
        assert!(m("%", ""));
        assert!(m("%", "orders"));
        assert!(m("order%", "order"));
        assert!(m("order%", "order_lines"));
        assert!(m("%lines", "order_lines"));
        assert!(m("o%r%s", "orders"));
        assert!(!m("order%", "orde"));
    }

    #[test]
    fn underscore_matches_exactly_one_character() {
        assert!(m("t_", "t1"));
        assert!(!m("t_", "t"));
        assert!(!m("t_", "t12"));
        assert!(m("_é_", "aéb"), "one character, not one byte");
    }

    #[test]
    fn an_exact_pattern_matches_its_name_only() {
        for name in ["order_lines", "100%", "[x]", "a[_]b", "plain"] {
            let p = NamePattern::new(&super::exact(name));
            assert!(p.matches(name), "{name}");
            assert!(p.is_exact(), "{name}");
        }
        assert!(!NamePattern::new(&super::exact("t_")).matches("t1"));
    }

    #[test]
    fn brackets_escape_a_wildcard() {
        assert!(m("a[_]b", "a_b"));
        assert!(!m("a[_]b", "axb"));
        assert!(m("100[%]", "100%"));
        assert!(!m("100[%]", "1000"));
    }

    #[test]
    fn matching_is_case_sensitive() {
        assert!(!m("Orders", "orders"));
        assert!(m("Ord%", "Orders"));
    }

    #[test]
    fn backtracking_finds_late_matches() {
        assert!(m("%a%b%c", "xxaxxbxxaxbxc"));
        assert!(!m("%a%b%c", "xxaxxbxx"));
        assert!(m("%%x", "yyx"));
    }

    #[test]
    fn exactness_and_match_all_are_reported() {
        assert!(NamePattern::new("%").matches_everything());
        assert!(!NamePattern::new("a%").matches_everything());
        assert!(NamePattern::new("orders").is_exact());
        assert!(NamePattern::new("a[_]b").is_exact());
        assert!(!NamePattern::new("a_b").is_exact());
    }
}
