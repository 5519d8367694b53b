//! Logs go to standard error, in human or JSON form. While progress bars are drawn, a log
//! line first lifts the bars out of the way, so the two never garble each other.

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

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

/// Replaces the log filter, when neither `RUST_LOG` nor `-v` chose one.
type Reload = Box<dyn Fn(EnvFilter) + Send + Sync>;

static TASK_FILTER: OnceLock<Reload> = OnceLock::new();

pub fn init(format: LogFormat, verbose: u8) {
    let default = match verbose {
        0 => "warn,pgferry=info,pgferry_engine=info,pgferry_pg=info",
        1 => "info,pgferry=debug,pgferry_engine=debug,pgferry_pg=debug",
        _ => "debug,pgferry=trace,pgferry_engine=trace,pgferry_pg=trace",
    };
    let from_env = EnvFilter::try_from_default_env().ok();
    let overridable = from_env.is_none() && verbose == 0;
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_writer(AroundBars)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let reload: Reload = match format {
        LogFormat::Human => {
            let builder = builder
                .compact()
                .with_env_filter(filter)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            Box::new(move |f| {
                let _ = handle.reload(f);
            })
        }
        LogFormat::Json => {
            let builder = builder
                .json()
                .flatten_event(true)
                .with_env_filter(filter)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            Box::new(move |f| {
                let _ = handle.reload(f);
            })
        }
    };
    if overridable {
        let _ = TASK_FILTER.set(reload);
    }
}

/// Applies a task's log filter (`RUST_LOG` syntax). An invalid filter is reported and the
/// current one kept.
pub fn apply_task_filter(filter: &str) {
    let Some(reload) = TASK_FILTER.get() else {
        return;
    };
    match EnvFilter::try_new(filter) {
        Ok(f) => reload(f),
        Err(e) => tracing::warn!(filter, error = %e, "the task's log filter is not valid; ignored"),
    }
}
