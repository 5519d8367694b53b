//! The command as a user meets it: a minimal task file, exit codes, `--help`, the demo,
//! `config explain` and `convert`, and a `pg_dump` that fits both sides.

use std::path::Path;

use pgferry_testkit::{Cluster, datagen};

use crate::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_minimal_task_file_runs_validates_and_reports_status() {
    let source = Cluster::start().unwrap();
    let target = Cluster::start().unwrap();
    datagen::create_inventory(&source, "inventory", 1)
        .await
        .unwrap();
    target.create_database("inventory").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let task = write_task(
        dir.path(),
        &minimal_task(&source.url("inventory"), &target.url("inventory"), ""),
    );
    let task = task.to_str().unwrap();

    let out = run(&["run", "--task", task]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("public.order_lines") && stdout.contains("total (6 tables)"),
        "{stdout}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains('\u{1b}'),
        "no colour codes off a terminal"
    );

    let out = run(&["validate", "--task", task, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["differing"], 0);
    assert_eq!(report["matched"], 6);

    let out = run(&["status", "--task", task, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["phase"], "done");
    assert_eq!(status["totals"]["tables_loaded"], 6);
    assert_eq!(status["validation"].as_array().unwrap().len(), 6);
    let out = run(&["status", "--task", task]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("phase done"),
        "{}",
        text(&out)
    );

    // A difference makes validate exit 1, with the table named.
    target
        .execute("inventory", "DELETE FROM order_lines WHERE order_id = 1")
        .await
        .unwrap();
    let out = run(&["validate", "--task", task]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("public.order_lines") && stdout.contains("row-count-differs"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_exit_with_the_documented_codes_and_one_clear_message() {
    let source = Cluster::start().unwrap();
    let target = Cluster::start().unwrap();
    datagen::create_inventory(&source, "inv", 1).await.unwrap();
    target.create_database("inv").await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    // An invalid task file: exit 2, pointing at the line.
    let task = write_task(dir.path(), "migration_type = \"full-load\"\njobz = 3\n");
    let out = run(&["run", "--task", task.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("jobz") && stderr.contains("line 2"),
        "{stderr}"
    );

    // An unreachable target: exit 3, with the address and a fix, as JSON for scripts too.
    let dead = Cluster::start().unwrap();
    let port = dead.port();
    drop(dead);
    let task = write_task(
        dir.path(),
        &minimal_task(
            &source.url("inv"),
            &format!("postgres://postgres@127.0.0.1:{port}/inv?sslmode=disable&connect_timeout=5"),
            "",
        ),
    );
    let out = run(&["run", "--task", task.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot reach the target database at 127.0.0.1:{port}"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("hint:"), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["exit_code"], 3);
    assert!(json["hint"].as_str().unwrap().contains("listen_addresses"));

    // Tables in the way: exit 3, naming the table and the setting that decides.
    target
        .execute("inv", "CREATE TABLE customers (id int)")
        .await
        .unwrap();
    let task = write_task(
        dir.path(),
        &minimal_task(&source.url("inv"), &target.url("inv"), ""),
    );
    let out = run(&["run", "--task", task.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("public.customers") && stderr.contains("drop_and_create"),
        "{stderr}"
    );

    // A password in the task file: refused before anything connects.
    let task = write_task(
        dir.path(),
        &minimal_task("postgres://u:secret@127.0.0.1/x", &target.url("inv"), ""),
    );
    let out = run(&["run", "--task", task.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("holds a password") && !stderr.contains("secret"),
        "{stderr}"
    );

    // Status of a task that never ran.
    let task = write_task(
        dir.path(),
        &minimal_task(&source.url("inv"), &target.url("inv"), "name = \"never\""),
    );
    let out = run(&["status", "--task", task.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no task named \"never\""));
}

/// The README's first command: an assessment, full load and streaming under the demo application's
/// writes, a schema change carried in the stream, a cutover, writes on the target streamed back, a rollback, a second cutover,
/// and validation; then both servers are gone.
#[test]
fn the_demo_runs_end_to_end_and_cleans_up() {
    let out = run(&["demo", "--no-wait", "--scale", "1", "--stream-seconds", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "starting two throwaway PostgreSQL servers",
        "Assessing the migration (read-only",
        "estimated load:",
        "An application now writes to the source",
        "total (6 tables)",
        "The application ships a schema change while it writes",
        "on the target: ALTER TABLE public.products: applied",
        "on the target: CREATE INDEX public.products: applied",
        "Cutting over (pgferry cutover)",
        "fence",
        "downtime (fence to write probe)",
        "3 sequences set to the source's values",
        "All 6 tables match",
        "The application writes to the target now",
        "Rolling back (pgferry rollback)",
        "The application writes to the source now",
        "Cut over, rolled back and cut over again",
        "pgferry status --task",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    // Both servers it printed are gone.
    let ports: Vec<u16> = stdout
        .lines()
        .filter_map(|l| l.split("@127.0.0.1:").nth(1))
        .filter_map(|rest| rest.split('/').next()?.parse().ok())
        .collect();
    assert!(ports.len() >= 2, "{stdout}");
    for port in ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "the demo's server on port {port} still runs"
        );
    }
}

#[test]
fn help_teaches_and_versions_print() {
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("Exit codes") && help.contains("PGPASSWORD"),
        "{help}"
    );
    let out = run(&["run", "--help"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("kill -9"));
    let out = run(&["bogus"]);
    assert_eq!(out.status.code(), Some(2));
}

fn dms_data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../pgferry-config/tests/data")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn config_explain_marks_each_setting_with_its_origin_and_names_what_dms_does_differently() {
    let dir = tempfile::tempdir().unwrap();
    let task = write_task(
        dir.path(),
        &format!(
            "migration_type = \"full-load-and-cdc\"\njobs = 3\ntable_mappings = {:?}\ntask_settings = {:?}\n\
             [source]\nurl = \"host=127.0.0.1 dbname=a\"\n[target]\nurl = \"host=127.0.0.1 dbname=b\"\n",
            dms_data("every-rule-kind.json"),
            dms_data("seed-task-settings.json")
        ),
    );
    let out = pgferry()
        .args(["config", "explain", "--task"])
        .arg(&task)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("jobs") && text.contains("from TOML"),
        "{text}"
    );
    assert!(
        text.contains("from DMS JSON FullLoadSettings.TargetTablePrepMode"),
        "{text}"
    );
    assert!(text.contains("rename schema sales \"crm\""), "{text}");
    assert!(text.contains("never truncates"), "{text}");

    let out = pgferry()
        .args(["config", "explain", "--json", "--task"])
        .arg(&task)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let jobs = json["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == "jobs")
        .unwrap();
    assert_eq!(jobs["origin"], "toml");
    assert!(!json["warnings"].as_array().unwrap().is_empty());
}

#[test]
fn config_convert_writes_a_task_that_runs_and_bad_json_exits_2_with_the_line() {
    let out = pgferry()
        .args(["config", "convert", "--dms-mappings"])
        .arg(dms_data("seed-table-mappings.json"))
        .arg("--dms-settings")
        .arg(dms_data("seed-task-settings.json"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let toml = String::from_utf8(out.stdout).unwrap();
    assert!(
        toml.contains("target_table_prep_mode = \"do_nothing\""),
        "{toml}"
    );
    assert!(toml.contains("data_error_escalation_count = 50"), "{toml}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("m.json");
    std::fs::write(&bad, "{\"rules\": [\n {\"rule-type\": \"selecton\"}\n]}").unwrap();
    let out = pgferry()
        .args(["config", "convert", "--dms-mappings"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("m.json:2") && err.contains("did you mean \"selection\""),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pg_dump_17_fits_a_13_target() {
    use pgferry_testkit::ClusterOptions;
    let source = Cluster::start_with(ClusterOptions::default().major(13)).unwrap();
    let target = Cluster::start_with(ClusterOptions::default().major(13)).unwrap();
    datagen::create_awkward(&source, "app").await.unwrap();
    target.create_database("app").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let task = write_task(
        dir.path(),
        &minimal_task(&source.url("app"), &target.url("app"), ""),
    );
    let task = task.to_str().unwrap();

    // pg_dump 17 writes settings a 13 server does not know (transaction_timeout).
    let out = pgferry()
        .args(["run", "--task", task])
        .env(
            "PGFERRY_PG_BINDIR",
            pgferry_testkit::client_bindir_17().unwrap(),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_identical(&source, &target, "app").await;
}
