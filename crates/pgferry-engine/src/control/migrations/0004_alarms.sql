CREATE TABLE pgferry.alarm (
    task text NOT NULL REFERENCES pgferry.task ON DELETE CASCADE,
    name text NOT NULL,
    state text NOT NULL,
    reason text NOT NULL,
    since timestamptz NOT NULL,
    value double precision,
    rule jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task, name)
);
COMMENT ON TABLE pgferry.alarm IS
    'Each alarm''s rule and current state; its state changes are in pgferry.event (kind alarm).';
