//! DMS task-settings JSON.
//!
//! Every top-level section DMS has is accepted. The settings that matter when both ends
//! are PostgreSQL are carried out; every other one is named in the explanation with the
//! reason it is ignored or works differently. A setting the file leaves out takes the value
//! DMS saves for a new task.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Lenient, LocatedError, parse_json};
use crate::cdc::{ErrorBehavior, ErrorPolicy};
use crate::explain::{Explanation, Origin, Treatment};
use crate::suggest::did_you_mean;
use crate::task::TargetTablePrepMode;

type Section = BTreeMap<String, serde_json::Value>;

/// The top level of a task-settings file. Sections pgferry carries out are typed loosely
/// (values are checked one by one, for messages that name the key); the rest are kept
/// whole, to be explained.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawSettings {
    target_metadata: Option<Section>,
    full_load_settings: Option<Section>,
    change_processing_tuning: Option<Section>,
    change_processing_ddl_handling_policy: Option<Section>,
    error_behavior: Option<Section>,
    validation_settings: Option<Section>,
    logging: Option<Section>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

/// Sections DMS has that pgferry reads and does not use, with the reason.
const IGNORED_SECTIONS: &[(&str, &str)] = &[
    (
        "ControlTablesSettings",
        "pgferry keeps its state in the `pgferry` schema on the target, always",
    ),
    (
        "StreamBufferSettings",
        "pgferry's memory is bounded by its batch sizes, not by stream buffers",
    ),
    (
        "TTSettings",
        "Time Travel logs DMS's own internals; pgferry has events and logs instead",
    ),
    (
        "CharacterSetSettings",
        "PostgreSQL converts between the two databases' encodings; pgferry copies as text \
         when they differ",
    ),
    (
        "BeforeImageSettings",
        "before images are for streaming targets such as Kinesis",
    ),
    (
        "LoopbackPreventionSettings",
        "pgferry streams one way; a reverse stream for rollback is a separate task",
    ),
    (
        "PostProcessingRules",
        "post-processing tags S3 objects DMS writes; pgferry writes none",
    ),
    (
        "FailTaskWhenCleanTaskResourceFailed",
        "pgferry's cleanup is the explicit `pgferry cleanup` command",
    ),
    (
        "CommonSettings",
        "these are DMS Serverless capacity settings",
    ),
];

/// A value with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Sourced<T> {
    pub value: T,
    pub origin: Origin,
    /// The DMS key, `FullLoadSettings.MaxFullLoadSubTasks`.
    pub dms: &'static str,
}

impl<T> Sourced<T> {
    /// The same value as an optional one, for settings whose default is "unset".
    pub fn some(self) -> Sourced<Option<T>> {
        Sourced {
            value: Some(self.value),
            origin: self.origin,
            dms: self.dms,
        }
    }
}

/// What a task-settings file decides, in pgferry's terms.
#[derive(Debug, Clone, Default)]
pub struct DmsSettings {
    pub target_schema: Option<Sourced<String>>,
    pub target_table_prep_mode: Option<Sourced<TargetTablePrepMode>>,
    pub jobs: Option<Sourced<usize>>,
    pub batch_max_changes: Option<Sourced<usize>>,
    pub batch_max_delay_ms: Option<Sourced<u64>>,
    pub batch_max_bytes: Option<Sourced<u64>>,
    pub errors: ErrorBehavior,
    /// The `ErrorBehavior` keys the file sets, by pgferry field name.
    pub errors_set: Vec<(&'static str, &'static str)>,
    pub apply_truncate: Option<Sourced<bool>>,
    pub add_new_columns: Option<Sourced<bool>>,
    pub ddl: Option<Sourced<bool>>,
    pub apply_drop_table: Option<Sourced<bool>>,
    /// `ErrorBehavior.TableErrorPolicy`: what a table's failed schema change does.
    pub ddl_error_policy: Option<Sourced<ErrorPolicy>>,
    pub validation_jobs: Option<Sourced<usize>>,
    /// A `tracing` filter built from `Logging`.
    pub log_filter: Option<Sourced<String>>,
}

struct Reader<'a> {
    file: &'a str,
    text: &'a str,
    section_name: &'static str,
    section: Section,
    /// Every key this reader asked for, present or not: a typo's nearest real name.
    asked: Vec<String>,
}

