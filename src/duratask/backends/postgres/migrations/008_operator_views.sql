-- duratask task hub on PostgreSQL, schema version 8.
--
-- What operators look back on, kept beside the working tables (deleted with the instance):
--
-- lease_takeovers: an instance leased while an earlier lease was still on it, expired but
-- never released (its worker crashed or hung), or broken because its worker was known gone.
-- lease_expired_at is when that lease ran out (or was broken); taken_at when the instance
-- was leased again (NULL taken_by: broken, not yet leased).
CREATE TABLE {schema}.lease_takeovers (
    id               bigserial   PRIMARY KEY,
    instance_id      text COLLATE "C" NOT NULL
                     REFERENCES {schema}.instances (instance_id) ON DELETE CASCADE,
    execution_id     text,
    previous_owner   text,
    lease_expired_at timestamptz NOT NULL,
    taken_at         timestamptz NOT NULL,
    taken_by         text
);

CREATE INDEX lease_takeovers_by_instance ON {schema}.lease_takeovers (instance_id, id);

-- executions: one compact record per execution whose history was dropped when the instance
-- started afresh (continue-as-new, or a finished instance started again); generation counts
-- them from 1. Inputs and outputs are kept only as their first characters.
CREATE TABLE {schema}.executions (
    instance_id  text COLLATE "C" NOT NULL
                 REFERENCES {schema}.instances (instance_id) ON DELETE CASCADE,
    generation   integer     NOT NULL,
    execution_id text,
    name         text        NOT NULL,
    version      text,
    started_at   timestamptz NOT NULL,
    ended_at     timestamptz NOT NULL,
    status       text        NOT NULL,
    input        text,
    output       text,
    PRIMARY KEY (instance_id, generation)
);

-- query_instances sorted by last update pages by (last_updated_at, instance_id).
CREATE INDEX instances_by_last_updated_at ON {schema}.instances (last_updated_at, instance_id);
