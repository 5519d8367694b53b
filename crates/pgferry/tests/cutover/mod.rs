//! `pgferry cutover` and `pgferry rollback` as a user runs them beside `pgferry run`: the
//! plan, the reports (JSON and Markdown), the exit codes, the run streaming back after the
//! cutover and forward again after the rollback, and both commands killed at random moments
//! and finished by running them again, with nothing lost or doubled.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::*;

const SETUP: &[&str] = &[
    "CREATE TABLE t (id serial PRIMARY KEY, v text)",
    "INSERT INTO t (v) SELECT 'x' || g FROM generate_series(1, 2000) g",
];

fn spawn_run(task: &str) -> std::process::Child {
    pgferry()
        .args(["run", "--task", task, "--no-progress"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Writes to `t` until `stop`, ignoring refusals (the fence ends the session).
fn writer(source: &Cluster, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let url = source.url("app");
    tokio::spawn(async move {
        let Ok((client, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await else {
            return;
        };
        tokio::spawn(conn);
        while !stop.load(Ordering::Relaxed) {
            if client
                .batch_execute(
                    "INSERT INTO t (v) VALUES ('w'); UPDATE t SET v = v || '!' WHERE id % 97 = 0",
                )
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

async fn assert_fenced(source: &Cluster) {
    let c = source.connect("app").await.unwrap();
    let e = c
        .execute("INSERT INTO t (v) VALUES ('after')", &[])
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("25006"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cutover_prints_a_plan_then_a_report_with_the_downtime_and_refuses_twice() {
    let (source, target, dir, task) = cdc_pair(SETUP).await;
    let refused = run(&["cutover", "--task", &task]);
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused));

    let mut child = spawn_run(&task);
    wait_for_cdc(&target, "app", &mut child).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writes = writer(&source, stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;

    let schema = run(&["validate", "--task", &task, "--schema", "--json"]);
    assert_eq!(schema.status.code(), Some(0), "{}", text(&schema));
    let schema: serde_json::Value = serde_json::from_slice(&schema.stdout).unwrap();
    assert!(schema["objects"].as_u64().unwrap_or(0) >= 4, "{schema}");
    target
        .execute("app", "ALTER TABLE t ALTER COLUMN v SET DEFAULT 'changed'")
        .await
        .unwrap();
    let differs = run(&["validate", "--task", &task, "--schema"]);
    assert_eq!(differs.status.code(), Some(1), "{}", text(&differs));
    assert!(text(&differs).contains("public.t.v"), "{}", text(&differs));
    target
        .execute("app", "ALTER TABLE t ALTER COLUMN v DROP DEFAULT")
        .await
        .unwrap();

    let plan = run(&["cutover", "--task", &task, "--dry-run", "--json"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(plan["state"], "planned");
    assert!(
        !dir.path().join("task.cutover.md").exists(),
        "a dry run writes nothing"
    );

    let out = run(&["cutover", "--task", &task, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    stop.store(true, Ordering::Relaxed);
    let _ = writes.await;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["downtime_seconds"].as_f64().is_some(), "{report}");
    assert_eq!(
        report["steps"].as_array().map(Vec::len),
        Some(6),
        "{report}"
    );
    let md = std::fs::read_to_string(dir.path().join("task.cutover.md")).unwrap();
    assert!(
        md.contains("**Downtime**") && md.contains("| validate | done |"),
        "{md}"
    );

    // The run streams the target's writes back to the source now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(child.try_wait().unwrap().is_none(), "the run streams back");
    assert_fenced(&source).await;
    let again = run(&["cutover", "--task", &task]);
    assert_eq!(again.status.code(), Some(3), "{}", text(&again));
    assert!(text(&again).contains("cut over"), "{}", text(&again));
    let status = run(&["status", "--task", &task, "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["phase"], "cut-over");
    assert_eq!(status["cutover"]["state"], "done");
    assert_eq!(status["reverse"]["running"], true, "{status}");
    let shown = run(&["status", "--task", &task]);
    assert!(text(&shown).contains("Reverse stream"), "{}", text(&shown));

    // Writes on the target, then back to the source with all of them.
    target
        .execute(
            "app",
            "INSERT INTO t (v) VALUES ('on the target'); DELETE FROM t WHERE id = 5",
        )
        .await
        .unwrap();
    let plan = run(&["rollback", "--task", &task, "--dry-run"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    let back = run(&["rollback", "--task", &task, "--json"]);
    assert_eq!(back.status.code(), Some(0), "{}", text(&back));
    let report: serde_json::Value = serde_json::from_slice(&back.stdout).unwrap();
    assert_eq!(report["kind"], "rollback", "{report}");
    assert!(report["downtime_seconds"].as_f64().is_some(), "{report}");
    let md = std::fs::read_to_string(dir.path().join("task.rollback.md")).unwrap();
    assert!(md.starts_with("# Rollback"), "{md}");
    let stopped = run(&["stop", "--task", &task]);
    assert_eq!(stopped.status.code(), Some(0), "{}", text(&stopped));
    let ran = child.wait().unwrap();
    assert!(
        ran.success(),
        "the run streams forward after the rollback, then stops: {ran}"
    );
    assert_identical(&source, &target, "app").await;
    let status = run(&["status", "--task", &task, "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["phase"], "cdc");
    assert_eq!(status["rollback"]["state"], "done");
}

/// SIGKILL at moments spread over the steps, then `cutover` again until it is done.
#[tokio::test(flavor = "multi_thread")]
async fn a_cutover_killed_at_random_moments_finishes_when_run_again() {
    let (source, target, _dir, task) = cdc_pair(SETUP).await;
    let mut child = spawn_run(&task);
    wait_for_cdc(&target, "app", &mut child).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writes = writer(&source, stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut killed_in = Vec::new();
    let mut finished = false;
    for delay_ms in [150u64, 500, 900, 1400] {
        let mut cut = pgferry()
            .args(["cutover", "--task", &task])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let _ = cut.kill();
        let ended = cut.wait().unwrap();
        let steps = steps_of(&target, "cutover").await;
        eprintln!("killed after {delay_ms} ms: {steps:?}");
        killed_in.extend(steps.into_iter().filter(|s| s.ends_with(":running")));
        if ended.success() {
            finished = true;
            break;
        }
    }
    // At least one kill landed inside a step, which the next attempt did again.
    assert!(!killed_in.is_empty(), "no kill landed inside a step");
    for _ in 0..3 {
        if finished {
            break;
        }
        let out = run(&["cutover", "--task", &task]);
        match out.status.code() {
            Some(0) => {
                finished = true;
                break;
            }
            _ => eprintln!("cutover again: {}", text(&out)),
        }
    }
    assert!(finished, "the cutover finishes when run again");
    let status = run(&["status", "--task", &task, "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["cutover"]["state"], "done", "the report is stored");
    assert!(
        status["cutover"]["report"]["downtime_seconds"]
            .as_f64()
            .is_some()
    );
    stop.store(true, Ordering::Relaxed);
    let _ = writes.await;
    assert_fenced(&source).await;

    // The same for the rollback, with the application writing to the target.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = writer(&target, stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut killed_in = Vec::new();
    let mut finished = false;
    for delay_ms in [200u64, 700, 1200, 2000] {
        let mut back = pgferry()
            .args(["rollback", "--task", &task])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let _ = back.kill();
        let ended = back.wait().unwrap();
        let steps = steps_of(&target, "rollback").await;
        eprintln!("rollback killed after {delay_ms} ms: {steps:?}");
        killed_in.extend(steps.into_iter().filter(|s| s.ends_with(":running")));
        if ended.success() {
            finished = true;
            break;
        }
    }
    assert!(
        !killed_in.is_empty(),
        "no kill landed inside a rollback step"
    );
    for _ in 0..3 {
        if finished {
            break;
        }
        let out = run(&["rollback", "--task", &task]);
        finished = out.status.success();
        if !finished {
            eprintln!("rollback again: {}", text(&out));
        }
    }
    assert!(finished, "the rollback finishes when run again");
    stop.store(true, Ordering::Relaxed);
    let _ = writes.await;
    let stopped = run(&["stop", "--task", &task]);
    assert_eq!(stopped.status.code(), Some(0), "{}", text(&stopped));
    let _ = child.wait();
    assert_identical(&source, &target, "app").await;
    // The source takes writes again.
    source
        .execute("app", "INSERT INTO t (v) VALUES ('back on the source')")
        .await
        .unwrap();
}

/// `step:state` of a switch's recorded steps, in order.
async fn steps_of(target: &Cluster, kind: &str) -> Vec<String> {
    let control = target.connect("app").await.unwrap();
    control
        .query(
            "SELECT step || ':' || state FROM pgferry.cutover_step WHERE kind = $1
             ORDER BY ordinal",
            &[&kind],
        )
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default()
}
