//! Integration tests of file sync against a real S3-compatible server.

mod sync;
