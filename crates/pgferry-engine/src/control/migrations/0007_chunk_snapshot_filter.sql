ALTER TABLE pgferry.chunk ADD COLUMN snapshot_filter text;
COMMENT ON COLUMN pgferry.chunk.snapshot_filter IS
    'For a chunk of an integer-key-split table copied from a later snapshot than the stream''s start (a resumed load): that snapshot (xmin:xmax:xip), whose transactions are not applied again to rows of the chunk''s key range.';
