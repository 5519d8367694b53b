//! `--include` and `--exclude`, with the semantics of `aws s3 sync`: every file is
//! included at first, the rules apply in the order given, and the last rule that matches
//! decides. Patterns match the path relative to the source directory; `*` also matches
//! `/`, `?` one character, `[abc]` a set.

use globset::{Glob, GlobMatcher};

use crate::FilesError;

/// One `--include` or `--exclude`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterRule {
    Include(String),
    Exclude(String),
}

/// The compiled rules, in order.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    rules: Vec<(bool, GlobMatcher)>,
}

impl Filter {
    pub fn new(rules: &[FilterRule]) -> Result<Self, FilesError> {
        let rules = rules
            .iter()
            .map(|rule| {
                let (include, pattern) = match rule {
                    FilterRule::Include(p) => (true, p),
                    FilterRule::Exclude(p) => (false, p),
                };
                let glob = Glob::new(pattern).map_err(|e| {
                    FilesError::bad_input(
                        format!("the pattern {pattern:?} is not a valid glob: {e}"),
                        Some("use *, ?, [abc] and {a,b}; quote the pattern so the shell leaves it alone"),
                    )
                })?;
                Ok((include, glob.compile_matcher()))
            })
            .collect::<Result<_, FilesError>>()?;
        Ok(Filter { rules })
    }

    /// Whether a file (its `/`-separated path relative to the source root) is synced.
    pub fn includes(&self, relative: &str) -> bool {
        self.rules
            .iter()
            .rev()
            .find(|(_, glob)| glob.is_match(relative))
            .is_none_or(|(include, _)| *include)
    }

    /// Whether any rule can exclude a file: when none can, `--delete` need not check.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(rules: &[(&str, &str)]) -> Filter {
        let rules: Vec<FilterRule> = rules
            .iter()
            .map(|(kind, p)| match *kind {
                "in" => FilterRule::Include(p.to_string()),
                _ => FilterRule::Exclude(p.to_string()),
            })
            .collect();
        Filter::new(&rules).unwrap()
    }

    #[test]
    fn the_last_matching_rule_decides() {
        let f = filter(&[("ex", "*"), ("in", "*.jpg")]);
        assert!(f.includes("a/b/c.jpg"));
        assert!(!f.includes("a/b/c.png"));
        let f = filter(&[("in", "*.jpg"), ("ex", "*")]);
        assert!(!f.includes("c.jpg"));
        let f = filter(&[("ex", "tmp/*")]);
        assert!(!f.includes("tmp/x/y"));
        assert!(f.includes("other/tmp/x"));
        assert!(filter(&[]).includes("anything"));
    }

    #[test]
    fn a_bad_pattern_is_a_clear_error() {
        let e = Filter::new(&[FilterRule::Include("a[".into())]).unwrap_err();
        assert!(e.to_string().contains("a["), "{e}");
    }
}
