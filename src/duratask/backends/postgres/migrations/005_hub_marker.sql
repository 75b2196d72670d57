-- duratask task hub on PostgreSQL, schema version 5.
--
-- Marks the schema as a duratask task hub (one row). duratask creates a hub only in a new or
-- empty schema, and opens, changes or deletes only what is so marked (or, for a hub made
-- before this version, what holds its tables); it never touches another application's.
-- owns_schema: duratask created the schema itself, so deleting the hub may drop it once
-- nothing else is in it (set false when the hub was made in a schema that already existed).
CREATE TABLE {schema}.duratask_hub (
    id          integer     NOT NULL PRIMARY KEY CHECK (id = 1),
    layout      text        NOT NULL,
    owns_schema boolean     NOT NULL,
    marked_at   timestamptz NOT NULL DEFAULT now()
);

INSERT INTO {schema}.duratask_hub (id, layout, owns_schema) VALUES (1, 'duratask task hub', true);
