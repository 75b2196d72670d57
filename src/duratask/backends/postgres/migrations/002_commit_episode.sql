-- duratask task hub on PostgreSQL, schema version 2: an episode's commit as one function.
--
-- An episode's commit used to be a dozen statements in three round trips. Each statement
-- costs the worker more CPU in the driver than the server spends running it, so the whole
-- commit is one call: the fence, then every write, in the one transaction of the call.
-- No braces in this file but the schema's: the script is a psycopg.sql template.
--
-- The fence, checked before anything is written (a refused commit writes nothing):
--   * p_lock_token given: the instance carries that lease and its history is still
--     p_history_length long; else 'lease_lost' or 'history_changed'.
--   * p_lock_token NULL (an episode run on an activity's result, committed with it): the
--     instance is unleased and not being leased, of p_execution_id, p_history_length long,
--     with no visible message; else 'busy'. Then the activity p_activity_id must still carry
--     p_activity_token; it is deleted, else 'activity_lost'.
-- Then: history appended (or replaced), consumed messages deleted, activities inserted (the
-- first cardinality(p_lease_tokens) of them leased to p_owner), outbound messages sent,
-- the instance row written from p_state (NULL: only the lease released), and the wake-ups
-- queued. Returns 'committed' with the ids and lock tokens of the leased activities.

CREATE FUNCTION {schema}.commit_episode(
    p_instance_id      text,
    p_now              timestamptz,
    p_lock_token       text,
    p_execution_id     text,
    p_history_length   integer,
    p_activity_id      bigint,
    p_activity_token   text,
    p_reset_history    boolean,
    p_event_types      text[],
    p_events           text[],
    p_consumed         bigint[],
    p_act_instance_ids  text[],
    p_act_execution_ids text[],
    p_act_task_ids      bigint[],
    p_act_names         text[],
    p_act_versions      text[],
    p_act_inputs        text[],
    p_lease_tokens     text[],
    p_owner            text,
    p_lease_expires_at timestamptz,
    p_messages         jsonb,
    p_state            jsonb,
    p_channel          text,
    p_notify           text[],
    p_notify_if_visible text,
    OUT outcome        text,
    OUT leased_ids     bigint[],
    OUT leased_tokens  text[]
) LANGUAGE plpgsql AS $$
DECLARE
    v_token  text;
    v_ready  boolean;
    v_length integer;
    v_first  integer;
    m        record;
BEGIN
    IF p_lock_token IS NOT NULL THEN
        SELECT i.lock_token,
               (SELECT COALESCE(MAX(h.sequence_number) + 1, 0) FROM {schema}.history AS h
                WHERE h.instance_id = i.instance_id)
        INTO v_token, v_length
        FROM {schema}.instances AS i
        WHERE i.instance_id = p_instance_id
        FOR NO KEY UPDATE OF i;
        IF NOT FOUND OR v_token IS DISTINCT FROM p_lock_token THEN
            outcome := 'lease_lost';
            RETURN;
        END IF;
        IF v_length <> p_history_length THEN
            outcome := 'history_changed';
            RETURN;
        END IF;
    ELSE
        SELECT (i.lock_expires_at IS NULL OR i.lock_expires_at < p_now)
               AND i.execution_id = p_execution_id
               AND NOT EXISTS (
                   SELECT 1 FROM {schema}.messages AS ms
                   WHERE ms.instance_id = i.instance_id
                     AND (ms.visible_at IS NULL OR ms.visible_at <= p_now)),
               (SELECT COALESCE(MAX(h.sequence_number) + 1, 0) FROM {schema}.history AS h
                WHERE h.instance_id = i.instance_id)
        INTO v_ready, v_length
        FROM {schema}.instances AS i
        WHERE i.instance_id = p_instance_id
        FOR NO KEY UPDATE OF i SKIP LOCKED;
        IF NOT FOUND OR NOT v_ready OR v_length <> p_history_length THEN
            outcome := 'busy';
            RETURN;
        END IF;
    END IF;

    IF p_activity_id IS NOT NULL THEN
        DELETE FROM {schema}.activities
        WHERE id = p_activity_id AND lock_token = p_activity_token;
        IF NOT FOUND THEN
            outcome := 'activity_lost';
            RETURN;
        END IF;
    END IF;

    v_first := p_history_length;
    IF p_reset_history THEN
        DELETE FROM {schema}.history WHERE instance_id = p_instance_id;
        v_first := 0;
    END IF;
    INSERT INTO {schema}.history (instance_id, sequence_number, event_type, event)
    SELECT p_instance_id, v_first + (e.n - 1)::integer, e.event_type, e.event
    FROM unnest(p_event_types, p_events) WITH ORDINALITY AS e(event_type, event, n);

    IF cardinality(p_consumed) > 0 THEN
        DELETE FROM {schema}.messages
        WHERE instance_id = p_instance_id AND message_id = ANY(p_consumed);
    END IF;

    WITH inserted AS (
        INSERT INTO {schema}.activities
            (instance_id, execution_id, task_id, name, version, input, enqueued_at,
             visible_at, lock_token, lock_owner, lock_expires_at, dequeue_count)
        SELECT a.instance_id, a.execution_id, a.task_id, a.name, a.version, a.input, p_now,
               CASE WHEN a.n <= cardinality(p_lease_tokens) THEN p_lease_expires_at
                    ELSE p_now END,
               p_lease_tokens[a.n],
               CASE WHEN a.n <= cardinality(p_lease_tokens) THEN p_owner END,
               CASE WHEN a.n <= cardinality(p_lease_tokens) THEN p_lease_expires_at END,
               CASE WHEN a.n <= cardinality(p_lease_tokens) THEN 1 ELSE 0 END
        FROM unnest(p_act_instance_ids, p_act_execution_ids, p_act_task_ids, p_act_names,
                    p_act_versions, p_act_inputs) WITH ORDINALITY
             AS a(instance_id, execution_id, task_id, name, version, input, n)
        RETURNING id, lock_token
    )
    SELECT array_agg(id), array_agg(lock_token)
    INTO leased_ids, leased_tokens
    FROM inserted WHERE lock_token IS NOT NULL;

    FOR m IN
        SELECT * FROM jsonb_to_recordset(p_messages)
            AS x(instance_id text, execution_id text, event_type text, event text,
                 visible_at timestamptz, starts jsonb, rewinds boolean)
    LOOP
        IF m.starts IS NOT NULL THEN
            INSERT INTO {schema}.instances
                (instance_id, name, version, runtime_status, created_at, last_updated_at,
                 completed_at, execution_id, input, output, custom_status, failure_details,
                 parent_instance_id, scheduled_start_at)
            SELECT s.instance_id, s.name, s.version, s.runtime_status, s.created_at,
                   s.last_updated_at, s.completed_at, s.execution_id, s.input, s.output,
                   s.custom_status, s.failure_details, s.parent_instance_id,
                   s.scheduled_start_at
            FROM jsonb_populate_record(NULL::{schema}.instances, m.starts) AS s
            ON CONFLICT (instance_id) DO NOTHING;
        END IF;
        INSERT INTO {schema}.messages
            (instance_id, execution_id, event_type, event, enqueued_at, visible_at, due_at)
        SELECT i.instance_id, m.execution_id, m.event_type, m.event, p_now, m.visible_at,
               COALESCE(m.visible_at, p_now)
        FROM {schema}.instances AS i
        WHERE i.instance_id = m.instance_id
        FOR KEY SHARE OF i;
        IF FOUND AND m.rewinds THEN
            UPDATE {schema}.instances SET runtime_status = 'PENDING', last_updated_at = p_now
            WHERE instance_id = m.instance_id AND runtime_status = 'FAILED';
        END IF;
    END LOOP;

    IF p_state IS NOT NULL THEN
        UPDATE {schema}.instances AS i
        SET name = s.name, version = s.version, runtime_status = s.runtime_status,
            created_at = s.created_at, last_updated_at = s.last_updated_at,
            completed_at = s.completed_at, execution_id = s.execution_id, input = s.input,
            output = s.output, custom_status = s.custom_status,
            failure_details = s.failure_details, parent_instance_id = s.parent_instance_id,
            scheduled_start_at = s.scheduled_start_at,
            lock_token = NULL, lock_owner = NULL, lock_expires_at = NULL
        FROM jsonb_populate_record(NULL::{schema}.instances, p_state) AS s
        WHERE i.instance_id = p_instance_id;
    ELSIF p_lock_token IS NOT NULL THEN
        UPDATE {schema}.instances
        SET lock_token = NULL, lock_owner = NULL, lock_expires_at = NULL
        WHERE instance_id = p_instance_id AND lock_token = p_lock_token;
    END IF;

    PERFORM pg_notify(p_channel, k) FROM unnest(p_notify) AS k;
    IF p_notify_if_visible IS NOT NULL AND EXISTS (
        SELECT 1 FROM {schema}.messages
        WHERE instance_id = p_instance_id AND (visible_at IS NULL OR visible_at <= p_now)
    ) THEN
        PERFORM pg_notify(p_channel, p_notify_if_visible);
    END IF;
    outcome := 'committed';
END
$$;
