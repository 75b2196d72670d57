-- duratask task hub on PostgreSQL, schema version 5: reserved (no change). Another change of
-- the schema takes this number; this placeholder only keeps the versions without gaps until
-- it lands.
SELECT 1;
