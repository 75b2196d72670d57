-- duratask task hub on PostgreSQL, schema version 6: reserved for a change developed
-- alongside schedules (007). This placeholder does nothing; it is replaced by that change's
-- script.
SELECT 1;
