"""The SQL the PostgreSQL store runs, as named templates (the schema is in ``migrations/``).

``{schema}`` stands for the task hub's schema; :class:`duratask.backends.postgres._database.
Database` fills it in with ``psycopg.sql.Identifier``, never by string formatting. Every
value is a bound parameter (``%(name)s`` or ``%s``). Times are timestamptz, always the
store's clock passed in as ``%(now)s`` (never SQL ``now()``), so every process and every
store kind agrees on what is visible and which lease is live.

A message is visible when ``visible_at`` is NULL or has passed; a lease is live while
``lock_expires_at >= now``. Workers lock instance rows ``FOR NO KEY UPDATE``, which does not
conflict with the ``FOR KEY SHARE`` lock an enqueue takes (explicitly, or through the
foreign key), so clients never wait for a worker to finish an episode.
"""

from __future__ import annotations

from duratask.backends._sql import BACKLOG_TOTALS, INSTANCE_COLUMNS, WORKER_COLUMNS, WORKER_REFRESH

# -- schema bookkeeping ---------------------------------------------------------------------
# Serialises migrations and deletion of one hub across processes (key: see Database).
ADVISORY_XACT_LOCK = "SELECT pg_advisory_xact_lock(%(key)s)"
CREATE_SCHEMA = "CREATE SCHEMA IF NOT EXISTS {schema}"
# Plain statements: the schema name is a parameter here, not part of the template.
SCHEMA_EXISTS = "SELECT 1 FROM pg_namespace WHERE nspname = %(schema)s"
# Every object of the schema as (kind, name): relations (but the sequences that columns
# own, which go with their tables), functions and types.
LIST_OBJECTS = """
SELECT CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'v' THEN 'view'
            WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table'
            WHEN 'c' THEN 'type' ELSE 'sequence' END AS kind,
       c.relname AS name
FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c', 'S')
  AND NOT (c.relkind = 'S' AND EXISTS (
      SELECT 1 FROM pg_depend AS d
      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
        AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
UNION ALL
SELECT 'function', p.proname FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
WHERE n.nspname = %(schema)s
UNION ALL
SELECT 'type', t.typname FROM pg_type AS t JOIN pg_namespace AS n ON n.oid = t.typnamespace
WHERE n.nspname = %(schema)s AND t.typtype IN ('d', 'e', 'r')"""
# The signatures of the schema's functions of these names (to drop them).
LIST_FUNCTIONS = """
SELECT p.oid::regprocedure::text AS signature
FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
WHERE n.nspname = %(schema)s AND p.proname = ANY(%(names)s)"""
SELECT_MARKER = "SELECT owns_schema FROM {schema}.duratask_hub"
MARK_SCHEMA_NOT_OWNED = "UPDATE {schema}.duratask_hub SET owns_schema = false"
DROP_EMPTY_SCHEMA = "DROP SCHEMA {schema} RESTRICT"
CREATE_SCHEMA_VERSION = """
CREATE TABLE IF NOT EXISTS {schema}.schema_version (
    version    integer     PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
SELECT_SCHEMA_VERSION = "SELECT COALESCE(MAX(version), 0) AS version FROM {schema}.schema_version"
INSERT_SCHEMA_VERSION = "INSERT INTO {schema}.schema_version (version) VALUES (%(version)s)"
# Wake-ups: delivered to listeners when the transaction commits.
NOTIFY = "SELECT pg_notify(%(channel)s, %(payload)s)"

# -- instances ------------------------------------------------------------------------------
SELECT_INSTANCE = f"SELECT {INSTANCE_COLUMNS} FROM {{schema}}.instances WHERE instance_id = %s"
INSERT_INSTANCE_IF_ABSENT = f"""
INSERT INTO {{schema}}.instances ({INSTANCE_COLUMNS})
VALUES (%(instance_id)s, %(name)s, %(version)s, %(runtime_status)s, %(created_at)s,
        %(last_updated_at)s, %(completed_at)s, %(execution_id)s, %(input)s, %(output)s,
        %(custom_status)s, %(failure_details)s, %(parent_instance_id)s,
        %(scheduled_start_at)s, %(task_queue)s)
