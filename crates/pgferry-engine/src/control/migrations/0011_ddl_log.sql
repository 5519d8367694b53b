-- Schema changes captured on the source during CDC (`[cdc] ddl`), one row per command
-- the task covers: applied in the same target transaction as the changes around it, kept
-- (not applied, as the task's settings say) or failed (with the statement and the error).
CREATE TABLE pgferry.ddl_log (
    id bigserial PRIMARY KEY,
    task text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    commit_lsn pg_lsn NOT NULL,
    xid bigint NOT NULL,
    tag text NOT NULL,
    object text NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('applied', 'kept', 'failed')),
    statements text[] NOT NULL DEFAULT '{}',
    error text
);
CREATE INDEX ddl_log_task_id ON pgferry.ddl_log (task, id);
COMMENT ON TABLE pgferry.ddl_log IS
    'Schema changes the stream carried: applied, kept by the task''s settings, or failed (statement and error).';
