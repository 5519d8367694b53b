//! `pgferry assess`: problems planted on real servers are found with their severity and a
//! fix, nothing is written on either server, and the exit codes are 0 (ready), 1
//! (warnings only) and 3 (a blocker).

use std::path::Path;

use pgferry_testkit::{Cluster, ClusterOptions};
use serde_json::Value;

use crate::{pgferry, text, write_task};

/// What assessing must never change, read on one server: the control schema, slots,
/// publications, replica identities and event triggers.
async fn footprint(cluster: &Cluster, db: &str) -> String {
    let c = cluster.connect(db).await.unwrap();
    c.query_one(
        "SELECT concat_ws(' | ',
            (SELECT count(*) FROM pg_namespace WHERE nspname = 'pgferry'),
            (SELECT string_agg(slot_name, ',' ORDER BY slot_name) FROM pg_replication_slots),
            (SELECT string_agg(pubname, ',' ORDER BY pubname) FROM pg_publication),
            (SELECT string_agg(relname || relreplident::text, ',' ORDER BY relname) FROM pg_class
             WHERE relnamespace = 'public'::regnamespace),
            (SELECT string_agg(evtname, ',' ORDER BY evtname) FROM pg_event_trigger))",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// The footprints of both servers' `app` databases.
async fn footprints(source: &Cluster, target: &Cluster) -> (String, String) {
    (
        footprint(source, "app").await,
        footprint(target, "app").await,
    )
}

/// Runs `pgferry assess --json` on a task file; returns the exit code and the findings.
fn assess(task: &Path, extra: &[&str]) -> (Option<i32>, Value) {
    let out = pgferry()
        .args([
            "assess",
            "--task",
            task.to_str().unwrap(),
            "--json",
            "--wal-sample",
            "1",
        ])
        .args(extra)
        .env("ASSESSOR_PASSWORD", "pw")
        .output()
        .unwrap();
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", text(&out)));
    (out.status.code(), json)
}

/// The findings of check `id`.
fn found<'a>(json: &'a Value, id: &str) -> Vec<&'a Value> {
    json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == id)
        .collect()
}

/// Asserts that check `id` found `object` (or anything, for `None`) with `severity`, and
/// that the finding says what to do.
fn assert_found(json: &Value, id: &str, severity: &str, object: Option<&str>) {
    let hits = found(json, id);
    let hit = hits
        .iter()
        .find(|f| object.is_none_or(|o| f["object"].as_str() == Some(o)))
        .unwrap_or_else(|| panic!("no {id} finding for {object:?}: {json:#}"));
    assert_eq!(hit["severity"], severity, "{hit:#}");
    assert!(hit["fix"].as_str().is_some_and(|f| f.len() > 10), "{hit:#}");
    assert!(
        hit["message"].as_str().is_some_and(|m| m.len() > 10),
        "{hit:#}"
    );
}

/// A `full-load-and-cdc` task file: `top` holds top-level keys, `tables` TOML tables
/// (`[[include]]`) that come after the endpoints.
fn cdc_task(dir: &Path, source: &str, target: &str, top: &str, tables: &str) -> std::path::PathBuf {
    write_task(
        dir,
        &format!(
            "migration_type = \"full-load-and-cdc\"\n{top}\n[source]\nurl = \"{source}\"\n\
             [target]\nurl = \"{target}\"\n{tables}\n"
        ),
    )
}

/// A source of `major` (`None`: Debian's) whose `app` database holds `setup`, and a
/// target with an empty `app`.
async fn pair(major: Option<u32>, setup: &str) -> (Cluster, Cluster) {
    let source = Cluster::start_with(ClusterOptions {
        major,
        ..Default::default()
    })
    .unwrap();
    let target = Cluster::start().unwrap();
    source.create_database("app").await.unwrap();
    target.create_database("app").await.unwrap();
    source.execute("app", setup).await.unwrap();
    (source, target)
}

const CLEAN: &str = "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL);
     INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 20000) g;
     ANALYZE items;";

#[tokio::test(flavor = "multi_thread")]
async fn a_clean_source_is_ready_and_nothing_is_written() {
    clean_source_is_ready(None).await;
}