ON CONFLICT (instance_id) DO NOTHING
RETURNING instance_id"""

# -- orchestration leases ---------------------------------------------------------------------
RENEW_INSTANCE_LEASE = """
UPDATE {schema}.instances SET lock_expires_at = %(expires_at)s
WHERE instance_id = %(instance_id)s AND lock_token = %(token)s"""
RELEASE_INSTANCE_LEASE = """
UPDATE {schema}.instances SET lock_token = NULL, lock_owner = NULL, lock_expires_at = NULL
WHERE instance_id = %(instance_id)s AND lock_token = %(token)s"""

# The digest of the store logic (logic.sql) installed in the schema.
SELECT_LOGIC_DIGEST = "SELECT digest FROM {schema}.logic"
RECORD_LOGIC_DIGEST = """
INSERT INTO {schema}.logic (singleton, digest, applied_at) VALUES (true, %(digest)s, now())
ON CONFLICT (singleton) DO UPDATE SET digest = EXCLUDED.digest, applied_at = EXCLUDED.applied_at"""

# An episode's commit, fence and writes, in one call (logic.sql defines the function).
COMMIT_EPISODE = """
SELECT outcome, leased_ids, leased_tokens FROM {schema}.commit_episode(%s::jsonb)"""
# Several episodes' commits in one call and one transaction, each applied or refused on its
# own; a row per commit, in order.
COMMIT_EPISODES = """
SELECT outcome, leased_ids, leased_tokens FROM {schema}.commit_episodes(%s::jsonb)"""

# The free instance whose oldest visible message has waited longest, leased with its
# visible messages in one call (logic.sql defines the function).
LEASE_NEXT_INSTANCE = "SELECT * FROM {schema}.lease_next_instance(%s::jsonb)"
# An instance and its start message, replacing a replaceable one (logic.sql); the
# second parameter says whether this call may have been made before.
CREATE_INSTANCE = """
SELECT outcome, existing_status, leased_message_id
FROM {schema}.create_instance(%s::jsonb || jsonb_build_object('retry', %s::boolean))"""
# Several creates in one call and one transaction, each as CREATE_INSTANCE makes it.
CREATE_INSTANCES = """
SELECT outcome, existing_status, leased_message_id
FROM {schema}.create_instances(%s::jsonb, %s::boolean)"""

# -- history -----------------------------------------------------------------------------------
SELECT_HISTORY = """
SELECT event FROM {schema}.history WHERE instance_id = %s ORDER BY sequence_number"""

# -- messages ----------------------------------------------------------------------------------
# A message's status change (see duratask.backends.base.StatusChange).
CHANGE_STATUS = """
UPDATE {schema}.instances SET runtime_status = %(status_becomes)s, last_updated_at = %(now)s
WHERE instance_id = %(instance_id)s AND runtime_status = %(status_when)s"""
# Enqueue to an existing instance only; the KEY SHARE lock keeps a concurrent purge from
# deleting the row between the check and the insert. No row returned: the message is dropped.
INSERT_MESSAGE = """
INSERT INTO {schema}.messages
    (instance_id, execution_id, event_type, event, enqueued_at, visible_at, due_at)
SELECT i.instance_id, %(execution_id)s, %(event_type)s, %(event)s, %(now)s, %(visible_at)s,
       COALESCE(%(visible_at)s, %(now)s)
FROM {schema}.instances AS i
WHERE i.instance_id = %(instance_id)s
FOR KEY SHARE OF i"""
# Abandon with a retry time: the instance rests (unleased, yet not free) until then, so no
# message of it is delivered before those that were abandoned.
REST_INSTANCE = """
UPDATE {schema}.instances
SET lock_token = NULL, lock_owner = NULL, lock_expires_at = %(retry_at)s
WHERE instance_id = %(instance_id)s AND lock_token = %(token)s"""
# Wakes workers when a lease is released while the instance has visible messages (those
# that arrived during the lease found it leased when their own wake-up came).
NOTIFY_IF_VISIBLE = """
SELECT pg_notify(%(channel)s, %(payload)s)
WHERE EXISTS (
    SELECT 1 FROM {schema}.messages
    WHERE instance_id = %(instance_id)s AND (visible_at IS NULL OR visible_at <= %(now)s)
)"""

# -- activities --------------------------------------------------------------------------------
# The oldest visible activities without a live lease, leased in one statement; activities
# other workers are locking right now are skipped (and, with %(names)s, activities not
# named there: what the worker can run; with %(queues)s, those on other task queues). One
# delivered before and never finished (its worker may have died running it) is leased
# alone, never in a batch: should it kill its worker again, no other activity is charged
# with a delivery for it. A lease moves ``visible_at`` to its expiry, so the index skips
# leased rows; the lock test keeps a lease live through its expiry instant, as everywhere.
LOCK_NEXT_ACTIVITIES = """
UPDATE {schema}.activities
SET lock_token = %(token)s, lock_owner = %(owner)s, lock_expires_at = %(expires_at)s,
    visible_at = %(expires_at)s, dequeue_count = dequeue_count + 1
