ALTER TABLE pgferry.table_state
    ADD COLUMN split_key jsonb,
    ADD COLUMN split_note text;
ALTER TABLE pgferry.chunk
    ADD COLUMN key_lo text,
    ADD COLUMN key_hi text;
COMMENT ON COLUMN pgferry.table_state.split_key IS
    'The key column of key-range chunks (chunk.key_lo <= key < chunk.key_hi, NULL for an open end).';
COMMENT ON COLUMN pgferry.table_state.split_note IS
    'Why a table bigger than one chunk is copied in one piece.';
