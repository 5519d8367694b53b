//! Session settings for each kind of connection pgferry opens.
//!
//! Text COPY and row checksums depend on how values print, so every connection that moves
//! or hashes rows fixes the settings that change the text form of a value. Timeouts are off
//! because a chunk of a big table legitimately runs for minutes.

/// Settings that fix the text form of every value.
pub const CANONICAL_TEXT: &str = "SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; \
     SET extra_float_digits = 3; SET bytea_output = 'hex'; SET client_encoding = 'UTF8'; \
     SET TimeZone = 'UTC'; SET lc_monetary = 'C'; SET xmloption = content;";

/// No timeouts: a COPY of a big chunk, or an index build, may take a long time.
pub const NO_TIMEOUTS: &str = "SET statement_timeout = 0; SET lock_timeout = 0; \
     SET idle_in_transaction_session_timeout = 0;";

/// Reading on the source. `row_security = off` makes a table with row-level security that
/// would hide rows from us fail loudly instead of being copied incompletely.
pub fn source_reader() -> String {
    format!("{NO_TIMEOUTS} {CANONICAL_TEXT} SET row_security = off;")
}

/// Writing chunks on the target. Asynchronous commit is safe here: a chunk's rows and its
/// "done" mark commit in the same transaction, so a target crash loses both or neither,
/// and the chunk is simply copied again.
pub fn target_loader() -> String {
    format!("{NO_TIMEOUTS} {CANONICAL_TEXT} SET synchronous_commit = off;")
}
