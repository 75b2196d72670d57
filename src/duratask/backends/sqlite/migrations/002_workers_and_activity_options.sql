-- duratask task hub, schema version 2.
--
-- Activities remember their retry attempt, their timeouts and the last details their code
-- reported with a heartbeat (kept across deliveries of the same attempt); times and
-- durations are INTEGER microseconds.
ALTER TABLE activities ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;
ALTER TABLE activities ADD COLUMN timeout INTEGER;  -- start to close
ALTER TABLE activities ADD COLUMN heartbeat_timeout INTEGER;
ALTER TABLE activities ADD COLUMN heartbeat_details TEXT;  -- JSON, as the code reported it
ALTER TABLE activities ADD COLUMN heartbeat_at INTEGER;

-- The workers connected to the hub: what each registered (JSON) and when it was last heard
-- from (a heartbeat every few seconds, off the hot path).
CREATE TABLE workers (
    worker_id     TEXT    NOT NULL PRIMARY KEY,
    host          TEXT    NOT NULL,
    pid           INTEGER NOT NULL,
    started_at    INTEGER NOT NULL,
    heartbeat_at  INTEGER NOT NULL,
    registrations TEXT    NOT NULL,  -- {"orchestrations": [[name, version]], "activities": [...]}
    status        TEXT    NOT NULL   -- {"orchestrations": in flight, "activities": in flight}
);
