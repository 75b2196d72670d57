-- duratask task hub on PostgreSQL, schema version 7.
--
-- Schedules: their definition and state are JSON the store does not read. next_due_at
-- (NULL: not due until it changes) is when a worker must look at one next; a worker looking
-- at one sets claimed_by and moves next_due_at to the end of its claim. Every write names
-- the revision it read.
CREATE TABLE {schema}.schedules (
    schedule_id text        NOT NULL PRIMARY KEY,
    definition  text        NOT NULL,
    state       text        NOT NULL,
    next_due_at timestamptz,
    claimed_by  text,
    revision    bigint      NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE INDEX schedules_by_due_at ON {schema}.schedules (next_due_at)
    WHERE next_due_at IS NOT NULL;
