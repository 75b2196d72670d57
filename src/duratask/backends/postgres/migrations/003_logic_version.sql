-- duratask task hub on PostgreSQL, schema version 3.
--
-- The store's functions are defined by logic.sql, applied at open whenever the digest of the
-- installed logic differs from this duratask's; the digest is kept here (one row).
CREATE TABLE {schema}.logic (
    singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    digest     text        NOT NULL,
    applied_at timestamptz NOT NULL
);
