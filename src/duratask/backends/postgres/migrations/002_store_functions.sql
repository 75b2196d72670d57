-- duratask task hub on PostgreSQL, schema version 2.
--
-- Version 2 introduced the store functions (one call each for creating an instance, leasing
-- the next one and committing an episode). They are no longer a migration: they live in
-- ../logic.sql, which a store applies when it opens a hub whose installed logic differs
-- (see migration 003). This version changes no table.
SELECT 1;
