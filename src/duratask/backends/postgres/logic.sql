-- duratask task hub on PostgreSQL: the store's logic, kept apart from its schema.
--
-- Creating an instance, leasing the next one and committing an episode are each one call of
-- a function below (one autocommit statement, one transaction). Each statement costs the
-- worker more CPU in the driver than the server spends running it, so each operation is one
-- call, given one jsonb document p: the driver turns one text parameter into bytes far
-- faster than a dozen arrays. Below, p_x stands for p's member x.
--
-- The migrations (migrations/NNN_*.sql) hold tables and indexes; this file is applied when a
-- store opens the hub and finds another version of it installed (its digest is kept in
-- {schema}.logic), in the migration transaction: each function is dropped and created
-- again, so that a changed signature cannot stop it. {schema} is replaced by the quoted
-- schema name; no other braces may appear in this file (it is a psycopg.sql template).

DROP FUNCTION IF EXISTS {schema}.create_instances(jsonb, boolean);
DROP FUNCTION IF EXISTS {schema}.create_instance(jsonb);
DROP FUNCTION IF EXISTS {schema}.lease_next_instance(jsonb);
DROP FUNCTION IF EXISTS {schema}.commit_episodes(jsonb);
DROP FUNCTION IF EXISTS {schema}.commit_episode(jsonb);
DROP FUNCTION IF EXISTS {schema}.insert_instance_if_absent(jsonb);

-- insert_instance_if_absent: the instance row given as jsonb (its lease columns left NULL),
-- unless an instance with its id exists; true if inserted.
CREATE FUNCTION {schema}.insert_instance_if_absent(p_row jsonb) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {schema}.instances
        (instance_id, name, version, runtime_status, created_at, last_updated_at,
         completed_at, execution_id, input, output, custom_status, failure_details,
         parent_instance_id, scheduled_start_at, task_queue)
    SELECT s.instance_id, s.name, s.version, s.runtime_status, s.created_at,
           s.last_updated_at, s.completed_at, s.execution_id, s.input, s.output,
           s.custom_status, s.failure_details, s.parent_instance_id, s.scheduled_start_at,
           coalesce(s.task_queue, 'default')
    FROM jsonb_populate_record(NULL::{schema}.instances, p_row) AS s
    ON CONFLICT (instance_id) DO NOTHING;
    RETURN FOUND;
END
$$;

