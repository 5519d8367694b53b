//! Live progress: bars on a terminal, log lines otherwise.
//!
//! On a terminal there is one overall bar (phase, tables, rows, bytes, rates) and one bar
//! per table being copied. When standard error is not a terminal (CI, `nohup`, a pipe)
//! the same numbers are logged every few seconds instead. Rates are averaged over the
//! last few seconds, so they follow the load without flickering.

use std::collections::{HashMap, VecDeque};
use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{
    HumanBytes, HumanCount, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle,
};
use pgferry_engine::{RunProgress, TableProgress, TableState};
use tokio::sync::watch;

static BARS: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// Redraw interval of the bars.
const DRAW_EVERY: Duration = Duration::from_millis(200);
/// Interval of progress log lines when there is no terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Window over which rates are averaged.
const RATE_WINDOW: Duration = Duration::from_secs(3);

fn bars() -> std::sync::MutexGuard<'static, Option<MultiProgress>> {
    BARS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `f` with the bars lifted off the screen, if any are drawn.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    let multi = bars().clone();
    match multi {
        Some(m) => m.suspend(f),
        None => f(),
    }
}

/// Prints a line above the bars (or plainly, when none are drawn).
pub fn say(line: &str) {
    suspend(|| println!("{line}"));
}

/// Removes the bars, before a final message.
pub fn clear() {
    if let Some(m) = bars().take() {
        let _ = m.clear();
    }
}

/// Whether bars can be drawn.
pub fn interactive(no_progress: bool) -> bool {
    !no_progress && std::io::stderr().is_terminal()
}

/// A rate over a sliding window.
#[derive(Default)]
struct Rate {
    samples: VecDeque<(Instant, i64)>,
}

impl Rate {
    fn update(&mut self, value: i64) -> f64 {
        let now = Instant::now();
        self.samples.push_back((now, value));
        while self.samples.len() > 2 && now.duration_since(self.samples[0].0) > RATE_WINDOW {
            self.samples.pop_front();
        }
        let (t0, v0) = self.samples[0];
        let secs = now.duration_since(t0).as_secs_f64();
        if secs < 0.2 {
            return 0.0;
        }
        (value - v0).max(0) as f64 / secs
    }
}

struct Totals {
    tables: usize,
    loaded: usize,
    rows: i64,
    bytes: i64,
    fraction: f64,
}

fn totals(tables: &[Arc<TableProgress>]) -> Totals {
    let weight: f64 = tables
        .iter()
        .map(|t| t.estimated_bytes.max(1) as f64)
        .sum::<f64>()
        .max(1.0);
    Totals {
        tables: tables.len(),
        loaded: tables
            .iter()
            .filter(|t| t.state() == TableState::Loaded)
            .count(),
        rows: tables.iter().map(|t| t.rows()).sum(),
        bytes: tables.iter().map(|t| t.bytes()).sum(),
        fraction: tables
            .iter()
            .map(|t| t.fraction() * t.estimated_bytes.max(1) as f64)
            .sum::<f64>()
            / weight,
    }
}

fn lag_text(ms: Option<i64>) -> String {
    match ms {
        Some(ms) if ms < 1000 => format!("{ms} ms"),
        Some(ms) => format!("{:.1} s", ms as f64 / 1000.0),
        None => "-".to_owned(),
    }
}

/// One line of CDC figures: lag, changes applied, WAL held on the source.
fn cdc_line(live: &pgferry_engine::CdcLive) -> String {
    let t = &live.totals;
    let mut line = format!(
        "lag source {} · target {} · {} ins · {} upd · {} del · {} txns",
        lag_text(live.lag.source_ms),
        lag_text(live.lag.target_ms),
        HumanCount(t.inserts.max(0) as u64),
        HumanCount(t.updates.max(0) as u64),
        HumanCount(t.deletes.max(0) as u64),
        HumanCount(t.transactions.max(0) as u64),
    );
    if let Some(b) = live.wal_retained_bytes {
        line.push_str(&format!(" · slot holds {}", HumanBytes(b.max(0) as u64)));
    }
    line
}

fn rate_text(rows_per_s: f64, bytes_per_s: f64) -> String {
    format!(
        "{} rows/s · {}/s",
        HumanCount(rows_per_s as u64),
        HumanBytes(bytes_per_s as u64)
    )
}

