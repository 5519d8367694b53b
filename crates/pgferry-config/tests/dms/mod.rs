//! DMS JSON files, read as they are: the seed's exact files, every rule kind, quirks and
//! the errors a user sees.

use std::path::{Path, PathBuf};

use pgferry_config::explain::{Origin, Treatment};
use pgferry_config::mapping::{AddedValue, ChunkHint, ExprPart, SourceColumn};
use pgferry_config::{ErrorPolicy, TargetTablePrepMode, Task};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn task_with(extra: &str) -> Result<Task, String> {
    let text = format!(
        "migration_type = \"full-load-and-cdc\"\n{extra}\n[source]\nurl = \"host=a\"\n[target]\nurl = \"host=b\"\n"
    );
    let dir = data("");
    Task::parse(&text, Some(&dir.join("task.toml"))).map_err(|e| e.to_string())
}

fn write_temp(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn the_seed_terraform_files_work_as_they_are() {
    let task = task_with(
        "table_mappings = \"seed-table-mappings.json\"\ntask_settings = \"seed-task-settings.json\"",
    )
    .unwrap();
    assert!(task.selection.includes_table("public", "orders"));
    assert!(task.selection.includes_table("inventory", "items"));
    assert_eq!(task.full_load.jobs, 8);
    assert_eq!(
        task.full_load.target_table_prep_mode,
        TargetTablePrepMode::DoNothing
    );
    let e = &task.cdc.errors;
    assert_eq!(e.data_error_escalation_count, 50);
    assert_eq!(e.data_error_escalation_policy, ErrorPolicy::SuspendTable);
    assert_eq!(e.apply_error_delete_policy, ErrorPolicy::IgnoreRecord);
    assert_eq!(e.recoverable_error_count, -1);
    assert_eq!(
        task.cdc.batch_max_delay.as_millis(),
        1000,
        "CommitTimeout = 1 s"
    );
    assert_eq!(
        task.cdc.batch_max_bytes,
        500 * 1024 * 1024,
        "BatchApplyMemoryLimit = 500 MB"
    );
    assert_eq!(
        task.cdc.batch_max_changes, 10_000,
        "BatchSplitSize 0 means no limit of its own"
    );
    assert!(task.cdc.apply_truncate && task.cdc.add_new_columns);
    // HandleSourceTableAltered and HandleSourceTableDropped: DDL is captured and applied.
    assert!(task.cdc.ddl && task.cdc.apply_drop_table);
    assert_eq!(
        task.cdc.ddl_error_policy,
        pgferry_config::ErrorPolicy::SuspendTable,
        "TableErrorPolicy"
    );
    let filter = task.log_filter.as_deref().unwrap();
    assert!(filter.contains("pgferry_engine::cdc=info"), "{filter}");
    assert!(task.mapping.is_empty());

    let x = &task.explanation;
    let jobs = x.get("jobs").unwrap();
    assert_eq!(jobs.origin, Origin::DmsJson);
    assert_eq!(
        jobs.dms.as_deref(),
        Some("FullLoadSettings.MaxFullLoadSubTasks")
    );
    assert_eq!(x.get("chunk_size").unwrap().origin, Origin::Default);
    assert_eq!(
        x.get("error_behavior.data_error_escalation_count")
            .unwrap()
            .origin,
        Origin::DmsJson
    );
    for setting in [
        "TargetMetadata.SupportLobs/FullLobMode/LimitedSizeLobMode/LobMaxSize",
        "ChangeProcessingDdlHandlingPolicy.HandleSourceTableAltered",
        "ErrorBehavior.EventErrorPolicy",
        "ErrorBehavior.FullLoadIgnoreConflicts",
        "FullLoadSettings.TransactionConsistencyTimeout",
        "ChangeProcessingTuning.MemoryLimitTotal",
        "ChangeProcessingTuning.StatementCacheSize",
        "ErrorBehavior.DataTruncationErrorPolicy",
    ] {
        assert!(
            x.warnings.iter().any(|w| w.setting == setting),
            "no warning for {setting}: {:#?}",
            x.warnings
        );
    }
    let lob = x
        .warnings
        .iter()
        .find(|w| w.setting.starts_with("TargetMetadata.SupportLobs"))
        .unwrap();
    assert!(
        lob.reason.contains("32 KB") && lob.reason.contains("never truncates"),
        "{}",
        lob.reason
    );
}

#[test]
fn the_three_tier_guide_files_work_as_they_are() {
    let task = task_with(
        "table_mappings = \"three-tier-table-mappings.json\"\ntask_settings = \"three-tier-task-settings.json\"",
    )
    .unwrap();
    assert!(task.selection.includes_table("public", "orders"));
    assert!(!task.selection.includes_table("audit", "orders"));
    assert_eq!(
        task.full_load.target_table_prep_mode,
        TargetTablePrepMode::DoNothing
    );
    assert_eq!(
        task.full_load.jobs, 8,
        "DMS's default for MaxFullLoadSubTasks"
    );
    assert_eq!(
        task.explanation.get("jobs").unwrap().origin,
        Origin::DmsDefault
    );
    assert!(
        task.mapping.transforms.is_empty(),
        "an empty TargetSchema renames nothing"
    );
}

#[test]
fn toml_keys_override_the_dms_files() {
    let task = task_with(
        "jobs = 3\ntask_settings = \"seed-task-settings.json\"\n[error_behavior]\ndata_error_policy = \"STOP_TASK\"",
    )
    .unwrap();
    assert_eq!(task.full_load.jobs, 3);
    assert_eq!(task.explanation.get("jobs").unwrap().origin, Origin::Toml);
    assert_eq!(task.cdc.errors.data_error_policy, ErrorPolicy::StopTask);
    assert_eq!(
        task.cdc.errors.data_error_escalation_count, 50,
        "the rest stays from DMS"
    );
}

#[test]
fn every_rule_kind_resolves_for_a_table() {
    let task = task_with("table_mappings = \"every-rule-kind.json\"").unwrap();
    let s = &task.selection;
    assert!(s.includes_table("sales", "customers"));
    assert!(
        !s.includes_table("sales", "audit_log"),
        "exclude with a bracketed _"
    );
    assert!(s.includes_table("sales", "auditlog"));
    assert!(s.includes_table("public", "order_lines"));
    assert!(
        !s.includes_table("public", "orderXlines"),
        "explicit names are literal"
    );
    let cols = [
        SourceColumn {
            name: "ID",
            type_name: "integer",
        },
        SourceColumn {
            name: "first",
            type_name: "text",
        },
        SourceColumn {
            name: "last",
            type_name: "text",
        },
        SourceColumn {
            name: "secret",
            type_name: "text",
        },
        SourceColumn {
            name: "score",
            type_name: "integer",
        },
    ];
    let m = task
        .mapping
        .table("sales", "customers", ("sales", "customers"), &cols)
        .unwrap();
    assert_eq!(
        (m.target_schema.as_str(), m.target_table.as_str()),
        ("crm", "s_customers")
    );
    assert_eq!(m.target_column("ID"), Some("id"));
    assert_eq!(m.target_column("secret"), None);
    assert_eq!(m.columns[4].new_type.as_deref(), Some("bigint"));
    assert_eq!(m.added.len(), 1);
    assert_eq!(m.added[0].name, "full_name");
    assert_eq!(m.added[0].type_sql, "character varying(101)");
    assert_eq!(
        m.added[0].value,
        AddedValue::Expression(vec![
            ExprPart::Column("first".into()),
            ExprPart::Sql(" || ' ' || ".into()),
            ExprPart::Column("last".into()),
        ])
    );
    let (pk, _) = m.primary_key.clone().unwrap();
    assert_eq!(pk.columns, ["id"], "key columns follow the column renames");
    assert_eq!(
        m.chunks,
        Some(ChunkHint::Ranges {
            column: "id".into(),
            boundaries: vec!["1000".into(), "2000".into()]
        }),
        "one column's ranges split at its boundaries"
    );
    assert_eq!(m.load_order, 2);
    assert!(m.filters.is_empty());

    let lines = task
        .mapping
        .table(
            "public",
            "order_lines",
            ("public", "order_lines"),
            &[
                SourceColumn {
                    name: "status",
                    type_name: "text",
                },
                SourceColumn {
                    name: "qty",
                    type_name: "integer",
                },
            ],
        )
        .unwrap();
    assert_eq!(lines.target_schema, "public", "only sales is renamed");
    assert_eq!(lines.filters.len(), 2);
    assert_eq!(lines.filters[0].conditions.len(), 2);
    assert_eq!(
        lines.filters[1].conditions[0].end.as_deref(),
        Some("10"),
        "numbers read as text"
    );

    let w = &task.explanation.warnings;
    assert!(
        w.iter()
            .any(|w| w.setting.ends_with("some-new-field") && w.treatment == Treatment::Ignored)
    );
    assert!(
        w.iter()
            .any(|w| w.setting.ends_with("lob-settings") && w.treatment == Treatment::Different)
    );
    assert!(
        !w.iter().any(|w| w.setting.ends_with("parallel-load")),
        "one column's ranges are done as DMS does them"
    );
}

fn mappings_error(json: &str) -> String {
    let (_dir, path) = write_temp("m.json", json);
    task_with(&format!(
        "table_mappings = {:?}",
        path.display().to_string()
    ))
    .unwrap_err()
}

#[test]
fn a_mistyped_action_points_at_the_line_and_suggests_the_name() {
    let err = mappings_error(
        "{\"rules\": [\n  {\"rule-type\": \"selection\", \"rule-id\": \"1\",\n   \"object-locator\": {\"schema-name\": \"%\", \"table-name\": \"%\"},\n   \"rule-action\": \"exclud\"}\n]}",
    );
    assert!(err.contains("m.json:4"), "{err}");
    assert!(err.contains("rules[0].rule-action"), "{err}");
    assert!(err.contains("did you mean \"exclude\""), "{err}");
}

#[test]
fn a_mistyped_operator_and_field_are_explained() {
    let err = mappings_error(
        r#"{"rules": [{"rule-type": "selection", "rule-id": "1", "rule-action": "include",
            "object-locator": {"schema-name": "public", "table-name": "t"},
            "filters": [{"filter-type": "source", "column-name": "a",
                         "filter-conditions": [{"filter-operator": "lte", "value": "3"}]}]}]}"#,
    );
    assert!(err.contains("did you mean \"ste\""), "{err}");
    assert!(err.contains("filter-operator"), "{err}");
    let err = mappings_error(
        "{\"rules\": [\n{\"rule-type\": \"selection\", \"rule-id\": \"1\", \"rule-actoin\": \"include\",\n \"object-locator\": {\"schema-name\": \"public\"}}]}",
    );
    assert!(err.contains("needs `rule-action`"), "{err}");
    assert!(err.contains("did you mean \"rule-action\""), "{err}");
    assert!(err.contains(":2"), "the rule's line: {err}");
}

