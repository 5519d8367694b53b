//! The careful path: change by change in source order, each under its own savepoint, with
//! the task's error policies deciding what happens to a change that fails, and the JSON
//! images of changes recorded in `apply_exceptions`.

use super::*;

impl Applier {
    /// Applies changes one by one, in source order, each under a savepoint; failures go to
    /// the error policies. Returns the number of changes recorded as exceptions.
    pub(super) async fn careful_apply(&mut self, changes: &[Change]) -> Result<i64> {
        let mut exceptions = 0;
        for c in changes {
            if self.suspended.contains(&c.table.source) {
                continue;
            }
            self.target
                .batch("applying a change", "SAVEPOINT pgferry_change")
                .await?;
            let outcome = self.apply_one(c).await?;
            match outcome {
                Outcome::Applied => {}
                Outcome::Conflict(error) => {
                    self.target
                        .batch(
                            "recovering from a conflict",
                            "ROLLBACK TO SAVEPOINT pgferry_change",
                        )
                        .await?;
                    exceptions += self.conflict(c, error).await?;
                }
                Outcome::Failed(error) => {
                    self.target
                        .batch(
                            "recovering from an error",
                            "ROLLBACK TO SAVEPOINT pgferry_change",
                        )
                        .await?;
                    exceptions += self.data_error(c, error).await?;
                }
            }
            self.target
                .batch("applying a change", "RELEASE SAVEPOINT pgferry_change")
                .await?;
        }
        Ok(exceptions)
    }

    /// One change as one statement.
    pub(super) async fn apply_one(&mut self, c: &Change) -> Result<Outcome> {
        let table = &c.table;
        let by_key = table.has_key();
        // A full-row identity compares the columns whose old value was sent: PostgreSQL
        // may send a large TOASTed old value as "unchanged" even in a full old row.
        let old_image = c.identity();
        let ident_positions: Vec<usize> = table
            .identity()
            .into_iter()
            .filter(|i| by_key || old_image.and_then(|t| t.get(*i)) != Some(&Value::Unchanged))
            .collect();
        let ident_cols: Vec<&sql::Col> = ident_positions
            .iter()
            .filter_map(|i| table.col(*i))
            .collect();
        let (sql, values): (String, Vec<Option<&[u8]>>) = match &c.op {
            Op::Insert(new) => {
                let cols: Vec<usize> = (0..table.cols.len())
                    .filter(|i| table.cols[*i].is_some())
                    .collect();
                let insert_cols: Vec<&sql::Col> =
                    cols.iter().filter_map(|i| table.col(*i)).collect();
                (
                    sql::row_insert(&table.target, &insert_cols),
                    cols.iter()
                        .map(|i| new.get(*i).and_then(|v| v.bytes()).map(|b| &b[..]))
                        .collect(),
                )
            }
            Op::Update { new, .. } => {
                let ident = c.identity().unwrap_or(new);
                let set: Vec<usize> = (0..table.cols.len())
                    .filter(|i| {
                        let changed = ident_positions
                            .contains(i)
                            .then(|| ident.get(*i) != new.get(*i));
                        new.get(*i) != Some(&Value::Unchanged) && table.settable(*i, changed)
                    })
                    .collect();
                let set_cols: Vec<&sql::Col> = set.iter().filter_map(|i| table.col(*i)).collect();
                let mut values: Vec<Option<&[u8]>> = set
                    .iter()
                    .map(|i| new.get(*i).and_then(|v| v.bytes()).map(|b| &b[..]))
                    .collect();
                values.extend(
                    ident_positions
                        .iter()
                        .map(|i| ident.get(*i).and_then(|v| v.bytes()).map(|b| &b[..])),
                );
                (
                    sql::row_update(&table.target, &set_cols, &ident_cols, by_key, self.binary),
                    values,
                )
            }
            Op::Delete(old) => (
                sql::row_delete(&table.target, &ident_cols, by_key, self.binary),
                ident_positions
                    .iter()
                    .map(|i| old.get(*i).and_then(|v| v.bytes()).map(|b| &b[..]))
                    .collect(),
            ),
        };
        let statement = self.statement(&sql).await?;
        let binary = self.binary;
        let params: Vec<Param<'_>> = values.iter().map(|v| Param { value: *v, binary }).collect();
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        match self.target.raw().execute(&statement, &refs).await {
            Ok(0) if !matches!(c.op, Op::Insert(_)) => Ok(Outcome::Conflict(Refusal::RowMissing)),
            Ok(_) => Ok(Outcome::Applied),
            Err(e) if e.as_db_error().is_some_and(|d| d.code().code() == "23505") => {
                Ok(Outcome::Conflict(refusal(&e)))
            }
            Err(e)
                if e.as_db_error()
                    .is_some_and(|d| sqlstate_is_data_error(d.code().code())) =>
            {
                Ok(Outcome::Failed(refusal(&e)))
            }
            // A full disk, a shutdown, a missing privilege: nothing about this change.
            // The batch fails whole, so the checkpoint stays before it; transient ones are
            // retried with backoff by the stream's loop.
            Err(e) => Err(EngineError::Pg(self.target.err("applying a change", e))),
        }
    }