/// Draws or logs a run's progress until stopped.
pub struct Display {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Display {
    pub fn start(progress: Arc<RunProgress>, interactive: bool) -> Display {
        let (stop, stopped) = watch::channel(false);
        let task = if interactive {
            tokio::spawn(draw(progress, stopped))
        } else {
            tokio::spawn(log(progress, stopped))
        };
        Display { stop, task }
    }

    /// Stops drawing and removes the bars.
    pub async fn finish(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        clear();
    }
}

async fn draw(progress: Arc<RunProgress>, mut stopped: watch::Receiver<bool>) {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(5));
    *bars() = Some(multi.clone());
    let overall_style = ProgressStyle::with_template(
        "{spinner:.green} {prefix:<24.bold} [{bar:30.cyan/blue}] {percent:>3}%  {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let table_style =
        ProgressStyle::with_template("  {prefix:<30.dim} [{bar:30}] {percent:>3}%  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    let overall = multi.add(ProgressBar::new(1000).with_style(overall_style));
    overall.enable_steady_tick(Duration::from_millis(120));
    let mut table_bars: HashMap<i32, (ProgressBar, Rate, Rate)> = HashMap::new();
    let (mut rows_rate, mut bytes_rate) = (Rate::default(), Rate::default());
    loop {
        let phase = progress.phase();
        let tables = progress.tables();
        let t = totals(&tables);
        overall.set_prefix(phase.clone());
        let steps_total = progress.steps_total.load(Ordering::Relaxed);
        if let (true, Some(live)) = (phase.starts_with("cdc"), progress.cdc()) {
            overall.set_position(1000);
            overall.set_message(cdc_line(&live));
        } else if phase == "indexes and constraints" && steps_total > 0 {
            let done = progress.steps_done.load(Ordering::Relaxed);
            overall.set_position(u64::from(done) * 1000 / u64::from(steps_total));
            overall.set_message(format!("{done}/{steps_total} schema objects"));
        } else {
            overall.set_position((t.fraction * 1000.0) as u64);
            overall.set_message(format!(
                "{}/{} tables · {} rows · {} · {}",
                t.loaded,
                t.tables,
                HumanCount(t.rows.max(0) as u64),
                HumanBytes(t.bytes.max(0) as u64),
                rate_text(rows_rate.update(t.rows), bytes_rate.update(t.bytes))
            ));
        }
        for table in &tables {
            let state = table.state();
            match (state, table_bars.contains_key(&table.table_id)) {
                (TableState::Loading, false) => {
                    let bar = multi.add(ProgressBar::new(1000).with_style(table_style.clone()));
                    let mut name = table.name.to_string();
                    if name.chars().count() > 30 {
                        name = format!("{}…", name.chars().take(29).collect::<String>());
                    }
                    bar.set_prefix(name);
                    table_bars.insert(table.table_id, (bar, Rate::default(), Rate::default()));
                }
                (TableState::Loaded | TableState::Failed, true) => {
                    if let Some((bar, _, _)) = table_bars.remove(&table.table_id) {
                        bar.finish_and_clear();
                        multi.remove(&bar);
                    }
                }
                _ => {}
            }
            if let Some((bar, rows, bytes)) = table_bars.get_mut(&table.table_id) {
                bar.set_position((table.fraction() * 1000.0) as u64);
                bar.set_message(format!(
                    "{} rows · {} · {}",
                    HumanCount(table.rows().max(0) as u64),
                    HumanBytes(table.bytes().max(0) as u64),
                    rate_text(rows.update(table.rows()), bytes.update(table.bytes()))
                ));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(DRAW_EVERY) => {}
            _ = stopped.changed() => break,
        }
    }
    for (_, (bar, _, _)) in table_bars {
        bar.finish_and_clear();
    }
    overall.finish_and_clear();
}

async fn log(progress: Arc<RunProgress>, mut stopped: watch::Receiver<bool>) {
    let (mut rows_rate, mut bytes_rate) = (Rate::default(), Rate::default());
    let mut last_phase = String::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LOG_EVERY) => {}
            _ = stopped.changed() => break,
        }
        let phase = progress.phase();
        let tables = progress.tables();
        let t = totals(&tables);
        let rates = rate_text(rows_rate.update(t.rows), bytes_rate.update(t.bytes));
        if let (true, Some(live)) = (phase.starts_with("cdc"), progress.cdc()) {
            tracing::info!("progress: {phase}: {}", cdc_line(&live));
        } else if phase == "load" || phase != last_phase {
            let steps_total = progress.steps_total.load(Ordering::Relaxed);
            if phase == "indexes and constraints" && steps_total > 0 {
                tracing::info!(
                    "progress: {phase}: {}/{steps_total} schema objects",
                    progress.steps_done.load(Ordering::Relaxed)
                );
            } else {
                tracing::info!(
                    "progress: {phase}: {}/{} tables, {} rows, {}, {:.0}% ({rates})",
                    t.loaded,
                    t.tables,
                    t.rows,
                    HumanBytes(t.bytes.max(0) as u64),
                    t.fraction * 100.0
                );
            }
        }
        last_phase = phase;
    }
}

