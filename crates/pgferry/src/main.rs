//! The `pgferry` command. A thin layer over the engine: it parses arguments, draws progress,
//! prints results, and decides the exit code, all in one place.

mod cli;
mod commands;
mod exit;
mod logging;
mod output;
mod progress;
mod watch;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command, ConfigCommand, FilesCommand};

fn main() -> ExitCode {
    // pgferry passes its TLS provider explicitly, but libraries that use rustls's process
    // default would panic if two providers were compiled in and none was chosen.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // `files` needs the raw matches: the order of --include and --exclude decides.
    let files_matches = matches
        .subcommand_matches("files")
        .and_then(|m| m.subcommand().map(|(_, sub)| sub.clone()));
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
        Command::Assess(a) => a.task.json,
        Command::Run(a) => a.task.json,
        Command::Stop(a) => a.task.json,
        Command::Cutover(a) | Command::Rollback(a) => a.task.json,
        Command::Finish(a) => a.task.json,
        Command::Cleanup(a) => a.json,
        Command::Status(a) => a.json,
        Command::Alarms(a) => a.json,
        Command::Validate(a) => a.task.json,
        Command::Demo(_) => false,
        Command::Files(FilesCommand::Sync(a)) => a.target.json,
        Command::Files(FilesCommand::Verify(a)) => a.target.json,
        Command::Config(ConfigCommand::Explain(a)) => a.json,
        Command::Config(ConfigCommand::Convert(_)) => false,
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Assess(args) => commands::interruptible(commands::assess::assess(args)).await,
            Command::Run(args) => commands::run::run(args).await,
            Command::Stop(args) => commands::interruptible(commands::cdc::stop(args)).await,
            Command::Cutover(args) => {
                commands::interruptible(commands::cutover::cutover(args)).await
            }
            Command::Rollback(args) => {
                commands::interruptible(commands::cutover::rollback(args)).await
            }
            Command::Finish(args) => commands::interruptible(commands::cutover::finish(args)).await,
            Command::Cleanup(args) => commands::interruptible(commands::cdc::cleanup(args)).await,
            Command::Status(args) => commands::interruptible(commands::status::status(args)).await,
            Command::Alarms(args) => commands::interruptible(commands::alarms::alarms(args)).await,
            Command::Validate(args) => {
                commands::interruptible(commands::validate::validate(args)).await
            }
            Command::Demo(args) => commands::demo::demo(args).await,
            Command::Files(FilesCommand::Sync(args)) => {
                commands::files::sync(*args, files_matches.as_ref()).await
            }
            Command::Config(ConfigCommand::Explain(args)) => commands::config::explain(args),
            Command::Config(ConfigCommand::Convert(args)) => commands::config::convert(args),
            Command::Files(FilesCommand::Verify(args)) => {
                commands::files::verify(*args, files_matches.as_ref()).await
            }
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
