-- duratask task hub on PostgreSQL, schema version 6: durable entities.
--
-- An entity (@name@key) keeps its state (JSON text), the orchestration whose critical
-- section holds it, and the ids of the requests it applied last (so that a message delivered
-- twice is applied once); a worker leases it like an instance. Its messages wait in
-- entity_messages: body is the message's JSON, source its sender (while the entity is
-- locked, only the lock holder's messages are delivered). Ids sort by code point.
CREATE TABLE {schema}.entities (
    entity_id        text COLLATE "C" NOT NULL PRIMARY KEY,
    name             text COLLATE "C" NOT NULL,
    state            text,
    locked_by        text COLLATE "C",
    recent_requests  jsonb       NOT NULL DEFAULT '[]',
    last_modified_at timestamptz NOT NULL,
    lock_token       text,
    lock_owner       text,
    lock_expires_at  timestamptz
);

CREATE INDEX entities_by_name ON {schema}.entities (name, entity_id);

CREATE TABLE {schema}.entity_messages (
    message_id    bigserial   PRIMARY KEY,
    entity_id     text COLLATE "C" NOT NULL
                  REFERENCES {schema}.entities (entity_id) ON DELETE CASCADE,
    source        text COLLATE "C",
    body          text        NOT NULL,
    enqueued_at   timestamptz NOT NULL,
    visible_at    timestamptz,
    due_at        timestamptz NOT NULL,
    dequeue_count integer     NOT NULL DEFAULT 0
);

CREATE INDEX entity_messages_by_entity ON {schema}.entity_messages (entity_id, message_id);
CREATE INDEX entity_messages_by_due_at ON {schema}.entity_messages (due_at, message_id);
