ALTER TABLE pgferry.cdc_state ADD COLUMN drain_to pg_lsn, ADD COLUMN drained_lsn pg_lsn;
COMMENT ON COLUMN pgferry.cdc_state.drain_to IS
    'A drain in progress: the stream stops once every transaction committed before this source position is applied (a cutover''s fence position).';
COMMENT ON COLUMN pgferry.cdc_state.drained_lsn IS
    'Where the last drain ended: everything the source committed before it is applied.';