#[test]
fn contradicting_rules_are_reported() {
    let err = mappings_error(
        r#"{"rules": [
            {"rule-type": "selection", "rule-id": "1", "rule-action": "explicit",
             "object-locator": {"schema-name": "public", "table-name": "t"}},
            {"rule-type": "selection", "rule-id": "2", "rule-action": "exclude",
             "object-locator": {"schema-name": "public", "table-name": "%"}}]}"#,
    );
    assert!(
        err.contains("explicitly") && err.contains("exclude"),
        "{err}"
    );
    let task = task_with(
        "[[transform]]\naction = \"rename\"\ntarget = \"table\"\ntable = \"t\"\nvalue = \"a\"\n\
         [[transform]]\naction = \"rename\"\ntarget = \"table\"\ntable = \"t\"\nvalue = \"b\"",
    )
    .unwrap();
    let err = task
        .mapping
        .table("public", "t", ("public", "t"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[[transform]] 2") && err.contains("[[transform]] 1"),
        "{err}"
    );
    let task = task_with(
        "[[transform]]\naction = \"remove-column\"\ntarget = \"column\"\ncolumn = \"c\"\n\
         [[transform]]\naction = \"rename\"\ntarget = \"column\"\ncolumn = \"c\"\nvalue = \"d\"",
    )
    .unwrap();
    let cols = [SourceColumn {
        name: "c",
        type_name: "text",
    }];
    let err = task
        .mapping
        .table("s", "t", ("s", "t"), &cols)
        .unwrap_err()
        .to_string();
    assert!(err.contains("removes"), "{err}");
}

