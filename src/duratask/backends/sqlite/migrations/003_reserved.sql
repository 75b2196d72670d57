-- duratask task hub, schema version 3: reserved (no change). Another change of the schema
-- takes this number; this placeholder only keeps the versions without gaps until it lands.
SELECT 1;