    /// A row that exists when it should not, or is missing when it should exist.
    pub(super) async fn conflict(&mut self, c: &Change, error: Refusal) -> Result<i64> {
        // In a filtered table a missing row is expected: the filter kept it out. A delete
        // of it has nothing to do; an update brings it into the filter's range, so the row
        // is inserted whole (when the change carries every value).
        if c.table.filter.is_some() {
            match &c.op {
                Op::Delete(_) => return Ok(0),
                Op::Update { new, .. } if !new.contains(&Value::Unchanged) => {
                    let as_insert = Change {
                        op: Op::Insert(new.clone()),
                        ..c.clone()
                    };
                    return self.retry_as(&as_insert, c, error).await;
                }
                Op::Update { .. } => {
                    return self
                        .record(
                            c,
                            ErrorPolicy::LogError,
                            Refusal::UnchangedValueEntersFilter,
                        )
                        .await;
                }
                Op::Insert(_) => {}
            }
        }
        self.apply_errors += 1;
        let e = &self.settings.errors;
        let mut policy = match c.op {
            Op::Insert(_) => e.apply_error_insert_policy,
            Op::Update { .. } => e.apply_error_update_policy,
            Op::Delete(_) => e.apply_error_delete_policy,
        };
        if e.apply_error_escalation_count > 0 && self.apply_errors >= e.apply_error_escalation_count
        {
            policy = e.apply_error_escalation_policy;
        }
        match (policy, &c.op) {
            (ErrorPolicy::InsertRecord, Op::Update { new, .. })
                if !new.contains(&Value::Unchanged) =>
            {
                let as_insert = Change {
                    op: Op::Insert(new.clone()),
                    ..c.clone()
                };
                self.retry_as(&as_insert, c, error).await
            }
            (ErrorPolicy::UpdateRecord, Op::Insert(new)) if c.table.has_key() => {
                let as_update = Change {
                    op: Op::Update {
                        old: None,
                        new: new.clone(),
                    },
                    ..c.clone()
                };
                self.retry_as(&as_update, c, error).await
            }
            (ErrorPolicy::InsertRecord | ErrorPolicy::UpdateRecord, _) => {
                self.record(c, ErrorPolicy::LogError, error).await
            }
            (policy, _) => self.record(c, policy, error).await,
        }
    }

    pub(super) async fn retry_as(
        &mut self,
        replacement: &Change,
        original: &Change,
        error: Refusal,
    ) -> Result<i64> {
        self.target
            .batch("applying a change", "SAVEPOINT pgferry_retry")
            .await?;
        match Box::pin(self.apply_one(replacement)).await? {
            Outcome::Applied => {
                self.target
                    .batch("applying a change", "RELEASE SAVEPOINT pgferry_retry")
                    .await?;
                Ok(0)
            }
            Outcome::Conflict(e2) | Outcome::Failed(e2) => {
                self.target
                    .batch("applying a change", "ROLLBACK TO SAVEPOINT pgferry_retry")
                    .await?;
                let both = Refusal::RetryFailed {
                    first: Box::new(error),
                    then: Box::new(e2),
                };
                self.record(original, ErrorPolicy::LogError, both).await
            }
        }
    }

    /// A change the target rejects for its data.
    pub(super) async fn data_error(&mut self, c: &Change, error: Refusal) -> Result<i64> {
        self.data_errors += 1;
        let e = &self.settings.errors;
        let policy = if e.data_error_escalation_count > 0
            && self.data_errors >= e.data_error_escalation_count
        {
            e.data_error_escalation_policy
        } else {
            e.data_error_policy
        };
        self.record(c, policy, error).await
    }