#[test]
fn unsupported_rules_say_what_to_do() {
    let err = mappings_error(
        r#"{"rules": [{"rule-type": "transformation", "rule-id": "1", "rule-action": "include-column",
            "rule-target": "column", "object-locator": {"schema-name": "s", "table-name": "t", "column-name": "c"}}]}"#,
    );
    assert!(
        err.contains("include-column") && err.contains("remove-column"),
        "{err}"
    );
    let err = mappings_error(
        r#"{"rules": [{"rule-type": "transformation", "rule-id": "1", "rule-action": "add-column",
            "rule-target": "column", "value": "x", "expression": "$AR_H_OPERATION",
            "data-type": {"type": "string", "length": 10},
            "object-locator": {"schema-name": "s", "table-name": "t"}}]}"#,
    );
    assert!(err.contains("AR_H_OPERATION"), "{err}");
    let err = mappings_error(
        r#"{"rules": [{"rule-type": "transformation", "rule-id": "1", "rule-action": "change-data-type",
            "rule-target": "column", "data-type": {"type": "strng"},
            "object-locator": {"schema-name": "s", "table-name": "t", "column-name": "c"}}]}"#,
    );
    assert!(err.contains("did you mean \"string\""), "{err}");
}

#[test]
fn settings_errors_name_the_key_and_line() {
    let (_dir, path) = write_temp(
        "s.json",
        "{\n  \"FullLoadSettings\": {\n    \"TargetTablePrepMode\": \"DO_NOTHNG\"\n  }\n}",
    );
    let err = task_with(&format!("task_settings = {:?}", path.display().to_string())).unwrap_err();
    assert!(err.contains("s.json:3"), "{err}");
    assert!(
        err.contains("FullLoadSettings.TargetTablePrepMode"),
        "{err}"
    );
    assert!(err.contains("did you mean \"DO_NOTHING\""), "{err}");
    let (_dir, path) = write_temp(
        "s.json",
        "{\"FullLoadSetings\": {}, \"ErrorBehavior\": {\"DataErrorPolicy\": \"LOG_EROR\"}}",
    );
    let err = task_with(&format!("task_settings = {:?}", path.display().to_string())).unwrap_err();
    assert!(err.contains("did you mean \"LOG_ERROR\""), "{err}");
    let (_dir, path) = write_temp("s.json", "{\"FullLoadSetings\": {}}");
    let task = task_with(&format!("task_settings = {:?}", path.display().to_string())).unwrap();
    let w = task
        .explanation
        .warnings
        .iter()
        .find(|w| w.setting == "FullLoadSetings")
        .unwrap();
    assert!(
        w.reason.contains("did you mean \"FullLoadSettings\""),
        "{}",
        w.reason
    );
    // A typo of a setting pgferry reads is pointed at that setting.
    let (_dir, path) = write_temp(
        "s.json",
        "{\"FullLoadSettings\": {\"MaxFullLoadSubTask\": 8},
          \"ErrorBehavior\": {\"DataErorPolicy\": \"LOG_ERROR\"}}",
    );
    let task = task_with(&format!("task_settings = {:?}", path.display().to_string())).unwrap();
    for (setting, meant) in [
        ("FullLoadSettings.MaxFullLoadSubTask", "MaxFullLoadSubTasks"),
        ("ErrorBehavior.DataErorPolicy", "DataErrorPolicy"),
    ] {
        let w = task
            .explanation
            .warnings
            .iter()
            .find(|w| w.setting == setting)
            .unwrap();
        assert!(
            w.reason.contains(&format!("did you mean \"{meant}\"")),
            "{setting}: {}",
            w.reason
        );
    }
    let (_dir, path) = write_temp(
        "s.json",
        "{\"FullLoadSettings\": {\"MaxFullLoadSubTasks\": \"12\"}}",
    );
    let task = task_with(&format!("task_settings = {:?}", path.display().to_string())).unwrap();
    assert_eq!(task.full_load.jobs, 12, "numbers given as strings");
    let (_dir, path) = write_temp(
        "s.json",
        "{\"FullLoadSettings\": {\"MaxFullLoadSubTasks\": }}",
    );
    let err = task_with(&format!("task_settings = {:?}", path.display().to_string())).unwrap_err();
    assert!(err.contains("s.json:1"), "malformed JSON: {err}");
}

