//! Watching a migration: alarms that trip and reach real receivers (a webhook, an SMTP
//! server, a command), `/metrics` read by Prometheus's own parser, the JSON API, and the
//! dashboard rendered by a real headless Chromium during a running migration.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pgferry_testkit::compare::compare_databases;
use pgferry_testkit::http::{self, WebhookReceiver};
use pgferry_testkit::smtp::SmtpServer;
use pgferry_testkit::workload::{self, WorkloadCounts};
use pgferry_testkit::{Cluster, ClusterOptions, datagen};

use super::pgferry;

const TOKEN: &str = "t0k3n-for-tests";

/// A `pgferry run --http` in the background, killed if the test fails.
struct Running {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Running {
    fn start(task: &Path, dir: &Path) -> Running {
        let port = pgferry_testkit::cluster::free_port().unwrap();
        let log = dir.join("run.log");
        let child = pgferry()
            .args(["run", "--no-progress", "--task"])
            .arg(task)
            .arg("--http")
            .arg(format!("127.0.0.1:{port}"))
            .env("PGFERRY_HTTP_TOKEN", TOKEN)
            .stdout(std::fs::File::create(dir.join("run.out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Running { child, port, log }
    }

    fn get(&self, path: &str) -> http::Response {
        http::request(self.port, "GET", path, &[], b"").unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for `done` to say yes, checking that the run is still alive.
    fn wait_for(&mut self, what: &str, limit: Duration, mut done: impl FnMut(&Running) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the run ended ({status}) while waiting for {what}:\n{}",
                    self.log()
                );
            }
            if http::request(self.port, "GET", "/api/v1/live", &[], b"").is_ok() && done(self) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Stops the run over HTTP and returns its exit code.
    fn stop(&mut self) -> Option<i32> {
        let bearer = format!("Bearer {TOKEN}");
        let r = http::request(
            self.port,
            "POST",
            "/api/v1/stop",
            &[("Authorization", &bearer)],
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 202, "{}", r.text());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the run did not stop:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The inventory workload on the source until the returned flag is set.
async fn start_workload(source: &Cluster) -> (Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let client = source.connect("inventory").await.unwrap();
    let flag = stop.clone();
    let handle = tokio::spawn(async move {
        let counts = Arc::new(WorkloadCounts::default());
        workload::inventory(&client, 7, flag, counts, Duration::from_millis(5))
            .await
            .unwrap();
    });
    (stop, handle)
}

/// Waits until the slot has confirmed everything the source has written: every change
/// is applied on the target.
async fn wait_caught_up(source: &Cluster) {
    let client = source.connect("inventory").await.unwrap();
    let goal: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let caught_up: bool = client
            .query_one(
                "SELECT coalesce(bool_and(confirmed_flush_lsn >= $1::text::pg_lsn), false)
                 FROM pg_replication_slots WHERE slot_name LIKE 'pgferry%'",
                &[&goal],
            )
            .await
            .unwrap()
            .get(0);
        if caught_up {
            return;
        }
        assert!(Instant::now() < deadline, "the target never caught up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn fixture() -> (Cluster, Cluster) {
    let source = Cluster::start().unwrap();
    // The target times its I/O, so the read and write latencies are there to see.
    let target = Cluster::start_with(
        ClusterOptions::default()
            .setting("track_io_timing", "on")
            .setting("track_wal_io_timing", "on"),
    )
    .unwrap();
    datagen::create_inventory(&source, "inventory", 1)
        .await
        .unwrap();
    target.create_database("inventory").await.unwrap();
    (source, target)
}

/// Parses Prometheus text with the Prometheus project's Python client, the reference
/// parser: every sample as `name{labels} value` lines, sorted labels.
fn parse_prometheus(text: &str) -> Vec<(String, serde_json::Value, f64)> {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    if not family.documentation:
        raise SystemExit("no HELP text for " + family.name)
    for s in family.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;
    let python = std::env::var("PGFERRY_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = Command::new(python)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with prometheus_client (scripts/install-deps)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<(String, serde_json::Value, f64)> =
        serde_json::from_slice(&out.stdout).unwrap();
    parsed
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tiny_lag_threshold_trips_an_alarm_that_reaches_webhook_mail_and_command() {
    let (source, target) = fixture().await;
    let dir = tempfile::tempdir().unwrap();
    // The first request fails with 500: the notifier must retry.
    let hook = WebhookReceiver::start(1).unwrap();
    let slack = WebhookReceiver::start(0).unwrap();
    let smtp = SmtpServer::start().unwrap();
    let command_log = dir.path().join("command.log");
    let task = dir.path().join("task.toml");
    std::fs::write(
        &task,
        format!(
            r#"
name = "watched"
migration_type = "full-load-and-cdc"
[source]
url = "{source}"
[target]
url = "{target}"
[cdc]
heartbeat_interval_s = 1
[monitoring]
sample_interval_s = 0.25

[[alarm]]
name = "lag"
description = "Any lag at all, so the test sees the alarm trip"
metric = "pgferry_cdc_latency_target_seconds"
statistic = "Maximum"
period = 1
evaluation_periods = 2
datapoints_to_alarm = 1
comparison_operator = "GreaterThanThreshold"
threshold = 0.0001

[[notifier]]
kind = "webhook"
name = "hook"
url = "{hook}"

[[notifier]]
kind = "webhook"
name = "slack"
format = "slack"
url = "{slack}"

[[notifier]]
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
tls = "none"
from = "pgferry@example.com"
to = ["dba@example.com", "oncall@example.com"]

[[notifier]]
kind = "command"
command = 'printf "%s %s\n" "$PGFERRY_ALARM" "$PGFERRY_ALARM_STATE" >> {command_log}'

[[notifier]]
kind = "webhook"
name = "dead"
url = "http://127.0.0.1:1/nobody-listens"
retries = 0
timeout_s = 1
"#,
            source = source.url("inventory"),
            target = target.url("inventory"),
            hook = hook.url("/alarm"),
            slack = slack.url("/slack"),
            smtp_port = smtp.port,
            command_log = command_log.display(),
        ),
    )
    .unwrap();

    let (stop_workload, workload) = start_workload(&source).await;
    let mut run = Running::start(&task, dir.path());
    run.wait_for("streaming", Duration::from_secs(60), |r| {
        r.get("/api/v1/live").json()["phase"] == "cdc"
    });

    // The alarm trips and every notifier hears of it.
    let alarm_body = |r: &pgferry_testkit::http::Received| -> serde_json::Value {
        serde_json::from_slice(&r.body).unwrap_or_default()
    };
    run.wait_for("the ALARM webhook", Duration::from_secs(60), |_| {
        hook.received()
            .iter()
            .any(|r| r.answered == 200 && alarm_body(r)["new_state"] == "ALARM")
    });
    let received = hook.received();
    assert_eq!(received[0].answered, 500, "the first attempt was refused");
    // The default alarms may report their first OK before (on a busy machine, once they
    // hold a minute of data): the declared alarm's first notification is looked for.
    let first = received
        .iter()
        .map(alarm_body)
        .find(|b| b["alarm"] == "lag")
        .unwrap();
    assert_eq!(first["alarm"], "lag");
    assert_eq!(first["task"], "watched");
    assert_eq!(first["old_state"], "INSUFFICIENT_DATA");
    assert_eq!(first["version"], 1);
    assert!(
        first["reason"]
            .as_str()
            .unwrap()
            .contains("greater than the threshold"),
        "{first}"
    );
    assert_eq!(received[0].headers["content-type"], "application/json");

    run.wait_for(
        "the Slack message, the mail and the command",
        Duration::from_secs(30),
        |_| {
            let slack_ok = slack.received().iter().any(|r| {
                alarm_body(r)["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("ALARM: lag"))
            });
            let mail_ok = smtp
                .messages()
                .iter()
                .any(|m| m.contains("Subject: [pgferry watched] ALARM: lag"));
            let command_ok = std::fs::read_to_string(&command_log)
                .unwrap_or_default()
                .contains("lag ALARM");
            slack_ok && mail_ok && command_ok
        },
    );
    let mail = smtp
        .messages()
        .into_iter()
        .find(|m| m.contains("ALARM: lag"))
        .unwrap();
    assert!(
        mail.contains("dba@example.com") && mail.contains("oncall@example.com"),
        "{mail}"
    );
    assert!(mail.contains("Any lag at all"), "{mail}");

    // /metrics, read by Prometheus's parser, once the deliveries are counted (a round
    // after they happen).
    run.wait_for("the deliveries counted", Duration::from_secs(10), |r| {
        let text = r.get("/metrics").text();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(r#"pgferry_notifications_total{notifier="hook",outcome="sent"} "#)
            })
            .and_then(|n| n.trim().parse::<f64>().ok())
            .is_some_and(|n| n >= 1.0)
    });
    let metrics = run.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.headers["content-type"].starts_with("text/plain; version=0.0.4"),
        "{:?}",
        metrics.headers
    );
    let samples = parse_prometheus(&metrics.text());
    let names: std::collections::BTreeSet<&str> =
        samples.iter().map(|(n, _, _)| n.as_str()).collect();
    for name in [
        "pgferry_task_info",
        "pgferry_task_phase",
        "pgferry_tables",
        "pgferry_full_load_rows_total",
        "pgferry_full_load_bytes_total",
        "pgferry_full_load_table_rows_total",
        "pgferry_full_load_table_progress_ratio",
        "pgferry_cdc_latency_source_seconds",
        "pgferry_cdc_latency_target_seconds",
        "pgferry_cdc_changes_incoming_total",
        "pgferry_cdc_changes_applied_total",
        "pgferry_cdc_transactions_applied_total",
        "pgferry_cdc_apply_exceptions_total",
        "pgferry_source_slot_retained_wal_bytes",
        "pgferry_target_connections",
        "pgferry_target_database_size_bytes",
        "pgferry_target_read_latency_seconds",
        "pgferry_target_write_latency_seconds",
        "pgferry_alarm_state",
        "pgferry_notifications_total",
    ] {
        assert!(
            names.contains(name),
            "{name} missing from /metrics:\n{names:?}"
        );
    }
    let value = |name: &str, labels: &[(&str, &str)]| -> Option<f64> {
        samples
            .iter()
            .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l[*k] == *v))
            .map(|(_, _, v)| *v)
    };
    assert_eq!(value("pgferry_tables", &[("state", "loaded")]), Some(6.0));
    assert!(value("pgferry_cdc_changes_applied_total", &[("op", "insert")]).unwrap() > 0.0);
    assert!(
        value(
            "pgferry_notifications_total",
            &[("notifier", "hook"), ("outcome", "sent")]
        )
        .unwrap()
            >= 1.0
    );
    let lag_states: f64 = ["OK", "ALARM", "INSUFFICIENT_DATA"]
        .iter()
        .filter_map(|s| value("pgferry_alarm_state", &[("alarm", "lag"), ("state", s)]))
        .sum();
    assert_eq!(lag_states, 1.0, "exactly one state is 1");
    assert_eq!(value("pgferry_task_phase", &[("phase", "cdc")]), Some(1.0));

    // The JSON API: what `status --json` prints, consistent errors, guarded POSTs.
    let api_task = run.get("/api/v1/task").json();
    let status = pgferry()
        .args(["status", "--json", "--task"])
        .arg(&task)
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let keys =
        |v: &serde_json::Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(keys(&api_task), keys(&status));
    assert_eq!(api_task["task"], "watched");
    assert_eq!(api_task["running"], true);
    let missing = run.get("/api/v1/nothing-here");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "not_found");
    let refused = http::request(run.port, "POST", "/api/v1/stop", &[], b"").unwrap();
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["error"]["code"], "unauthorized");
    let wrong = http::request(
        run.port,
        "POST",
        "/api/v1/stop",
        &[("Authorization", "Bearer not-it")],
        b"",
    )
    .unwrap();
    assert_eq!(wrong.status, 401);
    // The run's preflight assessment; a full one is a guarded POST.
    let assessment = run.get("/api/v1/assessment").json();
    assert_eq!(assessment["task"], "watched", "{assessment:#}");
    assert_eq!(assessment["summary"]["blockers"], 0, "{assessment:#}");
    assert!(assessment["findings"].is_array(), "{assessment:#}");
    let refused = http::request(run.port, "POST", "/api/v1/assessment", &[], b"").unwrap();
    assert_eq!(refused.status, 401);
    let alarms = run.get("/api/v1/alarms").json();
    let names: Vec<&str> = alarms["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "replication-lag",
            "target-connections",
            "target-storage",
            "source-slot-wal",
            "lag"
        ],
        "the seed's alarms (but CPU) and the declared one"
    );
    assert_eq!(alarms["inactive"][0]["name"], "target-cpu");
    assert!(
        alarms["inactive"][0]["why"]
            .as_str()
            .unwrap()
            .contains("no SQL metric")
    );

    // The migration went on regardless of the dead notifier; stop it cleanly.
    stop_workload.store(true, Ordering::Relaxed);
    workload.await.unwrap();
    wait_caught_up(&source).await;
    assert_eq!(run.stop(), Some(0), "{}", run.log());
    let s = source.connect("inventory").await.unwrap();
    let t = target.connect("inventory").await.unwrap();
    let diffs = compare_databases(&s, &t).await.unwrap();
    assert!(diffs.is_empty(), "source and target differ: {diffs:#?}");

    // The failed notifier is in the event log, and `pgferry alarms` tells the story.
    let failures: i64 = t
        .query_one(
            "SELECT count(*) FROM pgferry.event
             WHERE kind = 'notifier' AND message LIKE 'notifier dead could not deliver alarm lag%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(failures >= 1, "the dead notifier's failure is logged");
    let out = pgferry()
        .args(["alarms", "--json", "--task"])
        .arg(&task)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["running"], false);
    let lag = report["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "lag")
        .unwrap();
    let code = if lag["state"] == "ALARM" { 1 } else { 0 };
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit 1 while an alarm is in ALARM"
    );
    assert!(
        lag["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["old_state"] == "INSUFFICIENT_DATA" && h["new_state"] == "ALARM"),
        "{lag}"
    );
    let out = pgferry()
        .args(["alarms", "--task"])
        .arg(&task)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("History of lag:") && text.contains("INACTIVE"),
        "{text}"
    );
}

/// Where screenshots go: `target/test-artifacts/`.
fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs Debian's Chromium headless on `url`; `extra` picks the output.
fn chromium(url: &str, size: &str, extra: &[&str]) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--virtual-time-budget=8000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--window-size={size}"))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("chromium (Debian's package; scripts/install-deps installs it)")
}

/// The number in `attr="N"` right after `anchor` in the DOM.
fn attribute_after(dom: &str, anchor: &str, attr: &str) -> Option<i64> {
    let at = dom.find(anchor)?;
    let rest = &dom[at..];
    let start = rest.find(&format!("{attr}=\""))? + attr.len() + 2;
    rest[start..].split('"').next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_renders_live_numbers_in_chromium() {
    let (source, _target) = fixture().await;
    let dir = tempfile::tempdir().unwrap();
    let task = dir.path().join("task.toml");
    std::fs::write(
        &task,
        format!(
            "name = \"dash\"\nmigration_type = \"full-load-and-cdc\"\n[source]\nurl = \"{}\"\n\
             [target]\nurl = \"{}\"\n[cdc]\nheartbeat_interval_s = 1\n[monitoring]\n\
             sample_interval_s = 0.5\n",
            source.url("inventory"),
            _target.url("inventory")
        ),
    )
    .unwrap();
    let (stop_workload, workload) = start_workload(&source).await;
    let mut run = Running::start(&task, dir.path());
    run.wait_for("a few seconds of streaming", Duration::from_secs(60), |r| {
        let series = r.get("/api/v1/series").json();
        r.get("/api/v1/live").json()["phase"] == "cdc"
            && series["columns"]["applied_per_second"]
                .as_array()
                .is_some_and(|c| {
                    c.iter()
                        .filter(|v| v.as_f64().is_some_and(|x| x > 0.0))
                        .count()
                        >= 3
                })
    });
    let url = format!("http://127.0.0.1:{}/", run.port);

    let out = chromium(&url, "1280,1700", &["--dump-dom"]);
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && dom.contains("<main"),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refreshed = attribute_after(&dom, "<main", "data-refreshed").unwrap_or(0);
    assert!(
        refreshed >= 1,
        "the page never refreshed from the API:\n{dom}"
    );
    for table in [
        "public.customers",
        "public.order_lines",
        "public.orders",
        "public.products",
        "public.stock_levels",
        "public.warehouses",
    ] {
        assert!(
            dom.contains(&format!("data-table=\"{table}\"")),
            "{table} is not in the tables panel:\n{dom}"
        );
    }
    assert!(
        dom.contains("<span class=\"state loaded\">loaded</span>"),
        "{dom}"
    );
    for chart in ["c-lag", "c-cdc", "c-conn", "c-size", "c-load"] {
        let points = attribute_after(&dom, &format!("id=\"{chart}\""), "data-points");
        assert!(
            points.is_some_and(|p| p > 0),
            "chart {chart} has no points ({points:?}):\n{dom}"
        );
    }
    assert!(
        dom.matches("<canvas").count() >= 5,
        "uPlot drew no canvases:\n{dom}"
    );
    assert!(dom.contains("data-alarm=\"replication-lag\""), "{dom}");
    let verdict = dom
        .split("id=\"assessment-verdict\"")
        .nth(1)
        .and_then(|rest| rest.split('>').nth(1))
        .unwrap_or_default();
    assert!(
        verdict.starts_with("ready") || verdict.starts_with("warnings"),
        "the assessment panel shows no verdict ({verdict:?}):\n{dom}"
    );
    assert!(
        !dom.contains("id=\"t-rows\">–<"),
        "the rows tile is empty:\n{dom}"
    );
    assert!(dom.contains(">cdc<"), "the phase is shown:\n{dom}");

    // Headless Chromium lays pages out at least 500 px wide: the narrowest it renders, and
    // under the 600 px where the page switches to its one-column phone layout.
    for (file, size) in [
        ("dashboard.png", "1280,1700"),
        ("dashboard-narrow.png", "500,2200"),
    ] {
        let path = artifacts().join(file);
        let _ = std::fs::remove_file(&path);
        let out = chromium(&url, size, &[&format!("--screenshot={}", path.display())]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(len > 10_000, "{file} is {len} bytes");
    }

    stop_workload.store(true, Ordering::Relaxed);
    workload.await.unwrap();
    assert_eq!(run.stop(), Some(0), "{}", run.log());
}
