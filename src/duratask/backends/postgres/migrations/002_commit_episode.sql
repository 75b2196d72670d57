-- duratask task hub on PostgreSQL, schema version 2: an episode's commit as one function.
--
-- An episode's commit used to be a dozen statements in three round trips. Each statement
-- costs the worker more CPU in the driver than the server spends running it, so the whole
-- commit is one call: the fence, then every write, in the one transaction of the call.
-- No braces in this file but the schema's: the script is a psycopg.sql template.
--
-- The commit comes as one jsonb document, p (see duratask.backends.postgres.store, class
-- _EpisodeWrite): the driver turns one text parameter into bytes far faster than a dozen
-- arrays. Below, p_x stands for p's member x.
--
-- The fence, checked before anything is written (a refused commit writes nothing):
--   * p_lock_token given: the instance carries that lease and its history is still
--     p_history_length long; else 'lease_lost' or 'history_changed'.
--   * p_lock_token NULL (an episode run on an activity's result, committed with it): the
--     instance is unleased and not being leased, of p_execution_id, p_history_length long,
--     with no visible message; else 'busy'. Then the activity p_activity_id must still carry
--     p_activity_token; it is deleted, else 'activity_lost'.
-- Then: history appended (or replaced), consumed messages deleted, activities inserted (those
-- with a lease token leased to p_owner until p_lease_expires_at), outbound messages sent,
-- the instance row written from p_state (NULL: only the lease released), and the wake-ups
-- queued. Returns 'committed' with the ids and lock tokens of the leased activities.

CREATE FUNCTION {schema}.commit_episode(
    p             jsonb,
    OUT outcome   text,
    OUT leased_ids bigint[],
    OUT leased_tokens text[]
) LANGUAGE plpgsql AS $$
DECLARE
    p_instance_id    text        := p->>'instance_id';
    p_now            timestamptz := (p->>'now')::timestamptz;
    p_lock_token     text        := p->>'lock_token';
    p_history_length integer     := (p->>'history_length')::integer;
    p_activity_id    bigint      := (p->>'activity_id')::bigint;
    p_expires_at     timestamptz := (p->>'lease_expires_at')::timestamptz;
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
               AND i.execution_id = p->>'execution_id'
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
        WHERE id = p_activity_id AND lock_token = p->>'activity_token';
        IF NOT FOUND THEN
            outcome := 'activity_lost';
            RETURN;
        END IF;
    END IF;

    v_first := p_history_length;
    IF (p->>'reset_history')::boolean THEN
        DELETE FROM {schema}.history WHERE instance_id = p_instance_id;
        v_first := 0;
    END IF;
    INSERT INTO {schema}.history (instance_id, sequence_number, event_type, event)
    SELECT p_instance_id, v_first + (e.n - 1)::integer, e.event->>0, e.event->>1
    FROM jsonb_array_elements(p->'events') WITH ORDINALITY AS e(event, n);

    IF jsonb_array_length(p->'consumed') > 0 THEN
        DELETE FROM {schema}.messages
        WHERE instance_id = p_instance_id
          AND message_id IN (SELECT jsonb_array_elements_text(p->'consumed')::bigint);
    END IF;

    WITH inserted AS (
        INSERT INTO {schema}.activities
            (instance_id, execution_id, task_id, name, version, input, enqueued_at,
             visible_at, lock_token, lock_owner, lock_expires_at, dequeue_count)
        SELECT a.instance_id, a.execution_id, a.task_id, a.name, a.version, a.input, p_now,
               CASE WHEN a.token IS NULL THEN p_now ELSE p_expires_at END,
               a.token,
               CASE WHEN a.token IS NOT NULL THEN p->>'owner' END,
               CASE WHEN a.token IS NOT NULL THEN p_expires_at END,
               CASE WHEN a.token IS NULL THEN 0 ELSE 1 END
        FROM jsonb_to_recordset(p->'activities')
             AS a(instance_id text, execution_id text, task_id bigint, name text,
                  version text, input text, token text)
        RETURNING id, lock_token
    )
    SELECT array_agg(id), array_agg(lock_token)
    INTO leased_ids, leased_tokens
    FROM inserted WHERE lock_token IS NOT NULL;

    FOR m IN
        SELECT * FROM jsonb_to_recordset(p->'messages')
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

    IF jsonb_typeof(p->'state') = 'object' THEN
        UPDATE {schema}.instances AS i
        SET name = s.name, version = s.version, runtime_status = s.runtime_status,
            created_at = s.created_at, last_updated_at = s.last_updated_at,
            completed_at = s.completed_at, execution_id = s.execution_id, input = s.input,
            output = s.output, custom_status = s.custom_status,
            failure_details = s.failure_details, parent_instance_id = s.parent_instance_id,
            scheduled_start_at = s.scheduled_start_at,
            lock_token = NULL, lock_owner = NULL, lock_expires_at = NULL
        FROM jsonb_populate_record(NULL::{schema}.instances, p->'state') AS s
        WHERE i.instance_id = p_instance_id;
    ELSIF p_lock_token IS NOT NULL THEN
        UPDATE {schema}.instances
        SET lock_token = NULL, lock_owner = NULL, lock_expires_at = NULL
        WHERE instance_id = p_instance_id AND lock_token = p_lock_token;
    END IF;

    PERFORM pg_notify(p->>'channel', k) FROM jsonb_array_elements_text(p->'notify') AS k;
    IF p->>'notify_if_visible' IS NOT NULL AND EXISTS (
        SELECT 1 FROM {schema}.messages
        WHERE instance_id = p_instance_id AND (visible_at IS NULL OR visible_at <= p_now)
    ) THEN
        PERFORM pg_notify(p->>'channel', p->>'notify_if_visible');
    END IF;
    outcome := 'committed';
END
$$;