-- commit_episode: see duratask.backends.postgres._store, class _EpisodeWrite.
--
-- The fence, checked before anything is written (a refused commit writes nothing):
--   * p_lock_token given: the instance carries that lease and its history is still
--     p_history_length long; else 'lease_lost' or 'history_changed'.
--   * p_lock_token NULL (an episode run on a worker's own copy of the instance): the
--     instance is unleased and not being leased, of p_execution_id, p_history_length long,
--     with no visible message; else 'busy'.
-- Then the activity p_activity_id, if given, must still carry p_activity_token; it is
-- deleted, else 'activity_lost'.
-- Then: history appended (or replaced), consumed messages deleted, activities inserted (those
-- with a lease token leased to p_owner until p_lease_expires_at), outbound messages sent
-- (with the status changes they carry), the instance row written from p_state (NULL: only
-- the lease released), and the wake-ups queued (p_notify_if_status_changes when the row's
-- status changed). Returns 'committed' with the ids and lock tokens of the leased
-- activities.

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
    v_status text;
    v_generation integer;
    m        record;
BEGIN
    IF p_lock_token IS NOT NULL THEN
        SELECT i.lock_token, i.runtime_status,
               (SELECT COALESCE(MAX(h.sequence_number) + 1, 0) FROM {schema}.history AS h
                WHERE h.instance_id = i.instance_id)
        INTO v_token, v_status, v_length
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
               i.runtime_status,
               (SELECT COALESCE(MAX(h.sequence_number) + 1, 0) FROM {schema}.history AS h
                WHERE h.instance_id = i.instance_id)
        INTO v_ready, v_status, v_length
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

    -- A reset of a non-empty history ends an execution: keep its record (the rules of
    -- duratask.backends._shared.ended_execution; 200 is EXECUTION_SUMMARY_LENGTH, 1000
    -- EXECUTIONS_KEPT).
    IF (p->>'reset_history')::boolean AND v_length > 0 THEN
        INSERT INTO {schema}.executions
            (instance_id, generation, execution_id, name, version, started_at, ended_at,
             status, input, output)
        SELECT i.instance_id, COALESCE(x.generation, 0) + 1, i.execution_id, i.name,
               i.version, COALESCE(x.ended_at, i.created_at), p_now,
               CASE WHEN v_continued THEN 'CONTINUED_AS_NEW' ELSE i.runtime_status END,
               left(i.input, 200),
               left(CASE WHEN v_continued THEN p->'ended'->>'handed_on' ELSE i.output END, 200)
        FROM {schema}.instances AS i
        LEFT JOIN LATERAL (
            SELECT e.generation, e.ended_at FROM {schema}.executions AS e
            WHERE e.instance_id = i.instance_id ORDER BY e.generation DESC LIMIT 1
        ) AS x ON true,
        LATERAL (
            SELECT (p->'ended'->>'continued')::boolean
                   OR i.runtime_status NOT IN ('COMPLETED', 'FAILED', 'TERMINATED')
                   AS v_continued
        ) AS c
        WHERE i.instance_id = p_instance_id
        RETURNING generation INTO v_generation;
    END IF;
    -- Then the executions the episode ran back to back, numbered on.
    IF jsonb_array_length(COALESCE(p->'continued', '[]'::jsonb)) > 0 THEN
        SELECT COALESCE(MAX(e.generation), 0) INTO v_generation
        FROM {schema}.executions AS e WHERE e.instance_id = p_instance_id;
        INSERT INTO {schema}.executions
            (instance_id, generation, execution_id, name, version, started_at, ended_at,
             status, input, output)
        SELECT p_instance_id, v_generation + x.n::integer, x.e->>'execution_id',
               x.e->>'name', x.e->>'version', p_now, p_now, 'CONTINUED_AS_NEW',
               left(x.e->>'input', 200), left(x.e->>'output', 200)
        FROM jsonb_array_elements(p->'continued') WITH ORDINALITY AS x(e, n);
        v_generation := v_generation + jsonb_array_length(p->'continued');
    END IF;
    IF v_generation IS NOT NULL THEN
        DELETE FROM {schema}.executions
        WHERE instance_id = p_instance_id AND generation <= v_generation - 1000;
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
             visible_at, lock_token, lock_owner, lock_expires_at, dequeue_count, attempt,
             timeout, heartbeat_timeout, heartbeat_details, task_queue)
        SELECT a.instance_id, a.execution_id, a.task_id, a.name, a.version, a.input, p_now,
               CASE WHEN a.token IS NULL THEN p_now ELSE p_expires_at END,
               a.token,
               CASE WHEN a.token IS NOT NULL THEN p->>'owner' END,
               CASE WHEN a.token IS NOT NULL THEN p_expires_at END,
               CASE WHEN a.token IS NULL THEN 0 ELSE 1 END,
               coalesce(a.attempt, 1), a.timeout, a.heartbeat_timeout, a.heartbeat_details,
               coalesce(a.task_queue, 'default')
        FROM jsonb_to_recordset(p->'activities')
             AS a(instance_id text, execution_id text, task_id bigint, name text,
                  version text, input text, token text, attempt integer, timeout interval,
                  heartbeat_timeout interval, heartbeat_details text, task_queue text)
        RETURNING id, lock_token
    )
    SELECT array_agg(id), array_agg(lock_token)
    INTO leased_ids, leased_tokens
    FROM inserted WHERE lock_token IS NOT NULL;

    FOR m IN
        SELECT * FROM jsonb_to_recordset(p->'messages')
            AS x(instance_id text, execution_id text, event_type text, event text,
                 visible_at timestamptz, starts jsonb, status_when text,
                 status_becomes text)
    LOOP
        IF m.starts IS NOT NULL THEN
            PERFORM {schema}.insert_instance_if_absent(m.starts);
        END IF;
        INSERT INTO {schema}.messages
            (instance_id, execution_id, event_type, event, enqueued_at, visible_at, due_at)
        SELECT i.instance_id, m.execution_id, m.event_type, m.event, p_now, m.visible_at,
               COALESCE(m.visible_at, p_now)
        FROM {schema}.instances AS i
        WHERE i.instance_id = m.instance_id
        FOR KEY SHARE OF i;
        IF FOUND AND m.status_when IS NOT NULL THEN
            UPDATE {schema}.instances
            SET runtime_status = m.status_becomes, last_updated_at = p_now
            WHERE instance_id = m.instance_id AND runtime_status = m.status_when;
        END IF;
    END LOOP;

    -- Messages to entities (signals, calls, lock requests and releases), in order; an
    -- entity's row is created with its first message.
    FOR m IN
        SELECT * FROM jsonb_to_recordset(COALESCE(p->'entity_messages', '[]'::jsonb))
            AS x(entity_id text, name text, source text, body text, visible_at timestamptz)
    LOOP
        INSERT INTO {schema}.entities (entity_id, name, last_modified_at)
        VALUES (m.entity_id, m.name, p_now)
        ON CONFLICT (entity_id) DO NOTHING;
        INSERT INTO {schema}.entity_messages
            (entity_id, source, body, enqueued_at, visible_at, due_at)
        VALUES (m.entity_id, m.source, m.body, p_now, m.visible_at, COALESCE(m.visible_at, p_now));
    END LOOP;

    IF jsonb_typeof(p->'state') = 'object' THEN
        UPDATE {schema}.instances AS i
        SET name = s.name, version = s.version, runtime_status = s.runtime_status,
            created_at = s.created_at, last_updated_at = s.last_updated_at,
            completed_at = s.completed_at, execution_id = s.execution_id, input = s.input,
            output = s.output, custom_status = s.custom_status,
            failure_details = s.failure_details, parent_instance_id = s.parent_instance_id,
            scheduled_start_at = s.scheduled_start_at,
            task_queue = coalesce(s.task_queue, i.task_queue),
            lock_token = NULL, lock_owner = NULL, lock_expires_at = NULL
        FROM jsonb_populate_record(NULL::{schema}.instances, p->'state') AS s
        WHERE i.instance_id = p_instance_id;
    ELSIF p_lock_token IS NOT NULL THEN
        UPDATE {schema}.instances
        SET lock_token = NULL, lock_owner = NULL, lock_expires_at = NULL
        WHERE instance_id = p_instance_id AND lock_token = p_lock_token;
    END IF;

    PERFORM pg_notify(p->>'channel', k) FROM jsonb_array_elements_text(p->'notify') AS k;
    IF jsonb_typeof(p->'state') = 'object'
       AND p->'state'->>'runtime_status' IS DISTINCT FROM v_status THEN
        PERFORM pg_notify(p->>'channel', p->>'notify_if_status_changes');
    END IF;
    IF p->>'notify_if_visible' IS NOT NULL AND EXISTS (
        SELECT 1 FROM {schema}.messages
        WHERE instance_id = p_instance_id AND (visible_at IS NULL OR visible_at <= p_now)
    ) THEN
        PERFORM pg_notify(p->>'channel', p->>'notify_if_visible');
    END IF;
    outcome := 'committed';
