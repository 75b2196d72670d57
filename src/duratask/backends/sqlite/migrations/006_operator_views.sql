-- duratask task hub, schema version 6.
--
-- What operators look back on, kept beside the working tables (deleted with the instance):
--
-- lease_takeovers: an instance leased while an earlier lease was still on it, expired but
-- never released (its worker crashed or hung), or broken because its worker was known gone.
-- lease_expired_at is when that lease ran out (or was broken); taken_at when the instance
-- was leased again (NULL taken_by: broken, not yet leased).
CREATE TABLE lease_takeovers (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id      TEXT    NOT NULL REFERENCES instances (instance_id) ON DELETE CASCADE,
    execution_id     TEXT,
    previous_owner   TEXT,
    lease_expired_at INTEGER NOT NULL,
    taken_at         INTEGER NOT NULL,
    taken_by         TEXT
);

CREATE INDEX lease_takeovers_by_instance ON lease_takeovers (instance_id, id);

-- executions: one compact record per execution whose history was dropped when the instance
-- started afresh (continue-as-new, or a finished instance started again); generation counts
-- them from 1. Inputs and outputs are kept only as their first characters.
CREATE TABLE executions (
    instance_id  TEXT    NOT NULL REFERENCES instances (instance_id) ON DELETE CASCADE,
    generation   INTEGER NOT NULL,
    execution_id TEXT,
    name         TEXT    NOT NULL,
    version      TEXT,
    started_at   INTEGER NOT NULL,
    ended_at     INTEGER NOT NULL,
    status       TEXT    NOT NULL,
    input        TEXT,
    output       TEXT,
    PRIMARY KEY (instance_id, generation)
) WITHOUT ROWID;

-- query_instances sorted by last update pages by (last_updated_at, instance_id).
CREATE INDEX instances_by_last_updated_at ON instances (last_updated_at, instance_id);
