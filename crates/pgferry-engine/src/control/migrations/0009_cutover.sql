CREATE TABLE pgferry.cutover (
    task text PRIMARY KEY REFERENCES pgferry.task ON DELETE CASCADE,
    state text NOT NULL DEFAULT 'running',
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    fence jsonb,
    fence_lsn pg_lsn,
    fenced_at timestamptz,
    opened_at timestamptz,
    report jsonb
);
COMMENT ON TABLE pgferry.cutover IS
    'A task''s cutover: running, done or aborted. `fence` records what fencing the source changed (written before the change, so a crash mid-fence can always be undone), `fence_lsn` the source position after the fence was verified.';

CREATE TABLE pgferry.cutover_step (
    task text NOT NULL REFERENCES pgferry.task ON DELETE CASCADE,
    step text NOT NULL,
    ordinal integer NOT NULL,
    state text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    detail jsonb,
    PRIMARY KEY (task, step)
);
COMMENT ON TABLE pgferry.cutover_step IS
    'One step of a cutover: running (begun; a rerun does it again) or done (never repeated).';

CREATE TABLE pgferry.write_probe (
    task text NOT NULL,
    token text NOT NULL,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE pgferry.write_probe IS
    'The cutover''s write test on the opened target: a row written, read back and removed.';
