//! Hostile inputs: task files, mapping files, identifiers and HTTP requests written to make
//! pgferry do something it should not. Each test here was a defect once, or guards the
//! door next to one; the next one found goes here too.

use std::path::Path;

use pgferry_testkit::Cluster;

use crate::{run, text, write_task};

/// A task file in `dir` whose servers nobody runs (port 1): for what is refused before any
/// connection. `extra` goes at the top level.
fn offline_task(dir: &Path, extra: &str) -> String {
    let text = crate::minimal_task(
        "postgres://u@127.0.0.1:1/s",
        "postgres://u@127.0.0.1:1/t",
        extra,
    );
    write_task(dir, &text).to_str().unwrap().to_owned()
}

/// `run` and `config explain` both refuse `task` with exit 2, and say `expected`; returns
/// what `run` printed on standard error.
fn refused_by_run_and_explain(task: &str, expected: &str) -> String {
    let mut first = None;
    for args in [
        ["run", "--task", task].as_slice(),
        &["config", "explain", "--task", task],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        first.get_or_insert(stderr);
    }
    first.unwrap_or_default()
}

/// A source with the sample inventory in `inv`, an empty target, and a full-load task file
/// between them (in the returned directory).
async fn inventory_pair() -> (Cluster, Cluster, tempfile::TempDir, String) {
    let source = Cluster::start().unwrap();
    let target = Cluster::start().unwrap();
    pgferry_testkit::datagen::create_inventory(&source, "inv", 1)
        .await
        .unwrap();
    target.create_database("inv").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let task = write_task(
        dir.path(),
        &crate::minimal_task(&source.url("inv"), &target.url("inv"), ""),
    );
    let task = task.to_str().unwrap().to_owned();
    (source, target, dir, task)
}

/// Expressions that tried to close the parenthesis pgferry wraps them in, each with a
/// fragment of the reason it must be refused for.
const ESCAPING_EXPRESSIONS: &[(&str, &str)] = &[
    // A quote inside a comment hid the rest from the old check.
    (
        "1 /* ' */ ) stored; drop table guard.canary; select (1 /* ' */",
        "comment",
    ),
    ("1 -- ' ) stored; drop table guard.canary", "comment"),
    // A quote inside a quoted identifier.
    (
        "\"'\" ) stored; drop table guard.canary; select (\"'\"",
        "never opened",
    ),
    // A backslash that an escape string reads as an escaped quote.
    (
        "E'\\'' ) stored; drop table guard.canary; select ('",
        "escape string",
    ),
    // Dollar quoting.
    ("$$ ) stored; drop table guard.canary; $$", "dollar"),
    // Another ALTER subcommand in the same statement, no semicolon needed.
    (
        "1) stored, add column evil int generated always as (2",
        "never opened",
    ),
    ("1); drop table guard.canary; select (1", "never opened"),
    ("", "empty"),
];

fn mapping_task(dir: &Path, source: &str, target: &str, expression: &str) -> String {
    let mappings = serde_json::json!({"rules": [
        {"rule-type": "selection", "rule-id": "1", "rule-name": "all", "rule-action": "include",
         "object-locator": {"schema-name": "public", "table-name": "%"}},
        {"rule-type": "transformation", "rule-id": "2", "rule-name": "computed",
         "rule-action": "add-column", "rule-target": "column",
         "object-locator": {"schema-name": "public", "table-name": "items"},
         "value": "label", "expression": expression,
         "data-type": {"type": "string", "length": 50}}
    ]});
    let path = dir.join("mappings.json");
    std::fs::write(&path, mappings.to_string()).unwrap();
    let task = format!(
        "name = \"hostile\"\nmigration_type = \"full-load\"\ntable_mappings = {:?}\n\
         [source]\nurl = {source:?}\n[target]\nurl = {target:?}\n",
        path.to_str().unwrap()
    );
    write_task(dir, &task).to_str().unwrap().to_owned()
}