/// Draws or logs a `files sync` or `files verify` until stopped: one bar over the bytes to
/// transfer (or check), with counts, rates and, once the walk is done, an ETA.
pub struct FilesDisplay {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl FilesDisplay {
    pub fn start(
        progress: Arc<pgferry_files::Progress>,
        verb: &'static str,
        interactive: bool,
    ) -> FilesDisplay {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(files_loop(progress, verb, interactive, stopped));
        FilesDisplay { stop, task }
    }

    pub async fn finish(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        clear();
    }
}

fn files_line(
    p: &pgferry_files::Progress,
    files: &mut Rate,
    bytes: &mut Rate,
    verb: &str,
) -> (u64, u64, String) {
    use pgferry_files::Progress as P;
    let (done, total) = (P::get(&p.bytes_done), P::get(&p.bytes_to_transfer));
    let files_done = P::get(&p.files_done);
    let (file_rate, byte_rate) = (files.update(files_done as i64), bytes.update(done as i64));
    let walked = p.walk_done.load(Ordering::Relaxed);
    let eta = if walked && byte_rate > 0.0 && total > done {
        format!(
            " · ETA {}",
            crate::output::duration((total - done) as f64 / byte_rate)
        )
    } else if walked {
        String::new()
    } else {
        " · scanning".to_string()
    };
    let mut line = format!(
        "{}/{} files {verb} · {}/{} · {}/s · {} files/s · {} unchanged of {} found",
        HumanCount(files_done),
        HumanCount(P::get(&p.files_to_transfer)),
        HumanBytes(done),
        HumanBytes(total),
        HumanBytes(byte_rate as u64),
        HumanCount(file_rate as u64),
        HumanCount(P::get(&p.files_unchanged)),
        HumanCount(P::get(&p.files_found)),
    );
    let problems = P::get(&p.problems);
    if problems > 0 {
        line.push_str(&format!(" · {problems} problems"));
    }
    line.push_str(&eta);
    (done, total, line)
}

async fn files_loop(
    progress: Arc<pgferry_files::Progress>,
    verb: &'static str,
    interactive: bool,
    mut stopped: watch::Receiver<bool>,
) {
    let (mut files, mut bytes) = (Rate::default(), Rate::default());
    // A first sample at zero, so the first line (10 s in, without a terminal) has rates.
    files.update(0);
    bytes.update(0);
    let bar = interactive.then(|| {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(5));
        *bars() = Some(multi.clone());
        let style = ProgressStyle::with_template(
            "{spinner:.green} [{bar:30.cyan/blue}] {percent:>3}%  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let bar = multi.add(ProgressBar::new(1).with_style(style));
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let every = if interactive { DRAW_EVERY } else { LOG_EVERY };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped.changed() => break,
        }
        let (done, total, line) = files_line(&progress, &mut files, &mut bytes, verb);
        match &bar {
            Some(bar) => {
                bar.set_length(total.max(1));
                bar.set_position(done);
                bar.set_message(line);
            }
            None => tracing::info!("progress: {line}"),
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_average_over_the_window() {
        let mut r = Rate::default();
        assert_eq!(r.update(0), 0.0);
        std::thread::sleep(Duration::from_millis(250));
        let rate = r.update(1000);
        assert!(rate > 2000.0 && rate < 4100.0, "{rate}");
    }
}