    /// Carries out a policy for a change that failed. Returns 1 when the change is
    /// recorded as an exception.
    pub(super) async fn record(
        &mut self,
        c: &Change,
        policy: ErrorPolicy,
        error: Refusal,
    ) -> Result<i64> {
        match policy {
            ErrorPolicy::IgnoreRecord => Ok(0),
            ErrorPolicy::StopTask => Err(EngineError::ApplyStopped {
                table: c.table.source.clone(),
                operation: c.op.name(),
                refusal: error,
            }),
            ErrorPolicy::LogError
            | ErrorPolicy::SuspendTable
            | ErrorPolicy::InsertRecord
            | ErrorPolicy::UpdateRecord => {
                let change = self.change_json(c).await;
                let error = error.to_string();
                let error = error.as_str();
                let exception = crate::control::ApplyException {
                    commit_lsn: c.commit_lsn,
                    xid: c.xid,
                    table: &c.table.source,
                    operation: c.op.name(),
                    policy: policy.as_str(),
                    error,
                    change,
                };
                crate::control::record_exception(&self.target, &self.task, exception).await?;
                tracing::warn!(table = %c.table.source, operation = c.op.name(),
                    policy = policy.as_str(), error, "change not applied");
                if policy == ErrorPolicy::SuspendTable {
                    self.suspend(&c.table.source, error).await?;
                }
                Ok(1)
            }
        }
    }

    pub(super) async fn suspend(&mut self, table: &QualifiedName, reason: &str) -> Result<()> {
        self.suspended.insert(table.clone());
        crate::control::suspend_table(&self.target, &self.task, table, reason).await?;
        crate::control::event(
            self.target.raw(),
            &self.task,
            crate::control::Level::Error,
            "cdc",
            &format!("changes to {table} are suspended: {reason}"),
            None,
        )
        .await
    }

    /// A tuple as JSON keyed by column name, for people repairing a change by hand. Binary
    /// values are turned into their text form by the target (inside a savepoint, so a value
    /// it cannot read leaves the batch intact and is shown as hex instead).
    pub(super) async fn tuple_json(&mut self, table: &TableInfo, t: &Tuple) -> serde_json::Value {
        let mut values: Vec<serde_json::Value> = t.iter().map(value_json).collect();
        let binary: Vec<(usize, &sql::Col, &[u8])> = t
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match (v, table.col(i)) {
                (Value::Binary(b), Some(c)) => Some((i, c, &b[..])),
                _ => None,
            })
            .collect();
        if !binary.is_empty() {
            let select = binary
                .iter()
                .enumerate()
                .map(|(n, (_, c, _))| format!("${}::{}::text", n + 1, c.type_sql))
                .collect::<Vec<_>>()
                .join(", ");
            let params: Vec<Param<'_>> = binary
                .iter()
                .map(|(_, _, b)| Param {
                    value: Some(b),
                    binary: true,
                })
                .collect();
            let refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            let raw = self.target.raw();
            if raw
                .batch_execute("SAVEPOINT pgferry_readable")
                .await
                .is_ok()
            {
                match raw.query_one(&format!("SELECT {select}"), &refs).await {
                    Ok(row) => {
                        for (n, (i, _, _)) in binary.iter().enumerate() {
                            if let Ok(Some(text)) = row.try_get::<_, Option<String>>(n) {
                                values[*i] = serde_json::Value::String(text);
                            }
                        }
                        let _ = raw
                            .batch_execute("RELEASE SAVEPOINT pgferry_readable")
                            .await;
                    }
                    Err(_) => {
                        let _ = raw
                            .batch_execute("ROLLBACK TO SAVEPOINT pgferry_readable")
                            .await;
                    }
                }
            }
        }
        let mut map = serde_json::Map::new();
        for (i, v) in values.into_iter().enumerate() {
            let name = table
                .col(i)
                .map(|c| c.name.clone())
                .unwrap_or_else(|| format!("column {}", i + 1));
            map.insert(name, v);
        }
        serde_json::Value::Object(map)
    }

    /// The change as JSON, for `pgferry.apply_exceptions`.
    pub(super) async fn change_json(&mut self, c: &Change) -> serde_json::Value {
        let mut obj = serde_json::Map::new();
        obj.insert("operation".into(), c.op.name().into());
        match &c.op {
            Op::Insert(new) => {
                obj.insert("new".into(), self.tuple_json(&c.table, new).await);
            }
            Op::Update { old, new } => {
                if let Some((_, o)) = old {
                    obj.insert("old".into(), self.tuple_json(&c.table, o).await);
                }
                obj.insert("new".into(), self.tuple_json(&c.table, new).await);
            }
            Op::Delete(old) => {
                obj.insert("old".into(), self.tuple_json(&c.table, old).await);
            }
        }
        serde_json::Value::Object(obj)
    }
}

/// The server's refusal of one change, typed.
fn refusal(e: &tokio_postgres::Error) -> Refusal {
    Refusal::Server {
        sqlstate: e
            .as_db_error()
            .map(|d| d.code().code().to_owned())
            .unwrap_or_default(),
        message: describe_pg_error(e),
    }
}