impl Reader<'_> {
    fn fail(&self, key: &str, message: String) -> LocatedError {
        LocatedError {
            file: self.file.to_owned(),
            path: format!("{}.{key}", self.section_name),
            line: line_of_key(self.text, self.section_name, key),
            message,
        }
    }

    fn take(&mut self, key: &str) -> Option<serde_json::Value> {
        self.asked.push(key.to_owned());
        self.section.remove(key).filter(|v| !v.is_null())
    }

    fn lenient(&mut self, key: &str) -> Result<Option<Lenient>, LocatedError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => serde_json::from_value::<Lenient>(v.clone())
                .map(Some)
                .map_err(|_| self.fail(key, format!("{v} is not a number, string or boolean"))),
        }
    }

    fn int(&mut self, key: &str) -> Result<Option<i64>, LocatedError> {
        match self.lenient(key)? {
            None => Ok(None),
            Some(v) => v.as_i64().map(Some).ok_or_else(|| {
                self.fail(key, format!("{:?} is not a whole number", v.as_string()))
            }),
        }
    }

    fn boolean(&mut self, key: &str) -> Result<Option<bool>, LocatedError> {
        match self.lenient(key)? {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.fail(key, format!("{:?} is not true or false", v.as_string()))),
        }
    }

    fn text(&mut self, key: &str) -> Result<Option<String>, LocatedError> {
        Ok(self.lenient(key)?.map(|v| v.as_string()))
    }

    fn policy(&mut self, key: &str, allowed: &[&str]) -> Result<Option<ErrorPolicy>, LocatedError> {
        let Some(v) = self.text(key)? else {
            return Ok(None);
        };
        let upper = v.to_ascii_uppercase();
        if !allowed.contains(&upper.as_str()) {
            return Err(self.fail(
                key,
                format!(
                    "{v:?} is not a policy for {key}{}; expected one of {}",
                    did_you_mean(&upper, allowed),
                    allowed.join(", ")
                ),
            ));
        }
        serde_json::from_value(serde_json::Value::String(upper))
            .map(Some)
            .map_err(|e| self.fail(key, e.to_string()))
    }

    /// Names every key left in the section as ignored, with the reason given for it or, for
    /// a key DMS does not have, the nearest one it does.
    fn rest(self, known: &[(&str, &str)], explanation: &mut Explanation) {
        let names: Vec<&str> = known
            .iter()
            .map(|(k, _)| *k)
            .chain(self.asked.iter().map(String::as_str))
            .collect();
        for key in self.section.keys() {
            let reason = match known.iter().find(|(k, _)| k == key) {
                Some((_, reason)) => (*reason).to_owned(),
                None => format!(
                    "not a {} setting pgferry knows{}",
                    self.section_name,
                    did_you_mean(key, &names)
                ),
            };
            explanation.warn(
                format!("{}.{key}", self.section_name),
                Treatment::Ignored,
                reason,
            );
        }
    }
}

/// The line of `"key"` inside `"section"`, by text search: good enough for messages.
fn line_of_key(text: &str, section: &str, key: &str) -> Option<usize> {
    let start = text.find(&format!("\"{section}\"")).unwrap_or(0);
    let at = start + text[start..].find(&format!("\"{key}\""))?;
    Some(text[..at].matches('\n').count() + 1)
}

fn sourced<T>(value: Option<T>, default: T, dms: &'static str) -> Option<Sourced<T>> {
    Some(match value {
        Some(value) => Sourced {
            value,
            origin: Origin::DmsJson,
            dms,
        },
        None => Sourced {
            value: default,
            origin: Origin::DmsDefault,
            dms,
        },
    })
}

const POLICIES: &[&str] = &["IGNORE_RECORD", "LOG_ERROR", "SUSPEND_TABLE", "STOP_TASK"];
const INSERT_POLICIES: &[&str] = &[
    "IGNORE_RECORD",
    "LOG_ERROR",
    "SUSPEND_TABLE",
    "STOP_TASK",
    "INSERT_RECORD",
    "UPDATE_RECORD",
];

