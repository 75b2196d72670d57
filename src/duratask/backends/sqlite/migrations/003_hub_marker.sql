-- duratask task hub, schema version 3.
--
-- Marks the file as a duratask task hub (one row). duratask creates a hub only in a new or
-- empty file, and opens, changes or deletes only what is so marked (or, for a hub made
-- before this version, what holds its tables); it never touches another application's.
CREATE TABLE duratask_hub (
    id        INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    layout    TEXT    NOT NULL,  -- 'duratask task hub'
    marked_at INTEGER NOT NULL   -- microseconds since the Unix epoch, UTC
);

INSERT INTO duratask_hub (id, layout, marked_at)
VALUES (1, 'duratask task hub', CAST(strftime('%s', 'now') AS INTEGER) * 1000000);