END
$$;

-- commit_episodes: the commits of the jsonb array p, in order, each as commit_episode
-- applies or refuses it; one row per commit. A group commit: one transaction for all.
CREATE FUNCTION {schema}.commit_episodes(p jsonb)
RETURNS TABLE (outcome text, leased_ids bigint[], leased_tokens text[])
LANGUAGE plpgsql AS $$
DECLARE
    d jsonb;
BEGIN
    FOR d IN SELECT value FROM jsonb_array_elements(p) LOOP
        RETURN QUERY SELECT c.outcome, c.leased_ids, c.leased_tokens
                     FROM {schema}.commit_episode(d) AS c;
    END LOOP;
END
$$;

-- lease_next_instance: lease to p_owner (token p_token, until p_expires_at) the free
-- instance (of an orchestration named in p_keys, on a task queue named in p_queues, unless
-- those are null) whose oldest visible message has waited longest, and dequeue its visible
-- messages. One row per message, each with the instance's row and history length; no row
-- when there is no work. An instance resting after an abandon is not free until its rest
-- ends, unless a terminate waits for it. Instances another transaction is locking are
-- skipped, never waited for; one whose messages were consumed since it was chosen is
-- passed over. A lease found still on the instance (expired, never released) is recorded
-- in lease_takeovers. The lease's commit does not wait for the WAL flush: a lease dies with
-- its worker anyway, and the next durable commit flushes it too.
CREATE FUNCTION {schema}.lease_next_instance(p jsonb)
RETURNS TABLE (
    instance_id          text,
    name                 text,
    version              text,
    runtime_status       text,
    created_at           timestamptz,
    last_updated_at      timestamptz,
    completed_at         timestamptz,
    execution_id         text,
    input                text,
    output               text,
    custom_status        text,
    failure_details      text,
    parent_instance_id   text,
    scheduled_start_at   timestamptz,
    task_queue           text,
    history_length       integer,
    message_id           bigint,
    message_execution_id text,
    event                text,
    visible_at           timestamptz,
    dequeue_count        integer
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    p_now  timestamptz := (p->>'now')::timestamptz;
    p_keys text[] := CASE WHEN jsonb_typeof(p->'keys') = 'array'
                          THEN ARRAY(SELECT jsonb_array_elements_text(p->'keys')) END;
    p_queues text[] := CASE WHEN jsonb_typeof(p->'queues') = 'array'
                            THEN ARRAY(SELECT jsonb_array_elements_text(p->'queues')) END;
    v_id   text;
    v_prev record;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    FOR attempt IN 1..3 LOOP
        SELECT i.instance_id, i.execution_id, i.lock_token, i.lock_owner, i.lock_expires_at
        INTO v_prev
        FROM {schema}.messages AS m
        JOIN {schema}.instances AS i ON i.instance_id = m.instance_id
        WHERE (m.visible_at IS NULL OR m.due_at <= p_now)
          AND (i.lock_expires_at IS NULL OR i.lock_expires_at < p_now
               -- a terminate ends the rest of an abandoned instance
               OR (i.lock_token IS NULL AND m.event_type = 'EXECUTION_TERMINATED'))
          -- only what the worker can run (see duratask.backends.base.orchestration_key)
          AND (p_keys IS NULL
               OR i.name || chr(31) || coalesce(i.version, chr(30)) = ANY (p_keys))
          AND (p_queues IS NULL OR i.task_queue = ANY (p_queues))
        ORDER BY m.due_at, m.message_id
        LIMIT 1
        FOR NO KEY UPDATE OF i SKIP LOCKED;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        v_id := v_prev.instance_id;
        RETURN QUERY
        WITH dequeued AS (
            UPDATE {schema}.messages AS m SET dequeue_count = m.dequeue_count + 1
            WHERE m.instance_id = v_id AND (m.visible_at IS NULL OR m.visible_at <= p_now)
            RETURNING m.message_id, m.execution_id, m.event, m.visible_at, m.dequeue_count
        ), leased AS (
            UPDATE {schema}.instances AS i
            SET lock_token = p->>'token', lock_owner = p->>'owner',
                lock_expires_at = (p->>'expires_at')::timestamptz
            WHERE i.instance_id = v_id AND EXISTS (SELECT 1 FROM dequeued)
            RETURNING i.instance_id, i.name, i.version, i.runtime_status, i.created_at,
                      i.last_updated_at, i.completed_at, i.execution_id, i.input, i.output,
                      i.custom_status, i.failure_details, i.parent_instance_id,
                      i.scheduled_start_at, i.task_queue
        )
        SELECT l.instance_id, l.name, l.version, l.runtime_status, l.created_at,
               l.last_updated_at, l.completed_at, l.execution_id, l.input, l.output,
               l.custom_status, l.failure_details, l.parent_instance_id, l.scheduled_start_at,
               l.task_queue,
               (SELECT COALESCE(MAX(h.sequence_number) + 1, 0)::integer
                FROM {schema}.history AS h WHERE h.instance_id = v_id),
               d.message_id, d.execution_id, d.event, d.visible_at, d.dequeue_count
        FROM leased AS l CROSS JOIN dequeued AS d
        ORDER BY d.message_id;
        IF FOUND THEN
            -- A lease still on the instance ran out unreleased: its worker is gone.
            IF v_prev.lock_token IS NOT NULL THEN
                INSERT INTO {schema}.lease_takeovers
                    (instance_id, execution_id, previous_owner, lease_expired_at, taken_at,
                     taken_by)
                VALUES (v_id, v_prev.execution_id, v_prev.lock_owner, v_prev.lock_expires_at,
                        p_now, p->>'owner');
            END IF;
            RETURN;
        END IF;
    END LOOP;
END
$$;

-- create_instance: insert the instance row p_row and its start message p_message, and queue
-- the wake-ups p_notify. An instance already there under another execution whose status is
-- one of p_replaceable is replaced (deleting it deletes all it owns); any other is left as
-- it is: 'exists' with its status. On a retry (p_retry), the same execution already there
-- is this call's own earlier attempt, whose COMMIT failed ambiguously yet committed:
-- 'created' (a lease that attempt took is released, and p_notify_unleased queued).
-- With p_lease (token, owner, expires_at), a new instance (not a replaced one) is leased to
-- its owner at once, its start message delivered once: leased_message_id names it.
-- Otherwise the wake-up p_notify_unleased, if given, is queued too.
CREATE FUNCTION {schema}.create_instance(
    p jsonb,
    OUT outcome text,
    OUT existing_status text,
    OUT leased_message_id bigint
) LANGUAGE plpgsql AS $$
DECLARE
    p_instance_id text := p->'row'->>'instance_id';
    p_now         timestamptz := (p->>'now')::timestamptz;
    v_execution   text;
    v_created     boolean := false;
    v_replaced    boolean := false;
    v_leasing     boolean;
BEGIN
    FOR attempt IN 1..2 LOOP
        v_created := {schema}.insert_instance_if_absent(p->'row');
        EXIT WHEN v_created;
        SELECT i.runtime_status, i.execution_id INTO existing_status, v_execution
        FROM {schema}.instances AS i WHERE i.instance_id = p_instance_id
        FOR UPDATE;
        IF FOUND THEN
            IF (p->>'retry')::boolean
               AND v_execution IS NOT DISTINCT FROM p->'row'->>'execution_id' THEN
                UPDATE {schema}.instances
                SET lock_token = NULL, lock_owner = NULL, lock_expires_at = NULL
                WHERE instance_id = p_instance_id AND lock_token = p->'lease'->>'token';
                IF FOUND THEN
                    PERFORM pg_notify(p->>'channel', p->>'notify_unleased');
                END IF;
                outcome := 'created';
                existing_status := NULL;
                RETURN;
            END IF;
            IF attempt > 1 OR NOT (p->'replaceable') ? existing_status THEN
                outcome := 'exists';
                RETURN;
            END IF;
            DELETE FROM {schema}.instances WHERE instance_id = p_instance_id;
            v_replaced := true;
        END IF;
    END LOOP;
    IF NOT v_created THEN  -- another client created it since the look: not ours to replace
        SELECT i.runtime_status INTO existing_status
        FROM {schema}.instances AS i WHERE i.instance_id = p_instance_id;
        outcome := 'exists';
        RETURN;
    END IF;
    existing_status := NULL;
    v_leasing := jsonb_typeof(p->'lease') = 'object' AND NOT v_replaced;
    INSERT INTO {schema}.messages
        (instance_id, execution_id, event_type, event, enqueued_at, visible_at, due_at,
         dequeue_count)
    VALUES (p_instance_id, p->'message'->>'execution_id', p->'message'->>'event_type',
            p->'message'->>'event', p_now, (p->'message'->>'visible_at')::timestamptz,
            COALESCE((p->'message'->>'visible_at')::timestamptz, p_now),
            CASE WHEN v_leasing THEN 1 ELSE 0 END)
    RETURNING message_id INTO leased_message_id;
    IF v_leasing THEN
        UPDATE {schema}.instances
        SET lock_token = p->'lease'->>'token', lock_owner = p->'lease'->>'owner',
            lock_expires_at = (p->'lease'->>'expires_at')::timestamptz
        WHERE instance_id = p_instance_id;
    ELSE
        leased_message_id := NULL;
        IF p->>'notify_unleased' IS NOT NULL THEN
            PERFORM pg_notify(p->>'channel', p->>'notify_unleased');
        END IF;
    END IF;
    PERFORM pg_notify(p->>'channel', k) FROM jsonb_array_elements_text(p->'notify') AS k;
    outcome := 'created';
END
$$;

-- create_instances: the creates of the jsonb array p, in order, each as create_instance
-- makes it (p_retry: whether this call may have been made before); one row per create.
CREATE FUNCTION {schema}.create_instances(p jsonb, p_retry boolean)
RETURNS TABLE (outcome text, existing_status text, leased_message_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    d jsonb;
BEGIN
    FOR d IN SELECT value FROM jsonb_array_elements(p) LOOP
        RETURN QUERY SELECT c.outcome, c.existing_status, c.leased_message_id
                     FROM {schema}.create_instance(d || jsonb_build_object('retry', p_retry))
                          AS c;
    END LOOP;
END
$$;
