//! The monitor of a run: samples the run's counters and the servers' statistics on an
//! interval, feeds the [`Observer`] (metrics, alarms, chart history), writes alarm state
//! changes to the control schema and hands them to the notifiers.
//!
//! It runs beside the migration and shares nothing with it but the [`RunProgress`] atomics:
//! its connections are its own, a statement of its may take 5 s at most, and a server or
//! notifier that fails only leaves a gap in the samples or a warning in the event log.

mod sample;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use pgferry_config::{CommandMetric, Task};
use pgferry_observe::notify::{Delivery, Notification, Notifiers};
use pgferry_observe::{Alarm, Observer, Sample, Transition};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::endpoints::Endpoints;
use crate::progress::RunProgress;
use sample::ServerStats;

pub use sample::progress_samples;

/// The chart history covers this long at any sample interval.
const HISTORY_SPAN: Duration = Duration::from_secs(3600);

/// At most this many event-log writes wait for the target to come back.
const PENDING_EVENTS: usize = 1000;

/// Charted rates span at least this long.
const RATE_WINDOW: Duration = Duration::from_secs(2);

/// Alarm states (their reasons and newest datapoints) are saved this often at most, and at
/// once on a state change.
const SAVE_EVERY: Duration = Duration::from_secs(10);

/// How long [`Monitor::stop`] waits for notifications already handed over.
const DRAIN: Duration = Duration::from_secs(15);

/// A running monitor.
#[derive(Debug)]
pub struct Monitor {
    pub observer: Arc<Observer>,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl Monitor {
    /// Starts watching `task`, whose connection details the caller resolved. `notifiers`
    /// and the receiver of their deliveries come from [`Notifiers::start`]; without
    /// notifiers, pass `None`.
    pub fn start(
        task: &Task,
        endpoints: Endpoints,
        progress: Arc<RunProgress>,
        notifiers: Option<(Notifiers, mpsc::Receiver<Delivery>)>,
    ) -> Monitor {
        let interval = task.monitoring.sample_interval;
        let now = Utc::now();
        let alarms = task
            .monitoring
            .alarms
            .iter()
            .map(|r| Alarm::new(r.clone(), now))
            .collect();
        let history = (HISTORY_SPAN.as_secs_f64() / interval.as_secs_f64()).ceil() as usize;
        let observer = Arc::new(Observer::new(
            alarms,
            (interval * 3).max(Duration::from_secs(30)),
            history.clamp(60, 20_000),
        ));
        let slot = task.migration_type.needs_cdc().then(|| {
            task.cdc
                .slot_name
                .clone()
                .unwrap_or_else(|| crate::cdc::source::default_name(&task.name))
        });
        let commands = CommandValues::start(&task.monitoring.command_metrics);
        let (stop, stopped) = watch::channel(false);
        let state = Loop {
            task: task.clone(),
            progress,
            observer: observer.clone(),
            stats: ServerStats::new(
                endpoints.source,
                endpoints.target,
                slot.clone(),
                slot.map(|_| crate::reverse::slot_name(&task.name)),
            ),
            commands,
            notifiers,
            delivered: HashMap::new(),
            handed_over: 0,
            settled: 0,
            pending: Vec::new(),
            resumed: false,
            task_recorded: false,
            saved_at: None,
            recent_totals: std::collections::VecDeque::new(),
        };
        let handle = tokio::spawn(state.run(interval, stopped));
        Monitor {
            observer,
            stop,
            handle,
        }
    }

    /// Takes a last sample, saves the alarms, waits a little for notifications in flight,
    /// and stops.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.handle.await;
    }
}

enum Pending {
    Transition(Transition),
    Warning(String),
}