#[test]
fn add_column_expressions_that_escape_their_parenthesis_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    for (expression, why) in ESCAPING_EXPRESSIONS {
        let task = mapping_task(
            dir.path(),
            "postgres://u@127.0.0.1:1/s",
            "postgres://u@127.0.0.1:1/t",
            expression,
        );
        for command in ["run", "config"] {
            let args: &[&str] = if command == "run" {
                &["run", "--task", &task]
            } else {
                &["config", "explain", "--task", &task]
            };
            let out = run(args);
            assert_eq!(out.status.code(), Some(2), "{expression}: {}", text(&out));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(why), "{expression}: {stderr}");
        }
    }
    // What is accepted is shown whole, since it is SQL that will run on the target.
    let task = mapping_task(
        dir.path(),
        "postgres://u@127.0.0.1:1/s",
        "postgres://u@127.0.0.1:1/t",
        "'it''s \"x\" (' || $name",
    );
    let out = run(&["config", "explain", "--task", &task]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(r#"expression "'it''s \"x\" (' || $name""#),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expression_the_server_rejects_stops_the_schema_step_and_leaves_the_target_untouched() {
    let source = Cluster::start().unwrap();
    let target = Cluster::start().unwrap();
    source.create_database("app").await.unwrap();
    source
        .execute(
            "app",
            "CREATE TABLE items (id int PRIMARY KEY, name text);
             INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 10) g;",
        )
        .await
        .unwrap();
    target.create_database("app").await.unwrap();
    target
        .execute(
            "app",
            "CREATE SCHEMA guard; CREATE TABLE guard.canary (x int); INSERT INTO guard.canary VALUES (1);",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();

    // The issue's payload, end to end: refused, and the canary lives.
    let task = mapping_task(
        dir.path(),
        &source.url("app"),
        &target.url("app"),
        ESCAPING_EXPRESSIONS[0].0,
    );
    let out = run(&["run", "--task", &task]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // One expression the lexer passes but the server's parser does not: refused while
    // planning, before anything is created or stored, so the fixed rule is taken next time.
    let task = mapping_task(
        dir.path(),
        &source.url("app"),
        &target.url("app"),
        "no_such_function($name)",
    );
    let out = run(&["run", "--task", &task]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not valid SQL") && stderr.contains("no_such_function"),
        "{stderr}"
    );
    let client = target.connect("app").await.unwrap();
    let canary: i64 = client
        .query_one("SELECT count(*) FROM guard.canary", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(canary, 1);
    let items: i64 = client
        .query_one("SELECT count(*) FROM pg_class WHERE relname = 'items'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(items, 0, "the schema step rolled back whole");

    // A good expression runs, and computes the column on the target.
    let task = mapping_task(
        dir.path(),
        &source.url("app"),
        &target.url("app"),
        "upper($name) || ' (' || $id::text || ')'",
    );
    let out = run(&["run", "--task", &task]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let label: String = client
        .query_one("SELECT label FROM items WHERE id = 3", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(label, "ITEM 3 (3)");
}

#[test]
fn every_jobs_flag_obeys_the_task_files_limits() {
    let dir = tempfile::tempdir().unwrap();
    let task = offline_task(dir.path(), "");
    let task = task.as_str();
    for args in [
        vec!["validate", "--task", task, "--jobs", "100000"],
        vec!["run", "--task", task, "--jobs", "0"],
        vec!["run", "--task", task, "--jobs=-5"],
        vec!["demo", "--jobs", "257"],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("between 1 and 256") || stderr.contains("whole number"),
            "{args:?}: {stderr}"
        );
    }
    let task = offline_task(dir.path(), "validation = { jobs = 1000 }");
    let out = run(&["validate", "--task", &task]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("validation.jobs"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_out_of_connection_slots_gets_its_own_error_and_nothing_hangs() {
    use pgferry_testkit::{ClusterOptions, datagen};
    // Two slots for everyone: the source of a six-table database cannot serve one
    // connection per table.
    let source = Cluster::start_with(
        ClusterOptions::default()
            .setting("max_connections", "4")
            .setting("superuser_reserved_connections", "0")
            .setting("max_wal_senders", "2"),
    )
    .unwrap();
    let target = Cluster::start().unwrap();
    datagen::create_inventory(&source, "inv", 1).await.unwrap();
    target.create_database("inv").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let task = write_task(
        dir.path(),
        &crate::minimal_task(&source.url("inv"), &target.url("inv"), ""),
    );
    let task = task.to_str().unwrap();
    let out = run(&["run", "--task", task, "--jobs", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Every connection slot taken by others.
    let mut hogs = Vec::new();
    while let Ok(c) = source.connect("inv").await {
        hogs.push(c);
        assert!(hogs.len() <= 4, "max_connections is not enforced");
    }
    let started = std::time::Instant::now();
    let out = run(&["validate", "--task", task, "--jobs", "200", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no free connection slot"), "{stderr}");
    assert!(
        stderr.contains("max_connections") && !stderr.contains("firewall"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "the error comes promptly"
    );
    drop(hogs);
}

/// A server for the HTTP cases: nothing listens on the task's servers, so every read of
/// the control schema fails, which is fine for what these cases check.
async fn http_server(token: Option<&str>) -> pgferry_server::Server {
    use pgferry_config::{MigrationType, Task};
    let task = Task::new(
        MigrationType::FullLoad,
        "postgres://u@127.0.0.1:1/db?connect_timeout=2",
        "postgres://u@127.0.0.1:1/db?connect_timeout=2",
    );
    let target = pgferry_engine::Endpoints::resolve(&task).unwrap().target;
    let sources = pgferry_server::Sources {
        task,
        target,
        observer: std::sync::Arc::new(pgferry_observe::Observer::new(
            Vec::new(),
            std::time::Duration::from_secs(60),
            10,
        )),
        progress: std::sync::Arc::new(pgferry_engine::RunProgress::default()),
        stop: std::sync::Arc::new(|| {}),
    };
    pgferry_server::Server::start(
        "127.0.0.1:0".parse().unwrap(),
        token.map(|t| secrecy::SecretString::from(t.to_owned())),
        sources,
    )
    .await
    .unwrap()
}

async fn http(
    port: u16,
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
) -> pgferry_testkit::http::Response {
    tokio::task::spawn_blocking(move || {
        pgferry_testkit::http::request(port, method, path, &headers, b"").unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn http_errors_are_json_and_a_rebound_host_name_reads_nothing() {
    let server = http_server(None).await;
    let port = server.addr.port();
    // Every error is JSON, axum's own included.
    for (method, path, status, code) in [
        ("GET", "/api/v1/stop", 405, "method_not_allowed"),
        ("GET", "/api/v1/events?limit=abc", 400, "bad_request"),
        ("GET", "/api/v1/series?since=soon", 400, "bad_request"),
        ("GET", "/api/v1/nope", 404, "not_found"),
    ] {
        let r = http(port, method, path, vec![]).await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], code, "{method} {path}");
        assert!(r.json()["error"]["message"].as_str().is_some());
    }
    // DNS rebinding: a page at attacker.example resolved to 127.0.0.1 sends its own name.
    for path in ["/api/v1/live", "/", "/metrics"] {
        let r = http(port, "GET", path, vec![("Host", "attacker.example:9187")]).await;
        assert_eq!(r.status, 403, "{path}");
        assert_eq!(r.json()["error"]["code"], "forbidden");
    }
    for host in ["localhost:9187", "127.0.0.1", "[::1]:9187", "LOCALHOST"] {
        let r = http(port, "GET", "/api/v1/live", vec![("Host", host)]).await;
        assert_eq!(r.status, 200, "{host}");
    }
    server.shutdown();
    // With a token, the token decides, whatever the name.
    let server = http_server(Some("tok")).await;
    let r = http(
        server.addr.port(),
        "GET",
        "/api/v1/live",
        vec![("Host", "pgferry.internal")],
    )
    .await;
    assert_eq!(r.status, 200);
    server.shutdown();
}

#[test]
fn smtp_credentials_never_travel_in_cleartext_unless_asked_to() {
    let dir = tempfile::tempdir().unwrap();
    let notifier = |extra: &str| {
        crate::minimal_task(
            "postgres://u@127.0.0.1:1/s",
            "postgres://u@127.0.0.1:1/t",
            "",
        ) + &format!(
            "[[notifier]]\nkind = \"email\"\nsmtp_host = \"mail.example\"\ntls = \"none\"\n\
             username = \"alerts\"\npassword_env = \"SMTP_PASSWORD\"\n\
             from = \"pgferry@example.com\"\nto = [\"dba@example.com\"]\n{extra}"
        )
    };
    let task = write_task(dir.path(), &notifier(""));
    let out = run(&["config", "explain", "--task", task.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cleartext"),
        "{}",
        text(&out)
    );
    let task = write_task(dir.path(), &notifier("allow_insecure_auth = true\n"));
    let out = run(&["config", "explain", "--task", task.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn values_that_once_slipped_through_are_refused_with_a_plain_reason() {
    let dir = tempfile::tempdir().unwrap();
    for (line, expected) in [
        ("chunk_size = \"99999999999PB\"", "largest chunk"),
        ("chunk_size = \"abc\"", "is not a size"),
        ("chunk_size = -5", "negative"),
        ("chunk_size = \"5 furlongs\"", "unknown unit"),
        ("log_filter = \"info,[[[\"", "not a valid filter"),
    ] {
        refused_by_run_and_explain(&offline_task(dir.path(), line), expected);
    }
}

#[test]
fn config_explain_refuses_what_run_refuses_and_environment_variables_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let task = write_task(
        dir.path(),
        &crate::minimal_task(
            "postgres://u:secret@127.0.0.1:1/s",
            "postgres://u@127.0.0.1:1/t",
            "",
        ),
    );
    let stderr = refused_by_run_and_explain(task.to_str().unwrap(), "holds a password");
    assert!(!stderr.contains("secret"), "{stderr}");

    // A bad PG* variable is named as such, with a hint about the environment.
    let task = offline_task(dir.path(), "");
    let out = crate::pgferry()
        .args(["run", "--task", &task])
        .env("PGSSLMODE", "junk")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("environment variable PGSSLMODE") && stderr.contains("unset PGSSLMODE"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_readable_pgpass_is_reported_once_not_per_connection() {
    let (_source, _target, dir, task) = inventory_pair().await;
    let pgpass = dir.path().join("pgpass");
    std::fs::write(&pgpass, "*:*:*:*:unused\n").unwrap();
    std::fs::set_permissions(&pgpass, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = crate::pgferry()
        .args(["run", "--task", &task, "--jobs", "3"])
        .env("PGPASSFILE", &pgpass)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr
            .matches("password file has group or world access")
            .count(),
        1,
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn run_after_cleanup_says_what_happened_leaves_nothing_and_start_over_resumes() {
    let (source, target, _dir, task) =
        crate::cdc_pair(&["CREATE TABLE t (id int PRIMARY KEY, v text)"]).await;
    // Nothing to start over before the first run.
    let out = run(&["run", "--task", &task, "--start-over"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("never run"), "{}", text(&out));
    let mut child = crate::pgferry()
        .args(["run", "--task", &task])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    crate::wait_for_cdc(&target, "app", &mut child).await;
    let out = run(&["stop", "--task", &task]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    child.wait().unwrap();
    let out = run(&["cleanup", "--task", &task]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let out = run(&["run", "--task", &task, "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("was cleaned up"), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        json["hint"].as_str().unwrap_or("").contains("--start-over"),
        "{json}"
    );
    let client = source.connect("app").await.unwrap();
    let on_source = "SELECT (SELECT count(*) FROM pg_publication) + (SELECT count(*) FROM pg_replication_slots)";
    let left: i64 = client.query_one(on_source, &[]).await.unwrap().get(0);
    assert_eq!(left, 0, "the refused run left nothing on the source");

    // The way forward it names: the publication and a slot again, the table kept.
    client
        .execute("INSERT INTO t VALUES (1, 'after cleanup')", &[])
        .await
        .unwrap();
    let mut child = crate::pgferry()
        .args(["run", "--task", &task, "--start-over", "--no-progress"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let control = target.connect("app").await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let note = loop {
        assert!(child.try_wait().unwrap().is_none(), "the start-over exited");
        let row = control
            .query_opt(
                "SELECT message FROM pgferry.event WHERE message LIKE 'started over%'
                 AND (SELECT phase FROM pgferry.task) = 'cdc'
                 AND (SELECT received_lsn FROM pgferry.cdc_state) IS NOT NULL",
                &[],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            break row.get::<_, String>(0);
        }
        assert!(std::time::Instant::now() < deadline, "never streamed again");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(note.contains("0 of 1 table(s) match"), "{note}");
    let out = run(&["stop", "--task", &task]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    child.wait().unwrap();
    let rows: i64 = control
        .query_one("SELECT count(*) FROM t WHERE v = 'after cleanup'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
    let now: i64 = client.query_one(on_source, &[]).await.unwrap().get(0);
    assert_eq!(now, 2, "a publication and a slot");
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_a_blocked_validate_at_once_and_leaves_no_session() {
    let (source, _target, _dir, task) = inventory_pair().await;
    let out = run(&["run", "--task", &task]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // Another session holds every table: validate blocks on its first read.
    let (mut blocker, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname=inv",
            source.port()
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let tx = blocker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE products, orders, customers IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let child = crate::pgferry()
        .args(["validate", "--task", &task])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "Ctrl-C took {:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    tx.rollback().await.unwrap();
    // The server ends the interrupted sessions: no validate session stays behind.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left: i64 = blocker
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pgferry%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left} pgferry session(s) left"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// `assess` quotes every name it reads from the catalog: a table and a column named like
/// SQL, with enough rows to be the table the timed sample reads, run nothing, and the
/// findings name them as they are.
#[tokio::test(flavor = "multi_thread")]
async fn assess_reads_hostile_names_as_names() {
    let source = Cluster::start().unwrap();
    let target = Cluster::start().unwrap();
    source.create_database("app").await.unwrap();
    target.create_database("app").await.unwrap();
    source
        .execute(
            "app",
            r#"CREATE TABLE victim (id int PRIMARY KEY);
               CREATE TABLE "a""b; DROP TABLE victim; --" (
                   "x""); DROP TABLE victim; --" text, n int);
               INSERT INTO "a""b; DROP TABLE victim; --"
                   SELECT md5(g::text), g FROM generate_series(1, 5000) g;
               ANALYZE;"#,
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let task = write_task(
        dir.path(),
        &format!(
            "migration_type = \"full-load-and-cdc\"\n[source]\nurl = \"{}\"\n[target]\n\
             url = \"{}\"\n[cdc]\nno_key_tables = \"exclude\"\n",
            source.url("app"),
            target.url("app")
        ),
    );
    let out = run(&[
        "assess",
        "--task",
        task.to_str().unwrap(),
        "--json",
        "--wal-sample",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let keyless = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "table.no_key")
        .unwrap_or_else(|| panic!("{json:#}"));
    assert_eq!(
        keyless["object"], "public.\"a\"\"b; DROP TABLE victim; --\"",
        "{keyless:#}"
    );
    assert!(
        json["estimate"]["sample_bytes"].as_u64().unwrap() > 0,
        "the sample read the hostile table: {json:#}"
    );
    let victim: i64 = source
        .connect("app")
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM victim", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(victim, 0, "victim still exists");
}

/// Schema changes carry names and literals from the source's catalog into statements on
/// the target: names that close a quote or a parenthesis and append a statement stay
/// names, and labels and defaults stay values.
#[tokio::test(flavor = "multi_thread")]
async fn schema_changes_with_hostile_names_stay_names_on_the_target() {
    let (source, target, dir, _) = crate::cdc_pair(&[
        "CREATE TABLE victim (id int PRIMARY KEY); INSERT INTO victim VALUES (1);",
    ])
    .await;
    let task = write_task(
        dir.path(),
        &crate::cdc_task(&source.url("app"), &target.url("app")).replace(
            "[cdc]\n",
            "[cdc]\nddl = true\nddl_error_policy = \"STOP_TASK\"\n",
        ),
    );
    let task = task.to_str().unwrap().to_owned();
    let mut child = crate::pgferry()
        .args(["run", "--task", &task])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    crate::wait_for_cdc(&target, "app", &mut child).await;
    let table = r#""s; DROP TABLE victim; --"."t'); DROP TABLE victim; --""#;
    for sql in [
        r#"CREATE SCHEMA "s; DROP TABLE victim; --""#.to_owned(),
        r#"CREATE TYPE "s; DROP TABLE victim; --"."e'num" AS ENUM ('a''); DROP TABLE victim; --')"#
            .to_owned(),
        r#"ALTER TYPE "s; DROP TABLE victim; --"."e'num" ADD VALUE 'b"); DROP TABLE victim; --'"#
            .to_owned(),
        format!(
            r#"CREATE TABLE {table} ("c""ol" int PRIMARY KEY,
                 "x y" text DEFAULT 'it''s''); DROP TABLE victim; --',
                 "e" "s; DROP TABLE victim; --"."e'num")"#
        ),
        format!(r#"INSERT INTO {table} ("c""ol", e) VALUES (1, 'a''); DROP TABLE victim; --')"#),
        format!(r#"ALTER TABLE {table} RENAME COLUMN "x y" TO "x'); DROP TABLE victim; --""#),
        format!(
            r#"CREATE INDEX "i; DROP TABLE victim; --" ON {table} ("x'); DROP TABLE victim; --")"#
        ),
        format!(
            r#"ALTER TABLE {table} ADD CONSTRAINT "k'); DROP TABLE victim; --"
                 CHECK ("c""ol" <> 42)"#
        ),
        format!(r#"INSERT INTO {table} ("c""ol", e) VALUES (2, 'b"); DROP TABLE victim; --')"#),
        // A secret in the same query string as a captured change: never recorded.
        "CREATE EXTENSION IF NOT EXISTS postgres_fdw; CREATE SERVER elsewhere FOREIGN DATA \
         WRAPPER postgres_fdw; CREATE USER MAPPING FOR CURRENT_USER SERVER elsewhere \
         OPTIONS (user 'u', password 'hunter2-secret'); CREATE TABLE near (id int PRIMARY KEY)"
            .to_owned(),
    ] {
        source
            .execute("app", &sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    source
        .wait_for_slot(
            "app",
            "pgferry_default",
            std::time::Duration::from_secs(120),
        )
        .await
        .unwrap();
    let out = run(&["stop", "--task", &task]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(child.wait().unwrap().code(), Some(0));
    crate::assert_identical(&source, &target, "app").await;
    let t = target.connect("app").await.unwrap();
    let applied: i64 = t
        .query_one(
            "SELECT count(*) FROM pgferry.ddl_log WHERE outcome = 'applied'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, 8, "every change applied");
    let leaked: i64 = t
        .query_one(
            "SELECT (SELECT count(*) FROM pgferry.ddl_log l WHERE l::text LIKE '%hunter2%')
                  + (SELECT count(*) FROM pgferry.event e WHERE e::text LIKE '%hunter2%')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        leaked, 0,
        "the password of a user mapping is recorded nowhere"
    );
    let index: i64 = t
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'i; DROP TABLE victim; --'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(index, 1);
}