WHERE id IN (
    WITH free AS (
        SELECT id, dequeue_count, row_number() OVER (ORDER BY visible_at, id) AS n
        FROM (
            SELECT id, visible_at, dequeue_count FROM {schema}.activities
            WHERE visible_at <= %(now)s
              AND (lock_expires_at IS NULL OR lock_expires_at < %(now)s)
              AND (%(names)s::text[] IS NULL OR name = ANY (%(names)s::text[]))
              AND (%(queues)s::text[] IS NULL OR task_queue = ANY (%(queues)s::text[]))
            ORDER BY visible_at, id
            LIMIT %(max_items)s
            FOR NO KEY UPDATE SKIP LOCKED
        ) AS candidates
    )
    SELECT id FROM free
    WHERE n = 1
       OR NOT EXISTS (SELECT 1 FROM free AS f WHERE f.dequeue_count > 0 AND f.n <= free.n)
)
RETURNING id, instance_id, execution_id, task_id, name, version, input, dequeue_count,
          attempt, timeout, heartbeat_timeout, heartbeat_details, task_queue"""
RECORD_HEARTBEAT = """
UPDATE {schema}.activities
SET heartbeat_details = %(details)s, heartbeat_at = %(now)s, lock_expires_at = %(expires_at)s,
    visible_at = %(expires_at)s
WHERE id = %(id)s AND lock_token = %(token)s"""
RENEW_ACTIVITY_LEASE = """
UPDATE {schema}.activities SET lock_expires_at = %(expires_at)s, visible_at = %(expires_at)s
WHERE id = %(id)s AND lock_token = %(token)s"""
DELETE_LEASED_ACTIVITY = "DELETE FROM {schema}.activities WHERE id = %s AND lock_token = %s"
# Handed back unrun: the delivery does not count.
RELEASE_ACTIVITY_LEASE = """
UPDATE {schema}.activities
SET lock_token = NULL, lock_owner = NULL, lock_expires_at = NULL, visible_at = %(visible_at)s,
    dequeue_count = greatest(dequeue_count - 1, 0)
WHERE id = %(id)s AND lock_token = %(token)s"""

# -- workers and their leases ----------------------------------------------------------------
UPSERT_WORKER = f"""
INSERT INTO {{schema}}.workers ({WORKER_COLUMNS})
VALUES (%(worker_id)s, %(host)s, %(pid)s, %(started_at)s, %(heartbeat_at)s,
        %(registrations)s::jsonb, %(status)s::jsonb)
{WORKER_REFRESH}"""
DELETE_WORKER = "DELETE FROM {schema}.workers WHERE worker_id = %s"
SELECT_WORKERS = f"""
SELECT {WORKER_COLUMNS} FROM {{schema}}.workers ORDER BY heartbeat_at DESC"""
LEASE_HOLDERS = """
SELECT lock_owner AS owner, count(*) AS items, max(lock_expires_at) AS expires_at
FROM (SELECT lock_owner, lock_expires_at FROM {schema}.instances
      WHERE lock_token IS NOT NULL AND lock_expires_at >= %(now)s
      UNION ALL
      SELECT lock_owner, lock_expires_at FROM {schema}.activities
      WHERE lock_token IS NOT NULL AND lock_expires_at >= %(now)s
      UNION ALL
      SELECT lock_owner, lock_expires_at FROM {schema}.entities
      WHERE lock_token IS NOT NULL AND lock_expires_at >= %(now)s) AS leases
GROUP BY lock_owner ORDER BY lock_owner"""
# -- lease takeovers (see duratask.backends.base.LeaseTakeover) ----------------------------------
RECORD_BROKEN_LEASES = """
INSERT INTO {schema}.lease_takeovers
    (instance_id, execution_id, previous_owner, lease_expired_at, taken_at, taken_by)
