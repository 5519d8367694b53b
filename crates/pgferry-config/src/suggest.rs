//! "Did you mean ...?" for names a user mistyped.

/// ` (did you mean "x"?)` for the candidate nearest to `given`, or nothing when none is
/// close enough to be a likely typo.
pub fn did_you_mean(given: &str, candidates: &[&str]) -> String {
    nearest(given, candidates)
        .map(|c| format!(" (did you mean {c:?}?)"))
        .unwrap_or_default()
}

/// The candidate nearest to `given`, when it is within a third of its length in edits.
pub fn nearest<'a>(given: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let given_lower = given.to_lowercase();
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(&given_lower, &c.to_lowercase()), *c))
        .filter(|(d, c)| *d > 0 || given != *c)
        .min_by_key(|(d, _)| *d)
        .filter(|(d, c)| *d <= (c.chars().count() / 3).max(1))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_names_are_suggested_and_far_ones_are_not() {
        assert_eq!(nearest("exclud", &["include", "exclude"]), Some("exclude"));
        assert_eq!(nearest("EXCLUDE", &["include", "exclude"]), Some("exclude"));
        assert_eq!(nearest("zzz", &["include", "exclude"]), None);
        assert_eq!(
            did_you_mean("rule-actoin", &["rule-action"]),
            " (did you mean \"rule-action\"?)"
        );
    }
}