/// The oldest source: settings that 12 lacks (`logical_decoding_work_mem`,
/// `max_slot_wal_keep_size`) are not findings, the version note says what differs, and a
/// big table without a key cannot split there.
#[tokio::test(flavor = "multi_thread")]
async fn a_12_source_warns_of_a_big_table_that_cannot_split() {
    let setup = format!(
        "{CLEAN}
         CREATE TABLE heap (n int, note text);
         INSERT INTO heap SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 30000) g;
         ANALYZE heap;"
    );
    let (source, target) = pair(Some(12), &setup).await;
    let dir = tempfile::tempdir().unwrap();
    let task = cdc_task(
        dir.path(),
        &source.url("app"),
        &target.url("app"),
        "chunk_size = \"1MB\"",
        "[cdc]\nno_key_tables = \"replica-identity-full\"",
    );
    let (code, json) = assess(&task, &[]);
    assert_eq!(code, Some(1), "{json:#}");
    assert_found(&json, "source.version", "info", None);
    assert_found(&json, "size.biggest_table", "warning", Some("public.heap"));
    assert_found(&json, "table.no_key", "warning", Some("public.heap"));
    assert!(found(&json, "source.logical_decoding_work_mem").is_empty());
    let heap = json["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "public.heap")
        .unwrap();
    assert!(
        heap["split"].as_str().unwrap().contains("cannot split"),
        "{heap:#}"
    );
    let estimate = &json["estimate"];
    assert!(
        estimate["seconds"].as_f64().unwrap()
            >= heap["bytes"].as_f64().unwrap()
                / estimate["sample_bytes_per_second"].as_f64().unwrap()
                * 0.99,
        "the table one job reads alone bounds the estimate: {estimate:#}"
    );
}

