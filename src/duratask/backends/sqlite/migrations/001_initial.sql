-- duratask task hub, schema version 1.
--
-- Times are INTEGER microseconds since the Unix epoch, UTC. Events are stored as the JSON
-- text of duratask.history.event_to_json. Deleting an instance row deletes everything it
-- owns (history, messages, activities) through ON DELETE CASCADE.

CREATE TABLE instances (
    instance_id        TEXT    NOT NULL PRIMARY KEY,
    name               TEXT    NOT NULL,
    version            TEXT,
    runtime_status     TEXT    NOT NULL,
    created_at         INTEGER NOT NULL,
    last_updated_at    INTEGER NOT NULL,
    completed_at       INTEGER,
    execution_id       TEXT,
    input              TEXT,
    output             TEXT,
    custom_status      TEXT,
    failure_details    TEXT,   -- FailureDetails JSON
    parent_instance_id TEXT,
    scheduled_start_at INTEGER,
    -- the lease of the worker processing the instance (all NULL when free)
    lock_token         TEXT,
    lock_owner         TEXT,
    lock_expires_at    INTEGER
);

-- query_instances orders and pages by (created_at, instance_id).
CREATE INDEX instances_by_created_at ON instances (created_at, instance_id);
CREATE INDEX instances_by_name ON instances (name, created_at, instance_id);
CREATE INDEX instances_by_status ON instances (runtime_status, created_at, instance_id);
CREATE INDEX instances_by_parent ON instances (parent_instance_id);

CREATE TABLE history (
    instance_id     TEXT    NOT NULL REFERENCES instances (instance_id) ON DELETE CASCADE,
    sequence_number INTEGER NOT NULL,
    event_type      TEXT    NOT NULL,
    event           TEXT    NOT NULL,
    PRIMARY KEY (instance_id, sequence_number)
) WITHOUT ROWID;

-- AUTOINCREMENT: a message id is never reused, so a stale consumed id cannot hit a newer message.
CREATE TABLE messages (
    message_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id   TEXT    NOT NULL REFERENCES instances (instance_id) ON DELETE CASCADE,
    execution_id  TEXT,
    event_type    TEXT    NOT NULL, event TEXT NOT NULL,  -- the event's type, its JSON
    enqueued_at   INTEGER NOT NULL,
    -- visible_at as sent (NULL: visible from enqueued_at); due_at repeats it, or the enqueue
    -- time, for the index that orders the due messages
    visible_at    INTEGER, due_at INTEGER NOT NULL,
    dequeue_count INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX messages_by_instance ON messages (instance_id, message_id);
-- Picking the next instance walks due messages in order and stops at the first free one.
CREATE INDEX messages_by_due_at ON messages (due_at, message_id);

CREATE TABLE activities (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id     TEXT    NOT NULL REFERENCES instances (instance_id) ON DELETE CASCADE,
    execution_id    TEXT    NOT NULL,
    task_id         INTEGER NOT NULL,
    name            TEXT    NOT NULL,
    version         TEXT,
    input           TEXT,
    enqueued_at     INTEGER NOT NULL,
    visible_at      INTEGER NOT NULL,
    lock_token      TEXT,
    lock_owner      TEXT,
    lock_expires_at INTEGER,
    dequeue_count   INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX activities_by_visible_at ON activities (visible_at, id);
CREATE INDEX activities_by_instance ON activities (instance_id);