SELECT instance_id, execution_id, lock_owner, LEAST(lock_expires_at, %(now)s), %(now)s, NULL
FROM {schema}.instances WHERE lock_owner = %(owner)s AND lock_token IS NOT NULL"""
SELECT_TAKEOVERS = """
SELECT instance_id, execution_id, previous_owner, lease_expired_at, taken_at, taken_by
FROM {schema}.lease_takeovers WHERE instance_id = %s ORDER BY id"""

SELECT_EXECUTIONS = """
SELECT instance_id, generation, execution_id, name, version, started_at, ended_at, status, input,
       output
FROM {schema}.executions WHERE instance_id = %s ORDER BY generation"""

BREAK_INSTANCE_LEASES = """
UPDATE {schema}.instances SET lock_token = NULL, lock_owner = NULL, lock_expires_at = NULL
WHERE lock_owner = %(owner)s AND lock_token IS NOT NULL"""
BREAK_ENTITY_LEASES = """
UPDATE {schema}.entities SET lock_token = NULL, lock_owner = NULL, lock_expires_at = NULL
WHERE lock_owner = %(owner)s AND lock_token IS NOT NULL"""
BREAK_ACTIVITY_LEASES = """
UPDATE {schema}.activities
SET lock_token = NULL, lock_owner = NULL, lock_expires_at = NULL, visible_at = %(now)s
WHERE lock_owner = %(owner)s AND lock_token IS NOT NULL"""

# The work waiting, by kind and name: per instance (its earliest due message) and per
# activity, whether a worker holds it, could take it now, or must wait (due later, resting).
BACKLOG = f"""
WITH per_instance AS (
    SELECT i.name, i.lock_token, i.lock_expires_at, min(m.due_at) AS due
    FROM {{schema}}.messages m JOIN {{schema}}.instances i ON i.instance_id = m.instance_id
    GROUP BY m.instance_id, i.name, i.lock_token, i.lock_expires_at
), items AS (
    SELECT 'orchestration' AS kind, name, lock_token, lock_expires_at, due FROM per_instance
    UNION ALL
    SELECT 'activity', name, lock_token, lock_expires_at, visible_at FROM {{schema}}.activities
), flags AS (
    SELECT kind, name, lock_token IS NOT NULL AS has_token, due <= %(now)s AS due_now,
        coalesce(lock_expires_at, '-infinity') >= %(now)s AS held
    FROM items
)
{BACKLOG_TOTALS}"""

# -- schedules ---------------------------------------------------------------------------------
INSERT_SCHEDULE = """
INSERT INTO {schema}.schedules (schedule_id, definition, state, next_due_at,
    claimed_by, revision, created_at, updated_at)
VALUES (%(schedule_id)s, %(definition)s, %(state)s, %(next_due_at)s,
        %(claimed_by)s, %(revision)s, %(created_at)s, %(updated_at)s)
ON CONFLICT (schedule_id) DO NOTHING"""
SELECT_SCHEDULE = """
SELECT schedule_id, definition, state, next_due_at, claimed_by, revision, created_at,
    updated_at
FROM {schema}.schedules WHERE schedule_id = %(schedule_id)s"""
SELECT_SCHEDULES = """
SELECT schedule_id, definition, state, next_due_at, claimed_by, revision, created_at,
    updated_at
FROM {schema}.schedules
WHERE substr(schedule_id, 1, %(prefix_length)s) = %(prefix)s ORDER BY schedule_id"""
UPDATE_SCHEDULE = """
UPDATE {schema}.schedules
SET definition = %(definition)s, state = %(state)s, next_due_at = %(next_due_at)s,
    claimed_by = %(claimed_by)s, revision = revision + 1, updated_at = %(updated_at)s
WHERE schedule_id = %(schedule_id)s AND revision = %(revision)s"""
DELETE_SCHEDULE = "DELETE FROM {schema}.schedules WHERE schedule_id = %(schedule_id)s"
DUE_SCHEDULES = """
SELECT schedule_id, definition, state, next_due_at, claimed_by, revision, created_at,
    updated_at
FROM {schema}.schedules
WHERE next_due_at <= %(now)s ORDER BY next_due_at, schedule_id LIMIT %(limit)s"""
NEXT_SCHEDULE_DUE_AT = """
SELECT min(next_due_at) AS due FROM {schema}.schedules WHERE next_due_at IS NOT NULL"""