async fn clean_source_is_ready(major: Option<u32>) -> Value {
    let (source, target) = pair(major, CLEAN).await;
    let dir = tempfile::tempdir().unwrap();
    let task = cdc_task(dir.path(), &source.url("app"), &target.url("app"), "", "");
    let before = (
        footprint(&source, "app").await,
        footprint(&target, "app").await,
    );

    let report = dir.path().join("assessment.md");
    let (code, json) = assess(&task, &["--markdown", report.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{json:#}");
    assert_eq!(json["summary"]["verdict"], "ready");
    assert_eq!(json["summary"]["blockers"], 0);
    assert_found(&json, "size.total", "info", None);
    assert_found(&json, "size.biggest_table", "info", Some("public.items"));
    assert_found(&json, "size.estimate", "info", None);
    assert_found(&json, "size.wal_retained", "info", None);
    let estimate = &json["estimate"];
    let (low, mid, high) = (
        estimate["seconds_low"].as_f64().unwrap(),
        estimate["seconds"].as_f64().unwrap(),
        estimate["seconds_high"].as_f64().unwrap(),
    );
    assert!(low > 0.0 && low <= mid && mid <= high, "{estimate:#}");
    assert!(
        estimate["sample_bytes"].as_u64().unwrap() > 0,
        "{estimate:#}"
    );
    let md = std::fs::read_to_string(&report).unwrap();
    assert!(md.contains("Verdict: **ready**"), "{md}");
    assert!(md.contains("`size.estimate`"), "{md}");

    assert_eq!(
        footprints(&source, &target).await,
        before,
        "assess changed a server"
    );
    json
}

/// Problems planted on the source and the target, each found with its severity and fix.
#[tokio::test(flavor = "multi_thread")]
async fn planted_problems_are_found_with_their_fixes_and_block() {
    let source = Cluster::start_with(
        ClusterOptions::default()
            .setting("wal_sender_timeout", "'5s'")
            .setting("logical_decoding_work_mem", "'1MB'")
            .setting("max_prepared_transactions", "2")
            .setting("max_replication_slots", "1")
            .setting("max_slot_wal_keep_size", "'1MB'")
            .setting("max_wal_senders", "1"),
    )
    .unwrap();
    let target = Cluster::start().unwrap();
    source.create_database("app").await.unwrap();
    source
        .execute(
            "app",
            "CREATE TABLE keyless (a int, b text);
             CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY);
             CREATE TABLE events (id int, at date NOT NULL, PRIMARY KEY (id, at))
                 PARTITION BY RANGE (at);
             CREATE TABLE events_2026 PARTITION OF events
                 FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
             CREATE TABLE priced (id int PRIMARY KEY, net int, gross int
                 GENERATED ALWAYS AS (net * 2) STORED, op regoper);
             CREATE TABLE existing (id int PRIMARY KEY);
             CREATE ROLE app_owner;
             CREATE TABLE owned (id int PRIMARY KEY);
             ALTER TABLE owned OWNER TO app_owner;
             SELECT lo_from_bytea(0, 'hello');
             CREATE FUNCTION noop() RETURNS event_trigger LANGUAGE plpgsql
                 AS $$ BEGIN END $$;
             CREATE EVENT TRIGGER audit ON ddl_command_end EXECUTE FUNCTION noop();
             CREATE PUBLICATION theirs FOR TABLE existing;
             CREATE TABLE hosts (addr inet PRIMARY KEY);
             CREATE COLLATION german (provider = icu, locale = 'de-DE');
             CREATE TABLE names (id int PRIMARY KEY, name text COLLATE german);
             CREATE TABLE wide (id int PRIMARY KEY, body text);
             INSERT INTO wide SELECT g, (SELECT string_agg(md5(random()::text || i), '')
                                         FROM generate_series(1, 30000) i)
             FROM generate_series(1, 3) g;
             ANALYZE wide;",
        )
        .await
        .unwrap();
    for sql in [
        "SELECT pg_create_logical_replication_slot('their_slot', 'pgoutput')",
        "CREATE SUBSCRIPTION theirs_in CONNECTION 'host=127.0.0.1 port=1 dbname=x' \
         PUBLICATION p WITH (connect = false)",
        // WAL beyond max_slot_wal_keep_size: the checkpoint invalidates their slot.
        "CREATE TABLE filler AS SELECT g, md5(g::text) FROM generate_series(1, 600000) g",
        "DROP TABLE filler",
        "SELECT pg_switch_wal()",
        "CHECKPOINT",
    ] {
        source.execute("app", sql).await.unwrap();
    }
    // The target's database in another encoding, with a table in the way.
    target
        .execute(
            "postgres",
            "CREATE DATABASE app ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' \
             TEMPLATE template0",
        )
        .await
        .unwrap();
    target
        .execute("app", "CREATE TABLE existing (id int PRIMARY KEY)")
        .await
        .unwrap();
    // A session with a temporary table, an idle transaction and a prepared one.
    let temp = source.connect("app").await.unwrap();
    temp.batch_execute("CREATE TEMP TABLE mine (x int)")
        .await
        .unwrap();
    let idle = source.connect("app").await.unwrap();
    idle.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let prep = source.connect("app").await.unwrap();
    prep.batch_execute("BEGIN; CREATE TABLE prepared_t (); PREPARE TRANSACTION 'p1'")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("settings.json"),
        r#"{"FullLoadSettings": {"CommitRate": 5000}}"#,
    )
    .unwrap();
    let task = cdc_task(
        dir.path(),
        &source.url("app"),
        &target.url("app"),
        "task_settings = \"settings.json\"\nkeep_owners = true",
        "[[include]]\nschema = \"public\"\ntable = \"%\"\n\
         [[include]]\nschema = \"nosuch\"\ntable = \"%\"",
    );
    let before = (
        footprint(&source, "app").await,
        footprint(&target, "app").await,
    );
    let (code, json) = assess(&task, &["--long-transaction", "1"]);

    assert_eq!(code, Some(3), "{json:#}");
    assert_eq!(json["summary"]["verdict"], "blocked");
    for (id, severity, object) in [
        ("table.no_key", "blocker", Some("public.keyless")),
        ("table.unlogged", "warning", Some("public.scratch")),
        ("table.partitioned", "info", Some("public.events")),
        ("table.generated_columns", "info", Some("public.priced")),
        ("types.reg", "warning", Some("public.priced")),
        // The DMS settings file brings DMS's default, DROP_AND_CREATE.
        ("target.table_exists", "warning", Some("public.existing")),
        ("objects.roles", "blocker", None),
        ("objects.subscriptions", "warning", None),
        ("source.max_replication_slots", "blocker", None),
        ("source.max_wal_senders", "warning", None),
        ("table.temporary", "info", None),
        ("table.key_type", "warning", Some("public.hosts")),
        ("types.wide_rows", "warning", Some("public.wide")),
        ("text.collation_missing", "blocker", Some("german")),
        ("objects.large_objects", "warning", None),
        ("objects.event_triggers", "warning", None),
        ("objects.publications", "info", None),
        ("source.existing_slot", "warning", Some("their_slot")),
        ("source.long_transaction", "warning", None),
        ("source.prepared_transaction", "blocker", None),
        ("source.wal_sender_timeout", "warning", None),
        ("source.logical_decoding_work_mem", "warning", None),
        ("text.encoding", "blocker", None),
        ("task.rule_matches_nothing", "warning", Some("nosuch.%")),
        (
            "task.dms_setting",
            "warning",
            Some("FullLoadSettings.CommitRate"),
        ),
    ] {
        assert_found(&json, id, severity, object);
    }
    let slot = found(&json, "source.existing_slot")[0]["message"]
        .as_str()
        .unwrap();
    assert!(slot.contains("invalidated"), "{slot}");
    let roles = found(&json, "objects.roles")[0]["fix"].as_str().unwrap();
    assert!(roles.contains("CREATE ROLE \"app_owner\""), "{roles}");
    let prepared = found(&json, "source.prepared_transaction")[0]["fix"]
        .as_str()
        .unwrap();
    assert!(prepared.contains("'p1'"), "{prepared}");

    // The Markdown and text forms carry the same verdict.
    let out = pgferry()
        .args([
            "assess",
            "--task",
            task.to_str().unwrap(),
            "--wal-sample",
            "0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("BLOCKED"),
        "{}",
        text(&out)
    );

    prep.batch_execute("ROLLBACK PREPARED 'p1'").await.unwrap();
    drop((idle, temp));
    assert_eq!(
        footprints(&source, &target).await,
        before,
        "assess changed a server"
    );
}

/// A user without REPLICATION, without SELECT on a table and a sequence, and without
/// CREATE on the target: each is a blocker with the GRANT that fixes it. Warnings alone
/// exit 1.
#[tokio::test(flavor = "multi_thread")]
async fn missing_privileges_block_and_warnings_alone_exit_1() {
    let setup = format!(
        "{CLEAN}
                 CREATE TABLE secret (id serial PRIMARY KEY);
                 CREATE TABLE notes (body text);
                 CREATE ROLE assessor LOGIN PASSWORD 'pw';
                 GRANT SELECT ON items, notes TO assessor;
                 SELECT lo_from_bytea(0, 'not for assessor');"
    );
    let (source, target) = pair(None, &setup).await;
    target
        .execute(
            "app",
            "CREATE ROLE assessor LOGIN PASSWORD 'pw'; REVOKE CREATE ON DATABASE app FROM PUBLIC;",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (s_url, t_url) = (
        source.url_for("assessor", "app"),
        target.url_for("assessor", "app"),
    );
    let task = cdc_task(
        dir.path(),
        &s_url,
        &t_url,
        "",
        "[cdc]\nno_key_tables = \"replica-identity-full\"",
    );
    // Passwords never go in the task file: both sides read it from the environment.
    let mut body = std::fs::read_to_string(&task).unwrap();
    for url in [&s_url, &t_url] {
        body = body.replace(
            &format!("url = \"{url}\"\n"),
            &format!("url = \"{url}\"\npassword_env = \"ASSESSOR_PASSWORD\"\n"),
        );
    }
    std::fs::write(&task, body).unwrap();
    let (code, json) = assess(&task, &[]);
    assert_eq!(code, Some(3), "{json:#}");
    for id in [
        "source.replication_privilege",
        "source.select",
        "source.sequence_select",
        "target.create",
        "table.replica_identity_owner",
        "source.large_object_select",
    ] {
        assert_found(&json, id, "blocker", None);
    }
    let select = found(&json, "source.select")[0];
    assert!(
        select["message"]
            .as_str()
            .unwrap()
            .contains("public.secret"),
        "{select:#}"
    );
    assert!(
        select["fix"]
            .as_str()
            .unwrap()
            .contains("GRANT SELECT ON ALL TABLES IN SCHEMA \"public\" TO \"assessor\""),
        "{select:#}"
    );

    // `run` refuses on the same blockers, before it changes anything.
    let out = pgferry()
        .args(["run", "--task", task.to_str().unwrap()])
        .env("ASSESSOR_PASSWORD", "pw")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("problems block the run"), "{stderr}");
    assert!(stderr.contains("REPLICATION"), "{stderr}");
    assert_eq!(footprint(&target, "app").await.split(' ').next(), Some("0"));

    // The superuser on a source with a short wal_sender_timeout: warnings only.
    for sql in [
        "ALTER SYSTEM SET wal_sender_timeout = '5s'",
        "SELECT pg_reload_conf()",
    ] {
        source.execute("app", sql).await.unwrap();
    }
    let task = cdc_task(
        dir.path(),
        &source.url("app"),
        &target.url("app"),
        "",
        "[[exclude]]\nschema = \"public\"\ntable = \"secret\"\n\
         [[exclude]]\nschema = \"public\"\ntable = \"notes\"",
    );
    let (code, json) = assess(&task, &[]);
    assert_eq!(code, Some(1), "{json:#}");
    assert_eq!(json["summary"]["verdict"], "warnings");
    assert_found(&json, "source.wal_sender_timeout", "warning", None);
}

/// Extensions against an older target (PostgreSQL 14): one it cannot install at all
/// (`pg_walinspect` came in 15) blocks, one it has only at older versions
/// (`pg_stat_statements` 1.10) warns, and the older target itself warns.
#[tokio::test(flavor = "multi_thread")]
async fn extensions_the_target_lacks_are_found() {
    let (source, _) = pair(
        None,
        "CREATE TABLE items (id int PRIMARY KEY);
         CREATE EXTENSION pg_walinspect;
         CREATE EXTENSION pg_stat_statements;",
    )
    .await;
    let target = Cluster::start_with(ClusterOptions::default().major(14)).unwrap();
    target.create_database("app").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let task = cdc_task(dir.path(), &source.url("app"), &target.url("app"), "", "");
    let (code, json) = assess(&task, &[]);
    assert_eq!(code, Some(3), "{json:#}");
    assert_found(
        &json,
        "objects.extension_missing",
        "blocker",
        Some("pg_walinspect"),
    );
    assert_found(
        &json,
        "objects.extension_version",
        "warning",
        Some("pg_stat_statements"),
    );
    assert_found(&json, "target.version", "warning", None);
}

/// A CDC-only task streams into existing tables: one missing on the target (by its name
/// under the task's rules) blocks, as `run` refuses it.
#[tokio::test(flavor = "multi_thread")]
async fn a_cdc_only_task_needs_its_tables_on_the_target() {
    let (source, target) = pair(
        None,
        "CREATE TABLE items (id int PRIMARY KEY); CREATE TABLE extra (id int PRIMARY KEY);",
    )
    .await;
    target
        .execute("app", "CREATE TABLE items (id int PRIMARY KEY)")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let task = write_task(
        dir.path(),
        &format!(
            "migration_type = \"cdc\"\n[source]\nurl = \"{}\"\n[target]\nurl = \"{}\"\n",
            source.url("app"),
            target.url("app")
        ),
    );
    let (code, json) = assess(&task, &[]);
    assert_eq!(code, Some(3), "{json:#}");
    assert_found(
        &json,
        "target.table_missing",
        "blocker",
        Some("public.extra"),
    );
    assert_eq!(found(&json, "target.table_missing").len(), 1, "{json:#}");
    let out = pgferry()
        .args(["run", "--task", task.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("public.extra"),
        "{}",
        text(&out)
    );
}
