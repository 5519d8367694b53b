//! Logs go to standard error, in human or JSON form. While progress bars are drawn, a log
//! line first lifts the bars out of the way, so the two never garble each other.

use std::io::{IsTerminal, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::cli::LogFormat;

/// Writes a log line around the progress bars.
#[derive(Clone, Copy)]
struct AroundBars;

impl Write for AroundBars {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        crate::progress::suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for AroundBars {
    type Writer = AroundBars;
    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

pub fn init(format: LogFormat, verbose: u8) {
    let default = match verbose {
        0 => "warn,pgferry=info,pgferry_engine=info,pgferry_pg=info",
        1 => "info,pgferry=debug,pgferry_engine=debug,pgferry_pg=debug",
        _ => "debug,pgferry=trace,pgferry_engine=trace,pgferry_pg=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(AroundBars)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    match format {
        LogFormat::Human => builder.compact().init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