/// Parses a task-settings file. `file` names it in messages.
pub fn parse_settings(
    text: &str,
    file: &str,
    explanation: &mut Explanation,
) -> Result<DmsSettings, LocatedError> {
    let raw: RawSettings = parse_json(text, file)?;
    let mut out = DmsSettings::default();
    let reader = |name: &'static str, section: Option<Section>| Reader {
        file,
        text,
        section_name: name,
        section: section.unwrap_or_default(),
        asked: Vec::new(),
    };

    for key in raw.other.keys() {
        match IGNORED_SECTIONS.iter().find(|(k, _)| k == key) {
            Some((_, reason)) => explanation.warn(key.clone(), Treatment::Ignored, *reason),
            None => {
                let known: Vec<&str> = [
                    "TargetMetadata",
                    "FullLoadSettings",
                    "ChangeProcessingTuning",
                    "ChangeProcessingDdlHandlingPolicy",
                    "ErrorBehavior",
                    "ValidationSettings",
                    "Logging",
                ]
                .into_iter()
                .chain(IGNORED_SECTIONS.iter().map(|(k, _)| *k))
                .collect();
                explanation.warn(
                    key.clone(),
                    Treatment::Ignored,
                    format!(
                        "not a DMS task-settings section{}",
                        did_you_mean(key, &known)
                    ),
                );
            }
        }
    }

    target_metadata(
        reader("TargetMetadata", raw.target_metadata),
        &mut out,
        explanation,
    )?;
    full_load_settings(
        reader("FullLoadSettings", raw.full_load_settings),
        &mut out,
        explanation,
    )?;
    change_processing_tuning(
        reader("ChangeProcessingTuning", raw.change_processing_tuning),
        &mut out,
        explanation,
    )?;
    change_processing_ddl_handling_policy(
        reader(
            "ChangeProcessingDdlHandlingPolicy",
            raw.change_processing_ddl_handling_policy,
        ),
        &mut out,
        explanation,
    )?;
    error_behavior(
        reader("ErrorBehavior", raw.error_behavior),
        &mut out,
        explanation,
    )?;
    validation_settings(
        reader("ValidationSettings", raw.validation_settings),
        &mut out,
        explanation,
    )?;
    logging(reader("Logging", raw.logging), &mut out, explanation)?;
    Ok(out)
}

/// The `TargetMetadata` section.
fn target_metadata(
    mut r: Reader<'_>,
    out: &mut DmsSettings,
    explanation: &mut Explanation,
) -> Result<(), LocatedError> {
    if let Some(schema) = r.text("TargetSchema")?.filter(|s| !s.is_empty()) {
        out.target_schema = Some(Sourced {
            value: schema,
            origin: Origin::DmsJson,
            dms: "TargetMetadata.TargetSchema",
        });
    }
    let limited = r.boolean("LimitedSizeLobMode")?.unwrap_or(true);
    let full = r.boolean("FullLobMode")?.unwrap_or(false);
    let max_kb = r.int("LobMaxSize")?.unwrap_or(32);
    let support = r.boolean("SupportLobs")?.unwrap_or(true);
    for key in ["LobChunkSize", "InlineLobMaxSize"] {
        r.take(key);
    }
    explanation.warn(
        "TargetMetadata.SupportLobs/FullLobMode/LimitedSizeLobMode/LobMaxSize",
        Treatment::Different,
        if !support {
            "DMS would leave large values out (SupportLobs = false); pgferry copies every value \
             whole"
                .to_owned()
        } else if limited && !full {
            format!(
                "DMS would truncate large values above {max_kb} KB (limited LOB mode); pgferry \
                 never truncates: every value is copied whole"
            )
        } else {
            "pgferry copies every value whole, as full LOB mode does, without a lookup per \
             value"
                .to_owned()
        },
    );
    r.rest(
        &[
            (
                "ParallelLoadThreads",
                "pgferry's parallelism is `jobs` (FullLoadSettings.MaxFullLoadSubTasks)",
            ),
            (
                "ParallelLoadBufferSize",
                "COPY streams need no load buffers",
            ),
            (
                "ParallelLoadQueuesPerThread",
                "COPY streams need no load queues",
            ),
            (
                "ParallelApplyThreads",
                "changes are applied in commit order by one applier, in bulk",
            ),
            (
                "ParallelApplyBufferSize",
                "changes are applied in commit order by one applier",
            ),
            (
                "ParallelApplyQueuesPerThread",
                "changes are applied in commit order by one applier",
            ),
            (
                "BatchApplyEnabled",
                "pgferry always applies in batches that keep source transactions whole",
            ),
            (
                "TaskRecoveryTableEnabled",
                "pgferry's checkpoint is always in the pgferry schema on the target",
            ),
            (
                "LoadMaxFileSize",
                "pgferry streams with COPY and writes no files",
            ),
        ],
        explanation,
    );
    Ok(())
}

