-- A rollback is recorded like a cutover, with its own steps and report: one row per task
-- and kind (`cutover`, `rollback`).
ALTER TABLE pgferry.cutover ADD COLUMN kind text NOT NULL DEFAULT 'cutover';
ALTER TABLE pgferry.cutover DROP CONSTRAINT cutover_pkey;
ALTER TABLE pgferry.cutover ADD PRIMARY KEY (task, kind);
ALTER TABLE pgferry.cutover_step ADD COLUMN kind text NOT NULL DEFAULT 'cutover';
ALTER TABLE pgferry.cutover_step DROP CONSTRAINT cutover_step_pkey;
ALTER TABLE pgferry.cutover_step ADD PRIMARY KEY (task, kind, step);
COMMENT ON COLUMN pgferry.cutover.kind IS
    '`cutover` (source fenced, target opened) or `rollback` (target fenced, source reopened).';

-- A run that stops streaming says so here: a cutover waits for this, not for the run to
-- end, since the run goes on streaming the other way.
ALTER TABLE pgferry.cdc_state ADD COLUMN stopped_at timestamptz;
