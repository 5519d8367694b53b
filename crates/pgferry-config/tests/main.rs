//! Integration tests of the task model: DMS JSON read as DMS reads it.

mod dms;