/// The `FullLoadSettings` section.
fn full_load_settings(
    mut r: Reader<'_>,
    out: &mut DmsSettings,
    explanation: &mut Explanation,
) -> Result<(), LocatedError> {
    let prep = match r.text("TargetTablePrepMode")? {
        None => None,
        Some(v) => {
            Some(match v.to_ascii_uppercase().as_str() {
                "DO_NOTHING" => TargetTablePrepMode::DoNothing,
                "TRUNCATE_BEFORE_LOAD" => TargetTablePrepMode::Truncate,
                "DROP_AND_CREATE" => TargetTablePrepMode::DropAndCreate,
                other => {
                    return Err(r.fail(
                    "TargetTablePrepMode",
                    format!(
                        "{v:?} is not a prep mode{}; expected DO_NOTHING, TRUNCATE_BEFORE_LOAD or \
                         DROP_AND_CREATE",
                        did_you_mean(other, &["DO_NOTHING", "TRUNCATE_BEFORE_LOAD", "DROP_AND_CREATE"])
                    ),
                ));
                }
            })
        }
    };
    out.target_table_prep_mode = sourced(
        prep,
        TargetTablePrepMode::DropAndCreate,
        "FullLoadSettings.TargetTablePrepMode",
    );
    let jobs = r.int("MaxFullLoadSubTasks")?;
    if let Some(j) = jobs
        && !(1..=256).contains(&j)
    {
        return Err(r.fail(
            "MaxFullLoadSubTasks",
            format!("is {j}; it must be between 1 and 256"),
        ));
    }
    out.jobs = sourced(
        jobs.map(|j| j as usize),
        8,
        "FullLoadSettings.MaxFullLoadSubTasks",
    );
    if r.boolean("CreatePkAfterFullLoad")? != Some(true) {
        explanation.warn(
            "FullLoadSettings.CreatePkAfterFullLoad",
            Treatment::Different,
            "pgferry always builds primary keys, indexes and constraints after the rows are in, \
             in parallel; that is faster and the result is the same",
        );
    }
    if let Some(rate) = r.int("CommitRate")? {
        explanation.warn(
            "FullLoadSettings.CommitRate",
            Treatment::Different,
            format!(
                "pgferry commits once per chunk (`chunk_size`), not every {rate} rows: COPY \
                 streams rows without holding them, and a chunk is the unit a resumed load \
                 repeats"
            ),
        );
    }
    r.rest(
        &[
            ("StopTaskCachedChangesApplied", "pgferry has no cached-changes phase: the stream starts at the load's snapshot; use migration_type full-load to stop after the load"),
            ("StopTaskCachedChangesNotApplied", "pgferry has no cached-changes phase: the stream starts at the load's snapshot"),
            ("TransactionConsistencyTimeout", "pgferry reads one consistent snapshot and never waits for open transactions before copying"),
            ("StopTaskAfterFullLoadAndCachedChangesApplied", "use migration_type full-load to stop after the load"),
        ],
        explanation,
    );
    Ok(())
}

