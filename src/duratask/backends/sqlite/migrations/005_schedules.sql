-- duratask task hub, schema version 5.
--
-- Schedules: their definition and state are JSON the store does not read. next_due_at
-- (INTEGER microseconds, NULL: not due until it changes) is when a worker must look at one
-- next; a worker looking at one sets claimed_by and moves next_due_at to the end of its
-- claim. Every write names the revision it read.
CREATE TABLE schedules (
    schedule_id TEXT    NOT NULL PRIMARY KEY,
    definition  TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    next_due_at INTEGER,
    claimed_by  TEXT,
    revision    INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX schedules_by_due_at ON schedules (next_due_at) WHERE next_due_at IS NOT NULL;
