//! AWS DMS's JSON files, read as they are: table mappings and task settings.

mod mappings;
mod settings;

use std::fmt;

use serde::Deserialize;
use serde::de::DeserializeOwned;

pub use mappings::{DmsMappings, parse_mappings};
pub use settings::{DmsSettings, Sourced, parse_settings};

use crate::suggest::did_you_mean;

/// A problem in a DMS file, located by its JSON path and, where known, its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedError {
    pub file: String,
    /// `rules[3].object-locator.schema-name`.
    pub path: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for LocatedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.path.is_empty() && self.path != "." {
            write!(f, " at {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A scalar DMS writes as a string or as a number (or a boolean), whichever its author chose.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub(crate) enum Lenient {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Lenient {
    pub fn as_string(&self) -> String {
        match self {
            Lenient::Text(s) => s.clone(),
            Lenient::Int(i) => i.to_string(),
            Lenient::Float(f) => f.to_string(),
            Lenient::Bool(b) => b.to_string(),
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Lenient::Int(i) => Some(*i),
            Lenient::Float(f) if f.fract() == 0.0 => Some(*f as i64),
            Lenient::Text(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Lenient::Bool(b) => Some(*b),
            Lenient::Text(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Lenient::Text(s) if s.eq_ignore_ascii_case("false") => Some(false),
            Lenient::Int(i) => Some(*i != 0),
            _ => None,
        }
    }
}

/// Deserializes `text`, reporting the JSON path and line of the first problem, with the
/// nearest valid name when serde names what it expected.
pub(crate) fn parse_json<T: DeserializeOwned>(text: &str, file: &str) -> Result<T, LocatedError> {
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let line = (inner.line() > 0).then_some(inner.line());
        let mut message = inner.to_string();
        // serde_json appends " at line N column M"; the line is shown apart.
        if let Some(i) = message.rfind(" at line ") {
            message.truncate(i);
        }
        message.push_str(&suggestion(&message));
        LocatedError {
            file: file.to_owned(),
            path,
            line,
            message,
        }
    })
}

/// For serde's "unknown variant `x`, expected one of `a`, `b`" and "unknown field" messages,
/// the nearest expected name.
fn suggestion(message: &str) -> String {
    let ticked: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    match ticked.split_first() {
        Some((given, expected)) if message.starts_with("unknown") && !expected.is_empty() => {
            did_you_mean(given, expected)
        }
        _ => String::new(),
    }
}

/// The line on which element `index` of the top-level `rules` array starts, found by a scan
/// that knows JSON strings and nesting. For messages about a rule as a whole.
pub(crate) fn line_of_rule(text: &str, index: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let key = text.find("\"rules\"")?;
    let mut i = key + "\"rules\"".len();
    while i < bytes.len() && bytes[i] != b'[' {
        i += 1;
    }
    let (mut depth, mut in_string, mut escaped, mut seen) = (0usize, false, false, 0usize);
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    if depth == 1 && b == b'{' {
                        if seen == index {
                            return Some(text[..i].matches('\n').count() + 1);
                        }
                        seen += 1;
                    }
                    depth += 1;
                }
                b']' | b'}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return None;
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_found_by_line() {
        let text = "{\n  \"rules\": [\n    {\"a\": \"}{\"},\n    {\n      \"b\": [1, {\"c\": 2}]\n    },\n    {}\n  ]\n}";
        assert_eq!(line_of_rule(text, 0), Some(3));
        assert_eq!(line_of_rule(text, 1), Some(4));
        assert_eq!(line_of_rule(text, 2), Some(7));
        assert_eq!(line_of_rule(text, 3), None);
    }

    #[test]
    fn lenient_scalars_read_strings_and_numbers() {
        let v: Vec<Lenient> = serde_json::from_str(r#"["8", 8, 8.0, true, "false"]"#).unwrap();
        assert_eq!(v[0].as_i64(), Some(8));
        assert_eq!(v[1].as_i64(), Some(8));
        assert_eq!(v[2].as_i64(), Some(8));
        assert_eq!(v[3].as_bool(), Some(true));
        assert_eq!(v[4].as_bool(), Some(false));
        assert_eq!(v[1].as_string(), "8");
    }
}