/// The `ChangeProcessingTuning` section.
fn change_processing_tuning(
    mut r: Reader<'_>,
    out: &mut DmsSettings,
    explanation: &mut Explanation,
) -> Result<(), LocatedError> {
    if let Some(n) = r.int("BatchSplitSize")?.filter(|n| *n > 0) {
        out.batch_max_changes = Some(Sourced {
            value: n as usize,
            origin: Origin::DmsJson,
            dms: "ChangeProcessingTuning.BatchSplitSize",
        });
    }
    let commit = r.int("CommitTimeout")?;
    if let Some(s) = commit
        && s < 1
    {
        return Err(r.fail(
            "CommitTimeout",
            format!("is {s}; it must be at least 1 second"),
        ));
    }
    out.batch_max_delay_ms = sourced(
        commit.map(|s| s as u64 * 1000),
        1000,
        "ChangeProcessingTuning.CommitTimeout",
    );
    let memory = r.int("BatchApplyMemoryLimit")?;
    out.batch_max_bytes = sourced(
        memory.map(|mb| mb.max(1) as u64 * 1024 * 1024),
        500 * 1024 * 1024,
        "ChangeProcessingTuning.BatchApplyMemoryLimit",
    );
    r.rest(
        &[
            ("BatchApplyPreserveTransaction", "pgferry always keeps each source transaction whole in one target transaction"),
            ("BatchApplyTimeoutMin", "a batch commits as soon as the stream is quiet, so there is no minimum wait"),
            ("BatchApplyTimeoutMax", "CommitTimeout bounds how long a batch collects changes"),
            ("MinTransactionSize", "batches grow by themselves while the stream is busy and commit when it is quiet"),
            ("MemoryLimitTotal", "memory is bounded by BatchApplyMemoryLimit and BatchSplitSize per batch; changes never spill to disk (the slot keeps them)"),
            ("MemoryKeepTime", "changes are never spilled to disk: the replication slot keeps them"),
            ("StatementCacheSize", "pgferry prepares each statement shape once per connection"),
            ("RecoveryTimeout", "recovery follows ErrorBehavior.RecoverableError*"),
        ],
        explanation,
    );
    Ok(())
}

/// The `ChangeProcessingDdlHandlingPolicy` section.
fn change_processing_ddl_handling_policy(
    mut r: Reader<'_>,
    out: &mut DmsSettings,
    explanation: &mut Explanation,
) -> Result<(), LocatedError> {
    out.apply_truncate = sourced(
        r.boolean("HandleSourceTableTruncated")?,
        true,
        "ChangeProcessingDdlHandlingPolicy.HandleSourceTableTruncated",
    );
    let altered = r.boolean("HandleSourceTableAltered")?;
    out.add_new_columns = sourced(
        altered,
        true,
        "ChangeProcessingDdlHandlingPolicy.HandleSourceTableAltered",
    );
    let dropped = r.boolean("HandleSourceTableDropped")?;
    out.apply_drop_table = sourced(
        dropped,
        true,
        "ChangeProcessingDdlHandlingPolicy.HandleSourceTableDropped",
    );
    // DMS captures DDL with an event trigger whenever either key asks for it.
    if altered == Some(true) || dropped == Some(true) {
        out.ddl = sourced(
            Some(true),
            false,
            "ChangeProcessingDdlHandlingPolicy.HandleSourceTableAltered",
        );
        explanation.warn(
            "ChangeProcessingDdlHandlingPolicy.HandleSourceTableAltered",
            Treatment::Different,
            "schema changes are captured with event triggers, as DMS does, and carried as the \
             objects' shapes rather than statements; this needs a superuser (rds_superuser on \
             RDS and Aurora) on the source, else pgferry warns and follows added columns only \
             (docs/cdc.md)",
        );
    }
    r.rest(&[], explanation);
    Ok(())
}