struct Loop {
    task: Task,
    progress: Arc<RunProgress>,
    observer: Arc<Observer>,
    stats: ServerStats,
    commands: CommandValues,
    notifiers: Option<(Notifiers, mpsc::Receiver<Delivery>)>,
    /// Deliveries by (notifier, outcome).
    delivered: HashMap<(String, &'static str), u64>,
    handed_over: u64,
    settled: u64,
    pending: Vec<Pending>,
    /// Whether the saved alarm states were read back (once the control schema answers).
    resumed: bool,
    /// Whether `run` has created the task's row (before it, there is nowhere to write).
    task_recorded: bool,
    /// When the alarm states were last saved.
    saved_at: Option<Instant>,
    /// Recent (when, full-load rows, full-load bytes, applied changes, incoming changes),
    /// oldest first, for rates over at least [`RATE_WINDOW`].
    recent_totals: std::collections::VecDeque<(Instant, f64, f64, f64, f64)>,
}

impl Loop {
    async fn run(mut self, interval: Duration, mut stopped: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stopped.changed() => break,
                _ = tick.tick() => self.round().await,
            }
        }
        self.round().await;
        let deadline = Instant::now() + DRAIN;
        while self.settled < self.handed_over && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.collect_deliveries();
        }
        self.persist().await;
        self.commands.stop();
    }

    /// One sampling round.
    async fn round(&mut self) {
        let now = Utc::now();
        let mut samples = progress_samples(&self.task, &self.progress);
        self.stats.sample(&mut samples).await;
        for (name, value) in self.commands.values() {
            samples.push(Sample::new("pgferry_command_metric", value).label("name", name));
        }
        self.collect_deliveries();
        if let Some((n, _)) = &self.notifiers {
            for name in n.names() {
                for outcome in ["sent", "failed"] {
                    let count = self
                        .delivered
                        .get(&(name.clone(), outcome))
                        .copied()
                        .unwrap_or(0);
                    samples.push(
                        Sample::new("pgferry_notifications_total", count as f64)
                            .label("notifier", name.clone())
                            .label("outcome", outcome),
                    );
                }
            }
        }
        let charted = self.charted(&samples);
        if !self.resumed {
            self.resume().await;
        }
        let changes = self.observer.record(now, &samples, charted);
        let changed = !changes.is_empty();
        for t in changes {
            let message = format!(
                "alarm {}: {} -> {}: {}",
                t.alarm, t.old_state, t.new_state, t.reason
            );
            match t.new_state {
                pgferry_observe::AlarmState::Alarm => tracing::warn!("{message}"),
                _ => tracing::info!("{message}"),
            }
            if let Some((n, _)) = &self.notifiers {
                n.notify(Notification::new(&self.task.name, &t));
                self.handed_over += n.names().len() as u64;
            }
            self.pending.push(Pending::Transition(t));
        }
        let due = self.saved_at.is_none_or(|at| at.elapsed() >= SAVE_EVERY);
        if changed || due || !self.pending.is_empty() {
            self.persist().await;
        }
    }

    /// Reads back the states the last run saved, so a restart does not announce again what
    /// was already announced.
    async fn resume(&mut self) {
        let Some(client) = self.stats.target_client().await else {
            return;
        };
        match crate::control::alarms::saved_states(client, &self.task.name).await {
            Ok(saved) => self.observer.resume(saved),
            Err(_) => return,
        }
        self.resumed = true;
    }

    fn collect_deliveries(&mut self) {
        let Some((_, outcomes)) = &mut self.notifiers else {
            return;
        };
        while let Ok(d) = outcomes.try_recv() {
            self.settled += 1;
            let outcome = if d.error.is_some() { "failed" } else { "sent" };
            *self
                .delivered
                .entry((d.notifier.clone(), outcome))
                .or_default() += 1;
            if let Some(e) = d.error {
                self.pending.push(Pending::Warning(format!(
                    "notifier {} could not deliver alarm {} ({}): {e}",
                    d.notifier, d.alarm, d.new_state
                )));
            }
        }
    }

    /// Saves alarm states and writes waiting events, if the target answers.
    async fn persist(&mut self) {
        if self.pending.len() > PENDING_EVENTS {
            let extra = self.pending.len() - PENDING_EVENTS;
            self.pending.drain(..extra);
        }
        let task = self.task.name.clone();
        let views = self.observer.alarms();
        let Some(client) = self.stats.target_client().await else {
            return;
        };
        if !self.task_recorded {
            self.task_recorded =
                matches!(crate::control::load_task(client, &task).await, Ok(Some(_)));
            if !self.task_recorded {
                return;
            }
        }
        let mut written = 0;
        for p in &self.pending {
            let result = match p {
                Pending::Transition(t) => {
                    crate::control::alarms::record_transition(client, &task, t).await
                }
                Pending::Warning(w) => crate::control::warn(client, &task, "notifier", w).await,
            };
            if result.is_err() {
                break;
            }
            written += 1;
        }
        self.pending.drain(..written);
        match crate::control::alarms::save(client, &task, &views).await {
            Ok(()) => self.saved_at = Some(Instant::now()),
            Err(e) => tracing::debug!("monitor: saving alarm states: {e}"),
        }
    }

    /// The values the dashboard charts: lags, throughputs and the target's size.
    fn charted(&mut self, samples: &[Sample]) -> BTreeMap<&'static str, f64> {
        let sum = |name: &str| -> Option<f64> {
            let v: Vec<f64> = samples
                .iter()
                .filter(|s| s.name == name)
                .map(|s| s.value)
                .collect();
            (!v.is_empty()).then(|| v.iter().sum())
        };
        let mut out = BTreeMap::new();
        for (key, metric) in [
            ("source_lag_seconds", "pgferry_cdc_latency_source_seconds"),
            ("target_lag_seconds", "pgferry_cdc_latency_target_seconds"),
            ("target_connections", "pgferry_target_connections"),
            ("target_size_bytes", "pgferry_target_database_size_bytes"),
        ] {
            if let Some(v) = sum(metric) {
                out.insert(key, v);
            }
        }
        let now = Instant::now();
        let totals = (
            now,
            sum("pgferry_full_load_rows_total").unwrap_or(0.0),
            sum("pgferry_full_load_bytes_total").unwrap_or(0.0),
            sum("pgferry_cdc_changes_applied_total").unwrap_or(0.0),
            sum("pgferry_cdc_changes_incoming_total").unwrap_or(0.0),
        );
        // The engine refreshes its CDC counters once a second: a rate over a shorter
        // span would swing between 0 and double.
        while self
            .recent_totals
            .get(1)
            .is_some_and(|(at, ..)| now.duration_since(*at) >= RATE_WINDOW)
        {
            self.recent_totals.pop_front();
        }
        if let Some(&(then, rows, bytes, applied, incoming)) = self.recent_totals.front() {
            let dt = now.duration_since(then).as_secs_f64();
            if dt > 0.0 {
                let rate = |a: f64, b: f64| ((a - b) / dt).max(0.0);
                out.insert("load_rows_per_second", rate(totals.1, rows));
                out.insert("load_bytes_per_second", rate(totals.2, bytes));
                out.insert("applied_per_second", rate(totals.3, applied));
                out.insert("incoming_per_second", rate(totals.4, incoming));
            }
        }
        self.recent_totals.push_back(totals);
        out
    }
}

