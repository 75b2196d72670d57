-- duratask task hub on PostgreSQL, schema version 4.
--
-- Activities remember their retry attempt, their timeouts and the last details their code
-- reported with a heartbeat (kept across deliveries of the same attempt).
ALTER TABLE {schema}.activities
    ADD COLUMN attempt           integer  NOT NULL DEFAULT 1,
    ADD COLUMN timeout           interval,  -- start to close
    ADD COLUMN heartbeat_timeout interval,
    ADD COLUMN heartbeat_details text,      -- JSON, as the code reported it
    ADD COLUMN heartbeat_at      timestamptz;

-- The workers connected to the hub: what each registered and when it was last heard from
-- (a heartbeat every few seconds, off the hot path).
CREATE TABLE {schema}.workers (
    worker_id     text        NOT NULL PRIMARY KEY,
    host          text        NOT NULL,
    pid           integer     NOT NULL,
    started_at    timestamptz NOT NULL,
    heartbeat_at  timestamptz NOT NULL,
    registrations jsonb       NOT NULL,
    status        jsonb       NOT NULL
);