/// The `ErrorBehavior` section.
fn error_behavior(
    mut r: Reader<'_>,
    out: &mut DmsSettings,
    explanation: &mut Explanation,
) -> Result<(), LocatedError> {
    let e = &mut out.errors;
    macro_rules! policy {
        ($key:literal, $field:ident, $allowed:expr) => {
            if let Some(p) = r.policy($key, $allowed)? {
                e.$field = p;
                out.errors_set
                    .push((stringify!($field), concat!("ErrorBehavior.", $key)));
            }
        };
    }
    macro_rules! count {
        ($key:literal, $field:ident) => {
            if let Some(n) = r.int($key)? {
                e.$field = n
                    .try_into()
                    .map_err(|_| r.fail($key, format!("{n} is out of range")))?;
                out.errors_set
                    .push((stringify!($field), concat!("ErrorBehavior.", $key)));
            }
        };
    }
    policy!(
        "ApplyErrorInsertPolicy",
        apply_error_insert_policy,
        INSERT_POLICIES
    );
    policy!(
        "ApplyErrorUpdatePolicy",
        apply_error_update_policy,
        INSERT_POLICIES
    );
    policy!(
        "ApplyErrorDeletePolicy",
        apply_error_delete_policy,
        POLICIES
    );
    policy!(
        "ApplyErrorEscalationPolicy",
        apply_error_escalation_policy,
        POLICIES
    );
    count!("ApplyErrorEscalationCount", apply_error_escalation_count);
    policy!("DataErrorPolicy", data_error_policy, POLICIES);
    policy!(
        "DataErrorEscalationPolicy",
        data_error_escalation_policy,
        POLICIES
    );
    count!("DataErrorEscalationCount", data_error_escalation_count);
    count!("RecoverableErrorCount", recoverable_error_count);
    count!("RecoverableErrorInterval", recoverable_error_interval);
    count!(
        "RecoverableErrorThrottlingMax",
        recoverable_error_throttling_max
    );
    if r.boolean("RecoverableErrorThrottling")? == Some(false) {
        e.recoverable_error_throttling_max = e.recoverable_error_interval;
        out.errors_set.push((
            "recoverable_error_throttling_max",
            "ErrorBehavior.RecoverableErrorThrottling",
        ));
    }
    if let Some(p) = r.policy("TableErrorPolicy", &["SUSPEND_TABLE", "STOP_TASK"])? {
        out.ddl_error_policy = Some(Sourced {
            value: p,
            origin: Origin::DmsJson,
            dms: "ErrorBehavior.TableErrorPolicy",
        });
    }
    if let Some(p) = r.policy("DataTruncationErrorPolicy", POLICIES)? {
        explanation.warn(
            "ErrorBehavior.DataTruncationErrorPolicy",
            Treatment::Different,
            format!(
                "PostgreSQL never truncates silently: a value too long for its column is a data \
                 error, handled by DataErrorPolicy ({}){}",
                e.data_error_policy.as_str(),
                if p == e.data_error_policy {
                    String::new()
                } else {
                    format!(", not {}", p.as_str())
                }
            ),
        );
    }
    r.rest(
        &[
            ("EventErrorPolicy", "DMS sends task events to EventBridge; pgferry records events in the pgferry schema and never fails on them"),
            ("TableErrorEscalationPolicy", "no escalation: each failed schema change follows TableErrorPolicy (cdc.ddl_error_policy)"),
            ("TableErrorEscalationCount", "no escalation: each failed schema change follows TableErrorPolicy (cdc.ddl_error_policy)"),
            ("RecoverableErrorStopRetryAfterThrottlingMax", "retries continue at RecoverableErrorThrottlingMax until RecoverableErrorCount runs out"),
            ("FullLoadIgnoreConflicts", "COPY into a table pgferry created cannot conflict; with DO_NOTHING, a duplicate key fails that chunk and is reported"),
            ("FailOnNoTablesCaptured", "pgferry always fails when the selection matches no table"),
            ("FailOnTransactionConsistencyBreached", "pgferry reads one snapshot, so consistency cannot be breached"),
            ("ApplyErrorFailOnTruncationDdl", "TRUNCATE is applied or not by ChangeProcessingDdlHandlingPolicy.HandleSourceTableTruncated"),
            ("FailOnSourceTableDeleted", "a dropped table follows ChangeProcessingDdlHandlingPolicy.HandleSourceTableDropped (cdc.apply_drop_table)"),
        ],
        explanation,
    );
    Ok(())
}

/// The `ValidationSettings` section.
fn validation_settings(
    mut r: Reader<'_>,
    out: &mut DmsSettings,
    explanation: &mut Explanation,
) -> Result<(), LocatedError> {
    let enabled = r.boolean("EnableValidation")?;
    let threads = r.int("ThreadCount")?;
    if let Some(t) = threads
        && !(1..=256).contains(&t)
    {
        return Err(r.fail(
            "ThreadCount",
            format!("is {t}; it must be between 1 and 256"),
        ));
    }
    out.validation_jobs = threads.map(|t| Sourced {
        value: t as usize,
        origin: Origin::DmsJson,
        dms: "ValidationSettings.ThreadCount",
    });
    if enabled == Some(true) {
        explanation.warn(
            "ValidationSettings.EnableValidation",
            Treatment::Different,
            "pgferry validates on demand: `pgferry validate` compares every table's row count \
             and checksum on both servers at one instant; run it before cutover",
        );
    }
    r.rest(
        &[
            (
                "ValidationMode",
                "pgferry compares whole-table checksums computed on both servers",
            ),
            (
                "PartitionSize",
                "the checksum is computed per table on the servers; no rows cross the network",
            ),
            ("FailureMaxCount", "validate reports every differing table"),
            (
                "TableFailureMaxCount",
                "validate reports every differing table",
            ),
            (
                "RecordFailureDelayInMinutes",
                "validate runs at one instant, on a snapshot",
            ),
            (
                "RecordFailureDelayLimitInMinutes",
                "validate runs at one instant, on a snapshot",
            ),
            (
                "RecordSuspendDelayInMinutes",
                "validate runs at one instant, on a snapshot",
            ),
            ("MaxKeyColumnSize", "keys are not compared one by one"),
            (
                "ValidationOnly",
                "run `pgferry validate` alone for a validation-only check",
            ),
            (
                "HandleCollationDiff",
                "checksums compare values, not sort order",
            ),
            (
                "SkipLobColumns",
                "large values are always part of the checksum",
            ),
            (
                "ValidationPartialLobSize",
                "large values are compared whole",
            ),
            (
                "ValidationQueryCdcDelaySeconds",
                "validate reads one snapshot; run it when the lag is low",
            ),
        ],
        explanation,
    );
    Ok(())
}

