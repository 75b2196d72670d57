-- duratask task hub, schema version 4: durable entities.
--
-- An entity (@name@key) keeps its state (JSON), the orchestration whose critical section
-- holds it, and the ids of the requests it applied last (a JSON array, so that a message
-- delivered twice is applied once); a worker leases it like an instance. Its messages wait
-- in entity_messages: body is the message's JSON, source its sender (while the entity is
-- locked, only the lock holder's messages are delivered). Times are INTEGER microseconds.
CREATE TABLE entities (
    entity_id        TEXT    NOT NULL PRIMARY KEY,
    name             TEXT    NOT NULL,
    state            TEXT,
    locked_by        TEXT,
    recent_requests  TEXT    NOT NULL DEFAULT '[]',
    last_modified_at INTEGER NOT NULL,
    lock_token       TEXT,
    lock_owner       TEXT,
    lock_expires_at  INTEGER
);

CREATE INDEX entities_by_name ON entities (name, entity_id);

CREATE TABLE entity_messages (
    message_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    entity_id     TEXT    NOT NULL REFERENCES entities (entity_id) ON DELETE CASCADE,
    source        TEXT,
    body          TEXT    NOT NULL,
    enqueued_at   INTEGER NOT NULL,
    visible_at    INTEGER,
    due_at        INTEGER NOT NULL,
    dequeue_count INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX entity_messages_by_entity ON entity_messages (entity_id, message_id);
CREATE INDEX entity_messages_by_due_at ON entity_messages (due_at, message_id);