#[test]
fn convert_writes_a_toml_task_that_means_the_same() {
    let read = |n: &str| std::fs::read_to_string(data(n)).unwrap();
    let toml = pgferry_config::convert::convert(
        Some((&read("every-rule-kind.json"), "every-rule-kind.json")),
        Some((&read("seed-task-settings.json"), "seed-task-settings.json")),
    )
    .unwrap();
    assert!(
        toml.contains("# - rules[10].lob-settings (different)"),
        "{toml}"
    );
    let converted = Task::parse(&toml, None).unwrap();
    let original = task_with(
        "table_mappings = \"every-rule-kind.json\"\ntask_settings = \"seed-task-settings.json\"",
    )
    .unwrap();
    let strip = |m: &pgferry_config::Mapping| {
        let mut m = m.clone();
        m.transforms.iter_mut().for_each(|t| t.origin.clear());
        m.filters.iter_mut().for_each(|t| t.origin.clear());
        m.table_settings.iter_mut().for_each(|t| t.origin.clear());
        m
    };
    assert_eq!(strip(&converted.mapping), strip(&original.mapping));
    assert_eq!(converted.full_load, original.full_load);
    assert_eq!(converted.cdc, original.cdc);
    assert_eq!(converted.log_filter, original.log_filter);
    assert_eq!(
        converted.selection.include_rules(),
        original.selection.include_rules()
    );
}

#[test]
fn a_rule_that_fails_on_a_partition_names_the_table_the_rule_names() {
    let task = task_with(
        "[[filter]]\nschema = \"sales\"\ntable = \"orders\"\ncolumn = \"stauts\"\n\
         conditions = [{ op = \"null\" }]",
    )
    .unwrap();
    let cols = [SourceColumn {
        name: "status",
        type_name: "text",
    }];
    let e = task
        .mapping
        .table("sales", "orders_2025", ("sales", "orders"), &cols)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sales.orders (partition sales.orders_2025)") && e.contains("\"status\""),
        "{e}"
    );
}