/// The `Logging` section.
fn logging(
    mut r: Reader<'_>,
    out: &mut DmsSettings,
    explanation: &mut Explanation,
) -> Result<(), LocatedError> {
    let enabled = r.boolean("EnableLogging")?;
    let components = r.take("LogComponents");
    let mut filter = vec![
        if enabled == Some(false) {
            "warn"
        } else {
            "info"
        }
        .to_owned(),
    ];
    if let Some(serde_json::Value::Array(items)) = components {
        for (i, item) in items.iter().enumerate() {
            let id = item.get("Id").and_then(|v| v.as_str()).unwrap_or_default();
            let severity = item
                .get("Severity")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            let level = match severity.to_ascii_uppercase().as_str() {
                "LOGGER_SEVERITY_ERROR" => "error",
                "LOGGER_SEVERITY_WARNING" => "warn",
                "LOGGER_SEVERITY_INFO" | "LOGGER_SEVERITY_DEFAULT" | "" => "info",
                "LOGGER_SEVERITY_DEBUG" => "debug",
                "LOGGER_SEVERITY_DETAILED_DEBUG" => "trace",
                other => {
                    return Err(r.fail(
                        &format!("LogComponents[{i}].Severity"),
                        format!(
                            "{other:?} is not a DMS severity{}",
                            did_you_mean(
                                other,
                                &[
                                    "LOGGER_SEVERITY_ERROR",
                                    "LOGGER_SEVERITY_WARNING",
                                    "LOGGER_SEVERITY_INFO",
                                    "LOGGER_SEVERITY_DEFAULT",
                                    "LOGGER_SEVERITY_DEBUG",
                                    "LOGGER_SEVERITY_DETAILED_DEBUG"
                                ]
                            )
                        ),
                    ));
                }
            };
            let targets: &[&str] = match id {
                "SOURCE_UNLOAD" | "TARGET_LOAD" => {
                    &["pgferry_engine::load", "pgferry_engine::build"]
                }
                "SOURCE_CAPTURE" | "TARGET_APPLY" => &["pgferry_engine::cdc"],
                "TASK_MANAGER" => &["pgferry_engine::run", "pgferry"],
                "COMMUNICATION" => &["pgferry_pg"],
                other => {
                    explanation.warn(
                        format!("Logging.LogComponents[{i}]"),
                        Treatment::Ignored,
                        format!(
                            "{other:?} has no counterpart; pgferry's components are \
                             SOURCE_UNLOAD/TARGET_LOAD (the load), SOURCE_CAPTURE/TARGET_APPLY \
                             (CDC), TASK_MANAGER and COMMUNICATION"
                        ),
                    );
                    continue;
                }
            };
            for t in targets {
                let directive = format!("{t}={level}");
                if !filter.contains(&directive) {
                    filter.push(directive);
                }
            }
        }
    }
    if enabled.is_some() || filter.len() > 1 {
        out.log_filter = Some(Sourced {
            value: filter.join(","),
            origin: Origin::DmsJson,
            dms: "Logging",
        });
    }
    r.rest(
        &[(
            "CloudWatchLogGroup",
            "pgferry logs to standard error (human or JSON lines); ship them with your log agent",
        ), (
            "CloudWatchLogStream",
            "pgferry logs to standard error (human or JSON lines); ship them with your log agent",
        )],
        explanation,
    );
    Ok(())
}
