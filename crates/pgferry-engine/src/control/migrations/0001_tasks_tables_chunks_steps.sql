CREATE TABLE pgferry.task (
    name text PRIMARY KEY,
    migration_type text NOT NULL,
    settings jsonb NOT NULL,
    phase text NOT NULL,
    source text NOT NULL,
    target text NOT NULL,
    schema_archive bytea,
    schema_preamble text,
    existing_tables jsonb NOT NULL DEFAULT '[]',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    load_started_at timestamptz,
    load_finished_at timestamptz,
    finished_at timestamptz,
    last_error text
);
COMMENT ON TABLE pgferry.task IS 'One row per pgferry task: what it moves and how far it got.';

CREATE TABLE pgferry.table_state (
    task text NOT NULL REFERENCES pgferry.task ON DELETE CASCADE,
    table_id integer NOT NULL,
    source_schema text NOT NULL,
    source_table text NOT NULL,
    target_schema text NOT NULL,
    target_table text NOT NULL,
    dump_id integer,
    state text NOT NULL DEFAULT 'pending',
    copy_format text NOT NULL,
    columns jsonb NOT NULL,
    estimated_rows bigint,
    estimated_bytes bigint NOT NULL,
    rows_copied bigint NOT NULL DEFAULT 0,
    bytes_copied bigint NOT NULL DEFAULT 0,
    chunks_total integer NOT NULL,
    chunks_done integer NOT NULL DEFAULT 0,
    existed_before boolean NOT NULL DEFAULT false,
    analyzed boolean NOT NULL DEFAULT false,
    started_at timestamptz,
    finished_at timestamptz,
    last_error text,
    PRIMARY KEY (task, table_id)
);

CREATE TABLE pgferry.chunk (
    task text NOT NULL,
    table_id integer NOT NULL,
    chunk_no integer NOT NULL,
    start_block bigint,
    end_block bigint,
    state text NOT NULL DEFAULT 'pending',
    rows bigint,
    bytes bigint,
    attempts integer NOT NULL DEFAULT 0,
    seconds double precision,
    finished_at timestamptz,
    PRIMARY KEY (task, table_id, chunk_no),
    FOREIGN KEY (task, table_id) REFERENCES pgferry.table_state ON DELETE CASCADE
);

CREATE TABLE pgferry.schema_step (
    task text NOT NULL REFERENCES pgferry.task ON DELETE CASCADE,
    dump_id integer NOT NULL,
    section text NOT NULL,
    ordinal integer NOT NULL,
    phase integer NOT NULL,
    kind text NOT NULL,
    label text NOT NULL,
    depends_on integer[] NOT NULL DEFAULT '{}',
    weight bigint NOT NULL DEFAULT 0,
    sql text NOT NULL,
    state text NOT NULL DEFAULT 'pending',
    note text,
    seconds double precision,
    finished_at timestamptz,
    PRIMARY KEY (task, dump_id)
);

CREATE TABLE pgferry.event (
    id bigserial PRIMARY KEY,
    task text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    level text NOT NULL,
    kind text NOT NULL,
    message text NOT NULL,
    detail jsonb
);
CREATE INDEX event_task_id ON pgferry.event (task, id);

CREATE TABLE pgferry.validation (
    task text NOT NULL,
    source_schema text NOT NULL,
    source_table text NOT NULL,
    target_schema text NOT NULL,
    target_table text NOT NULL,
    checked_at timestamptz NOT NULL DEFAULT now(),
    outcome text NOT NULL,
    source_rows bigint,
    target_rows bigint,
    detail text,
    PRIMARY KEY (task, source_schema, source_table)
);
