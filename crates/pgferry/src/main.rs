//! The `pgferry` command. A thin layer over the engine: it parses arguments, draws progress,
//! prints results, and decides the exit code, all in one place.

mod cli;
mod commands;
mod exit;
mod logging;
mod output;
mod progress;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    // pgferry passes its TLS provider explicitly, but libraries that use rustls's process
    // default would panic if two providers were compiled in and none was chosen.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    logging::init(cli.log_format, cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let json = match &cli.command {
        Command::Run(a) => a.task.json,
        Command::Stop(a) => a.task.json,
        Command::Cleanup(a) => a.json,
        Command::Status(a) => a.json,
        Command::Validate(a) => a.task.json,
        Command::Demo(_) => false,
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => commands::run::run(args).await,
            Command::Stop(args) => commands::cdc::stop(args).await,
            Command::Cleanup(args) => commands::cdc::cleanup(args).await,
            Command::Status(args) => commands::status::status(args).await,
            Command::Validate(args) => commands::validate::validate(args).await,
            Command::Demo(args) => commands::demo::demo(args).await,
        }
    });
    // Background tasks (connection drivers) must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = exit::code_for(&e);
            exit::report(&e, code, json);
            ExitCode::from(code)
        }
    }
}
