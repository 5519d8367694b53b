ALTER TABLE pgferry.table_state
    ADD COLUMN target_columns jsonb,
    ADD COLUMN row_filter text;
