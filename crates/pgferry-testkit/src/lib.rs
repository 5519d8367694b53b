//! Test and demo support for pgferry: throwaway PostgreSQL clusters ([`Cluster`]), sample
//! databases ([`datagen`]) and an independent row-for-row comparison ([`compare`]).
//!
//! The demo uses the same clusters and data as the tests, so what the README shows is what
//! the tests check.

pub mod cluster;
pub mod compare;
pub mod datagen;
pub mod disk;
pub mod http;
pub mod proxy;
pub mod s3;
pub mod smtp;
pub mod tls;
pub mod workload;

pub use cluster::{
    Cluster, ClusterError, ClusterOptions, Connector, StopMode, client_bindir_17, server_bindir,
    server_bindir_for,
};
