-- duratask task hub on PostgreSQL, schema version 5: reserved for a change developed
-- alongside schedules (007). This placeholder does nothing; it is replaced by that change's
-- script.
SELECT 1;