/// The latest value of each `[[command_metric]]`, refreshed by one task per command.
struct CommandValues {
    values: Arc<Mutex<BTreeMap<String, f64>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl CommandValues {
    fn start(metrics: &[CommandMetric]) -> Self {
        let values = Arc::new(Mutex::new(BTreeMap::new()));
        let tasks = metrics
            .iter()
            .map(|m| {
                let values = values.clone();
                let m = m.clone();
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(m.interval_s));
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let mut failing = false;
                    loop {
                        tick.tick().await;
                        let result = run_command_metric(&m).await;
                        let mut v = values.lock().unwrap_or_else(|p| p.into_inner());
                        match result {
                            Ok(x) => {
                                v.insert(m.name.clone(), x);
                                failing = false;
                            }
                            Err(e) => {
                                // A failed reading is missing data, not the old value.
                                v.remove(&m.name);
                                if !failing {
                                    tracing::warn!(metric = %m.name, "command metric: {e}");
                                }
                                failing = true;
                            }
                        }
                    }
                })
            })
            .collect();
        CommandValues { values, tasks }
    }

    fn values(&self) -> Vec<(String, f64)> {
        self.values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Runs a command metric's command and reads the last number it printed.
async fn run_command_metric(m: &CommandMetric) -> std::result::Result<f64, String> {
    let out =
        pgferry_observe::shell::run(&m.command, &[], Duration::from_secs(m.timeout_s)).await?;
    last_number(&out).ok_or_else(|| "printed no number".to_owned())
}

/// The last whitespace-separated word that is a number.
fn last_number(text: &str) -> Option<f64> {
    text.split_whitespace()
        .rev()
        .find_map(|w| w.trim_matches(|c| c == '"' || c == ',').parse::<f64>().ok())
        .filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_output_numbers() {
        assert_eq!(last_number("cpu 42.5\n"), Some(42.5));
        assert_eq!(last_number("\"17\"\n"), Some(17.0));
        assert_eq!(last_number("1 2 three"), Some(2.0));
        assert_eq!(last_number("none"), None);
        assert_eq!(last_number("NaN"), None);
    }

    #[tokio::test]
    async fn command_metrics_run_with_a_timeout() {
        let m = |command: &str, timeout_s| CommandMetric {
            name: "x".to_owned(),
            command: command.to_owned(),
            interval_s: 1,
            timeout_s,
        };
        assert_eq!(run_command_metric(&m("echo 12.5", 5)).await, Ok(12.5));
        assert!(
            run_command_metric(&m("sleep 3", 1))
                .await
                .unwrap_err()
                .contains("longer")
        );
        assert!(
            run_command_metric(&m("echo oops >&2; exit 2", 5))
                .await
                .unwrap_err()
                .contains("oops")
        );
    }
}
