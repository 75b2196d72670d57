-- duratask task hub on PostgreSQL, schema version 1.
--
-- Every object lives in the task hub's own schema: {schema} is replaced by the quoted schema
-- name (psycopg.sql.Identifier) before the script runs, inside the migration transaction.
-- Times are timestamptz. Events are stored as the JSON text of
-- duratask.history.event_to_json. Deleting an instance row deletes everything it owns
-- (history, messages, activities) through ON DELETE CASCADE. Instance ids sort by code
-- point (COLLATE "C"), whatever the database's collation, as on every other store.

CREATE TABLE {schema}.instances (
    instance_id        text COLLATE "C" NOT NULL PRIMARY KEY,
    name               text        NOT NULL,
    version            text,
    runtime_status     text        NOT NULL,
    created_at         timestamptz NOT NULL,
    last_updated_at    timestamptz NOT NULL,
    completed_at       timestamptz,
    execution_id       text,
    input              text,
    output             text,
    custom_status      text,
    failure_details    text,  -- FailureDetails JSON
    parent_instance_id text COLLATE "C",
    scheduled_start_at timestamptz,
    -- the lease of the worker processing the instance (all NULL when free)
    lock_token         text,
    lock_owner         text,
    lock_expires_at    timestamptz
);

-- query_instances orders and pages by (created_at, instance_id).
CREATE INDEX instances_by_created_at ON {schema}.instances (created_at, instance_id);
CREATE INDEX instances_by_name ON {schema}.instances (name, created_at, instance_id);
CREATE INDEX instances_by_status ON {schema}.instances (runtime_status, created_at, instance_id);
CREATE INDEX instances_by_parent ON {schema}.instances (parent_instance_id);

CREATE TABLE {schema}.history (
    instance_id     text COLLATE "C" NOT NULL
                    REFERENCES {schema}.instances (instance_id) ON DELETE CASCADE,
    sequence_number integer NOT NULL,
    event_type      text    NOT NULL,
    event           text    NOT NULL,
    PRIMARY KEY (instance_id, sequence_number)
);

-- bigserial: a message id is never reused, so a stale consumed id cannot hit a newer message.
CREATE TABLE {schema}.messages (
    message_id    bigserial PRIMARY KEY,
    instance_id   text COLLATE "C" NOT NULL
                  REFERENCES {schema}.instances (instance_id) ON DELETE CASCADE,
    execution_id  text,
    event_type    text        NOT NULL,
    event         text        NOT NULL,
    enqueued_at   timestamptz NOT NULL,
    visible_at    timestamptz,  -- as sent; NULL: visible at once
    due_at        timestamptz NOT NULL,  -- COALESCE(visible_at, enqueued_at), for the index
    dequeue_count integer     NOT NULL DEFAULT 0
);

-- The visible messages of one instance, in enqueue order.
CREATE INDEX messages_by_instance ON {schema}.messages (instance_id, message_id);
-- Picking the next instance walks due messages in order and stops at the first free one.
CREATE INDEX messages_by_due_at ON {schema}.messages (due_at, message_id);

CREATE TABLE {schema}.activities (
    id              bigserial PRIMARY KEY,
    instance_id     text COLLATE "C" NOT NULL
                    REFERENCES {schema}.instances (instance_id) ON DELETE CASCADE,
    execution_id    text        NOT NULL,
    task_id         bigint      NOT NULL,
    name            text        NOT NULL,
    version         text,
    input           text,
    enqueued_at     timestamptz NOT NULL,
    visible_at      timestamptz NOT NULL,
    lock_token      text,
    lock_owner      text,
    lock_expires_at timestamptz,
    dequeue_count   integer     NOT NULL DEFAULT 0
);

CREATE INDEX activities_by_visible_at ON {schema}.activities (visible_at, id);
CREATE INDEX activities_by_instance ON {schema}.activities (instance_id);
