ALTER TABLE pgferry.cdc_state ADD COLUMN start_over_since timestamptz;
COMMENT ON COLUMN pgferry.cdc_state.start_over_since IS
    'Set while `pgferry run --start-over` replaces a lost slot: the slot on the source may already be the new one, so the checkpoint must not be used with it.';
