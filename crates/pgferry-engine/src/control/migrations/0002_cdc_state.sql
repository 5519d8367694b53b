CREATE TABLE pgferry.cdc_state (
    task text PRIMARY KEY REFERENCES pgferry.task ON DELETE CASCADE,
    slot_name text NOT NULL,
    publication text NOT NULL,
    publication_created boolean NOT NULL,
    consistent_lsn pg_lsn NOT NULL,
    applied_lsn pg_lsn,
    applied_commit_time timestamptz,
    received_lsn pg_lsn,
    inserts bigint NOT NULL DEFAULT 0,
    updates bigint NOT NULL DEFAULT 0,
    deletes bigint NOT NULL DEFAULT 0,
    truncates bigint NOT NULL DEFAULT 0,
    transactions bigint NOT NULL DEFAULT 0,
    exceptions bigint NOT NULL DEFAULT 0,
    source_latency_ms bigint,
    target_latency_ms bigint,
    wal_retained_bytes bigint,
    binary_mode boolean,
    stop_requested boolean NOT NULL DEFAULT false,
    streaming_since timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pgferry.cdc_state IS
    'Change data capture per task; applied_lsn is the exactly-once checkpoint, written in the same transaction as the changes it covers.';

-- No reference to pgferry.task: a change is recorded before the task row exists, and the
-- record must outlive a planning that fails, so that cleanup can still undo it.
CREATE TABLE pgferry.replica_identity_change (
    task text NOT NULL,
    schema_name text NOT NULL,
    table_name text NOT NULL,
    original text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task, schema_name, table_name)
);

CREATE TABLE pgferry.apply_exceptions (
    id bigserial PRIMARY KEY,
    task text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    commit_lsn pg_lsn,
    xid bigint,
    schema_name text NOT NULL,
    table_name text NOT NULL,
    operation text NOT NULL,
    policy text NOT NULL,
    error text NOT NULL,
    change jsonb
);
CREATE INDEX apply_exceptions_task_id ON pgferry.apply_exceptions (task, id);

CREATE TABLE pgferry.cdc_table (
    task text NOT NULL REFERENCES pgferry.task ON DELETE CASCADE,
    schema_name text NOT NULL,
    table_name text NOT NULL,
    excluded boolean NOT NULL DEFAULT false,
    suspended boolean NOT NULL DEFAULT false,
    suspended_reason text,
    snapshot_filter text,
    PRIMARY KEY (task, schema_name, table_name)
);
COMMENT ON TABLE pgferry.cdc_table IS
    'Per published relation (the root, for partitions): left out, suspended, or copied from a later snapshot than the stream start (snapshot_filter, xmin:xmax:xip), whose transactions are then not applied again.';

ALTER TABLE pgferry.table_state
    ADD COLUMN root_schema text,
    ADD COLUMN root_table text;
