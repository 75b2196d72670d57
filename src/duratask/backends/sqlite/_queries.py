"""The SQL the SQLite store runs, as named constants (the schema is in ``migrations/``).

Every value is a bound parameter; times are INTEGER microseconds since the epoch, UTC.
A message is visible at once when ``visible_at`` is NULL, else once ``visible_at`` has passed
(``due_at`` repeats it, or the enqueue time, for an index that orders the due messages).
A lease is live while ``lock_expires_at >= now``.
"""

from __future__ import annotations

from duratask.backends._sql import BACKLOG_TOTALS, INSTANCE_COLUMNS, WORKER_COLUMNS, WORKER_REFRESH

# -- schema bookkeeping ---------------------------------------------------------------------
CREATE_SCHEMA_VERSION = """
CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    applied_at INTEGER NOT NULL
)"""
SELECT_SCHEMA_VERSION = "SELECT COALESCE(MAX(version), 0) FROM schema_version"
INSERT_SCHEMA_VERSION = "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)"
LIST_OBJECTS = (
    "SELECT type, name, tbl_name FROM sqlite_master WHERE name NOT LIKE 'sqlite!_%' ESCAPE '!'"
)
LIST_TABLES = (
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite!_%' ESCAPE '!'"
)

# -- instances ------------------------------------------------------------------------------
SELECT_INSTANCE = f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE instance_id = ?"
SELECT_STATUS = "SELECT runtime_status FROM instances WHERE instance_id = ?"
INSTANCE_EXISTS = "SELECT 1 FROM instances WHERE instance_id = ?"
# A message's status change (see duratask.backends.base.StatusChange).
CHANGE_STATUS = """
UPDATE instances SET runtime_status = :status_becomes, last_updated_at = :now
WHERE instance_id = :instance_id AND runtime_status = :status_when"""
INSERT_INSTANCE_IF_ABSENT = f"""
INSERT INTO instances ({INSTANCE_COLUMNS})
VALUES (:instance_id, :name, :version, :runtime_status, :created_at, :last_updated_at,
        :completed_at, :execution_id, :input, :output, :custom_status, :failure_details,
        :parent_instance_id, :scheduled_start_at, :task_queue)
ON CONFLICT (instance_id) DO NOTHING"""
# Writes the row from an episode's state and releases the lease. SQLite rewrites an index
# whenever an UPDATE names one of its columns, changed or not, so the indexed columns are
# written by a second statement only when their values differ (most episodes change none).
# The statements of every episode commit take their parameters by position (binding a
# named parameter costs a string lookup each): the *_KEYS name them, in order, from the
# instance row's named parameters.
UPDATE_INSTANCE = """
UPDATE instances
SET version = ?2, last_updated_at = ?3, completed_at = ?4, execution_id = ?5, input = ?6,
    output = ?7, custom_status = ?8, failure_details = ?9, scheduled_start_at = ?10,
    task_queue = ?11, lock_token = NULL, lock_owner = NULL, lock_expires_at = NULL
WHERE instance_id = ?1"""
UPDATE_INSTANCE_KEYS = (
    "instance_id",
    "version",
    "last_updated_at",
    "completed_at",
    "execution_id",
    "input",
    "output",
    "custom_status",
    "failure_details",
    "scheduled_start_at",
    "task_queue",
)
UPDATE_INSTANCE_INDEXED = """
UPDATE instances
SET name = ?2, runtime_status = ?3, created_at = ?4, parent_instance_id = ?5
WHERE instance_id = ?1
  AND (name IS NOT ?2 OR runtime_status IS NOT ?3
       OR created_at IS NOT ?4 OR parent_instance_id IS NOT ?5)"""
UPDATE_INSTANCE_INDEXED_KEYS = (
    "instance_id",
    "name",
    "runtime_status",
    "created_at",
    "parent_instance_id",
)
DELETE_INSTANCE = "DELETE FROM instances WHERE instance_id = ?"

# -- orchestration leases ---------------------------------------------------------------------
# The free instance whose oldest visible message has waited longest. An instance resting
# after an abandon (no lock token, an expiry ahead) is not free, unless a terminate waits.
# :keys, a JSON array of orchestration keys (duratask.backends.base.orchestration_key), or
# NULL for any, names the orchestrations the worker can run; :queues, a JSON array or NULL,
# the task queues it serves (read off the instance row the join reads anyway).
SELECT_NEXT_INSTANCE = """
SELECT m.instance_id, i.lock_token, i.lock_owner, i.lock_expires_at, i.execution_id
FROM messages AS m INDEXED BY messages_by_due_at
JOIN instances AS i ON i.instance_id = m.instance_id
WHERE (m.visible_at IS NULL OR m.due_at <= :now)
  AND (i.lock_expires_at IS NULL OR i.lock_expires_at < :now
       OR (i.lock_token IS NULL AND m.event_type = 'EXECUTION_TERMINATED'))
  AND (:keys IS NULL
       OR i.name || char(31) || coalesce(i.version, char(30))
          IN (SELECT value FROM json_each(:keys)))
  AND (:queues IS NULL OR i.task_queue IN (SELECT value FROM json_each(:queues)))
ORDER BY m.due_at, m.message_id
LIMIT 1"""
LEASE_INSTANCE = """
UPDATE instances SET lock_token = :token, lock_owner = :owner, lock_expires_at = :expires_at
WHERE instance_id = :instance_id"""
SELECT_LOCK_TOKEN = "SELECT lock_token FROM instances WHERE instance_id = ?"
# An unleased instance of this execution with no message waiting, with its history length
# (an episode run on an activity's result straight away may be committed if that matches).
# Bound by position: (instance_id, execution_id, now).
INSTANCE_READY_FOR_EPISODE = """
SELECT (SELECT COALESCE(MAX(sequence_number) + 1, 0) FROM history
        WHERE instance_id = ?1) AS history_length
FROM instances
WHERE instance_id = ?1 AND execution_id = ?2
  AND (lock_expires_at IS NULL OR lock_expires_at < ?3)
  AND NOT EXISTS (
    SELECT 1 FROM messages
    WHERE instance_id = ?1 AND (visible_at IS NULL OR due_at <= ?3))"""
RENEW_INSTANCE_LEASE = """
UPDATE instances SET lock_expires_at = :expires_at
WHERE instance_id = :instance_id AND lock_token = :token"""
RELEASE_INSTANCE_LEASE = """
UPDATE instances SET lock_token = NULL, lock_owner = NULL, lock_expires_at = NULL
WHERE instance_id = :instance_id AND lock_token = :token"""

# -- history -----------------------------------------------------------------------------------
SELECT_HISTORY = "SELECT event FROM history WHERE instance_id = ? ORDER BY sequence_number"
# Sequence numbers run 0..n-1, so the length comes from the primary key index alone.
HISTORY_LENGTH = "SELECT COALESCE(MAX(sequence_number) + 1, 0) FROM history WHERE instance_id = ?"
DELETE_HISTORY = "DELETE FROM history WHERE instance_id = ?"
INSERT_HISTORY = """
INSERT INTO history (instance_id, sequence_number, event_type, event) VALUES (?, ?, ?, ?)"""

# -- messages ----------------------------------------------------------------------------------
INSERT_MESSAGE = """
INSERT INTO messages
    (instance_id, execution_id, event_type, event, enqueued_at, visible_at, due_at)
VALUES (:instance_id, :execution_id, :event_type, :event, :now, :visible_at,
        COALESCE(:visible_at, :now))"""
# A create's start message, delivered at once to the worker it leases the instance to.
INSERT_DEQUEUED_MESSAGE = """
INSERT INTO messages
    (instance_id, execution_id, event_type, event, enqueued_at, visible_at, due_at,
     dequeue_count)
VALUES (:instance_id, :execution_id, :event_type, :event, :now, :visible_at,
        COALESCE(:visible_at, :now), 1)"""
COUNT_DEQUEUES = """
UPDATE messages SET dequeue_count = dequeue_count + 1
WHERE instance_id = :instance_id AND (visible_at IS NULL OR due_at <= :now)"""
SELECT_VISIBLE_MESSAGES = """
SELECT message_id, instance_id, execution_id, event, visible_at, dequeue_count
FROM messages
WHERE instance_id = :instance_id AND (visible_at IS NULL OR due_at <= :now)
ORDER BY message_id"""
DELETE_MESSAGE = "DELETE FROM messages WHERE message_id = ? AND instance_id = ?"
# Abandon with a retry time: the instance rests (unleased, yet not free) until then, so no
# message of it is delivered before those that were abandoned.
REST_INSTANCE = """
UPDATE instances SET lock_token = NULL, lock_owner = NULL, lock_expires_at = :retry_at
WHERE instance_id = :instance_id AND lock_token = :token"""

# -- activities --------------------------------------------------------------------------------
_ACTIVITY_COLUMNS = (
    "instance_id, execution_id, task_id, name, version, input, enqueued_at, visible_at, "
    "attempt, timeout, heartbeat_timeout, heartbeat_details, task_queue"
)
_ACTIVITY_VALUES = (
    ":instance_id, :execution_id, :task_id, :name, :version, :input, :now, :now, "
    ":attempt, :timeout, :heartbeat_timeout, :heartbeat_details, :task_queue"
)
INSERT_ACTIVITY = f"INSERT INTO activities ({_ACTIVITY_COLUMNS}) VALUES ({_ACTIVITY_VALUES})"
# The columns of INSERT_ACTIVITY plus the lease, bound by position: (instance_id,
# execution_id, task_id, name, version, input, now, attempt, timeout, heartbeat_timeout,
# heartbeat_details, task_queue, token, owner, expires_at); a leased row is visible once
# its lease expires.
INSERT_LEASED_ACTIVITY = f"""
INSERT INTO activities
    ({_ACTIVITY_COLUMNS}, lock_token, lock_owner, lock_expires_at, dequeue_count)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?15, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, 1)"""
# A lease moves ``visible_at`` to its expiry, so the index skips leased rows; the lock test
# keeps a lease live through its expiry instant, as everywhere. :names, a JSON array of
# activity names or NULL for any, names the activities the worker can run; :queues, a JSON
# array or NULL, the task queues it serves.
# The oldest visible activities without a live lease (with :names, only those named: what
# the worker can run). One that was delivered before and never finished (its worker may
# have died running it) is leased alone, never in a batch: should it kill its worker
# again, no other activity is charged with a delivery for it.
SELECT_NEXT_ACTIVITIES = """
WITH free AS (
    SELECT id, dequeue_count, row_number() OVER (ORDER BY visible_at, id) AS n
    FROM (
        SELECT id, visible_at, dequeue_count
        FROM activities INDEXED BY activities_by_visible_at
        WHERE visible_at <= :now AND (lock_expires_at IS NULL OR lock_expires_at < :now)
          AND (:names IS NULL OR name IN (SELECT value FROM json_each(:names)))
          AND (:queues IS NULL OR task_queue IN (SELECT value FROM json_each(:queues)))
        ORDER BY visible_at, id
        LIMIT :max_items
    )
)
SELECT id FROM free
WHERE n = 1 OR NOT EXISTS (SELECT 1 FROM free AS f WHERE f.dequeue_count > 0 AND f.n <= free.n)"""
LEASE_NEXT_ACTIVITIES = f"""
UPDATE activities
SET lock_token = :token, lock_owner = :owner, lock_expires_at = :expires_at,
    visible_at = :expires_at, dequeue_count = dequeue_count + 1
WHERE id IN ({SELECT_NEXT_ACTIVITIES})
RETURNING id, instance_id, execution_id, task_id, name, version, input, dequeue_count,
          attempt, timeout, heartbeat_timeout, heartbeat_details, task_queue"""
RECORD_HEARTBEAT = """
UPDATE activities
SET heartbeat_details = :details, heartbeat_at = :now, lock_expires_at = :expires_at,
    visible_at = :expires_at
WHERE id = :id AND lock_token = :token"""
RENEW_ACTIVITY_LEASE = """
UPDATE activities SET lock_expires_at = :expires_at, visible_at = :expires_at
WHERE id = :id AND lock_token = :token"""
DELETE_LEASED_ACTIVITY = "DELETE FROM activities WHERE id = ? AND lock_token = ?"
# Handed back unrun: the delivery does not count.
RELEASE_ACTIVITY_LEASE = """
UPDATE activities
SET lock_token = NULL, lock_owner = NULL, lock_expires_at = NULL, visible_at = :visible_at,
    dequeue_count = max(dequeue_count - 1, 0)
WHERE id = :id AND lock_token = :token"""

# -- workers and their leases ----------------------------------------------------------------
UPSERT_WORKER = f"""
INSERT INTO workers ({WORKER_COLUMNS})
VALUES (:worker_id, :host, :pid, :started_at, :heartbeat_at, :registrations, :status)
{WORKER_REFRESH}"""
DELETE_WORKER = "DELETE FROM workers WHERE worker_id = ?"
SELECT_WORKERS = f"SELECT {WORKER_COLUMNS} FROM workers ORDER BY heartbeat_at DESC"
LEASE_HOLDERS = """
SELECT lock_owner AS owner, count(*) AS items, max(lock_expires_at) AS expires_at
FROM (SELECT lock_owner, lock_expires_at FROM instances
      WHERE lock_token IS NOT NULL AND lock_expires_at >= :now
      UNION ALL
      SELECT lock_owner, lock_expires_at FROM activities
      WHERE lock_token IS NOT NULL AND lock_expires_at >= :now
      UNION ALL
      SELECT lock_owner, lock_expires_at FROM entities
      WHERE lock_token IS NOT NULL AND lock_expires_at >= :now)
GROUP BY lock_owner ORDER BY lock_owner"""
# -- lease takeovers (see duratask.backends.base.LeaseTakeover) ----------------------------------
INSERT_TAKEOVER = """
INSERT INTO lease_takeovers
    (instance_id, execution_id, previous_owner, lease_expired_at, taken_at, taken_by)
VALUES (:instance_id, :execution_id, :previous_owner, :lease_expired_at, :now, :taken_by)"""
RECORD_BROKEN_LEASES = """
INSERT INTO lease_takeovers
    (instance_id, execution_id, previous_owner, lease_expired_at, taken_at, taken_by)
SELECT instance_id, execution_id, lock_owner, min(lock_expires_at, :now), :now, NULL
FROM instances WHERE lock_owner = :owner AND lock_token IS NOT NULL"""
SELECT_TAKEOVERS = """
SELECT instance_id, execution_id, previous_owner, lease_expired_at, taken_at, taken_by
FROM lease_takeovers WHERE instance_id = ? ORDER BY id"""

# -- records of earlier executions (see duratask.backends.base.ExecutionRecord) ------------------
LAST_EXECUTION = """
SELECT generation, ended_at FROM executions WHERE instance_id = ?
ORDER BY generation DESC LIMIT 1"""
INSERT_EXECUTION = """
INSERT INTO executions
    (instance_id, generation, execution_id, name, version, started_at, ended_at, status, input,
     output)
VALUES (:instance_id, :generation, :execution_id, :name, :version, :started_at, :ended_at,
        :status, :input, :output)"""
TRIM_EXECUTIONS = "DELETE FROM executions WHERE instance_id = ? AND generation <= ?"
SELECT_EXECUTIONS = """
SELECT instance_id, generation, execution_id, name, version, started_at, ended_at, status, input,
       output
FROM executions WHERE instance_id = ? ORDER BY generation"""

BREAK_INSTANCE_LEASES = """
UPDATE instances SET lock_token = NULL, lock_owner = NULL, lock_expires_at = NULL
WHERE lock_owner = :owner AND lock_token IS NOT NULL"""
BREAK_ENTITY_LEASES = """
UPDATE entities SET lock_token = NULL, lock_owner = NULL, lock_expires_at = NULL
WHERE lock_owner = :owner AND lock_token IS NOT NULL"""
BREAK_ACTIVITY_LEASES = """
UPDATE activities
SET lock_token = NULL, lock_owner = NULL, lock_expires_at = NULL, visible_at = :now
WHERE lock_owner = :owner AND lock_token IS NOT NULL"""

# The work waiting, by kind and name: per instance (its earliest due message) and per
# activity, whether a worker holds it, could take it now, or must wait (due later, resting).
BACKLOG = f"""
WITH per_instance AS (
    SELECT i.name, i.lock_token, i.lock_expires_at, min(m.due_at) AS due
    FROM messages m JOIN instances i ON i.instance_id = m.instance_id
    GROUP BY m.instance_id
), items AS (
    SELECT 'orchestration' AS kind, name, lock_token, lock_expires_at, due FROM per_instance
    UNION ALL
    SELECT 'activity', name, lock_token, lock_expires_at, visible_at FROM activities
), flags AS (
    SELECT kind, name, lock_token IS NOT NULL AS has_token, due <= :now AS due_now,
        coalesce(lock_expires_at, 0) >= :now AS held
    FROM items
)
{BACKLOG_TOTALS}"""

# -- schedules ---------------------------------------------------------------------------------
_SCHEDULE_COLUMNS = (
    "schedule_id, definition, state, next_due_at, claimed_by, revision, created_at, updated_at"
)
INSERT_SCHEDULE = f"""
INSERT INTO schedules ({_SCHEDULE_COLUMNS})
VALUES (:schedule_id, :definition, :state, :next_due_at,
        :claimed_by, :revision, :created_at, :updated_at)
ON CONFLICT (schedule_id) DO NOTHING"""
SELECT_SCHEDULE = f"""
SELECT {_SCHEDULE_COLUMNS} FROM schedules WHERE schedule_id = :schedule_id"""
SELECT_SCHEDULES = f"""
SELECT {_SCHEDULE_COLUMNS} FROM schedules
WHERE substr(schedule_id, 1, :prefix_length) = :prefix ORDER BY schedule_id"""
UPDATE_SCHEDULE = """
UPDATE schedules
SET definition = :definition, state = :state, next_due_at = :next_due_at,
    claimed_by = :claimed_by, revision = revision + 1, updated_at = :updated_at
WHERE schedule_id = :schedule_id AND revision = :revision"""
DELETE_SCHEDULE = "DELETE FROM schedules WHERE schedule_id = :schedule_id"
DUE_SCHEDULES = f"""
SELECT {_SCHEDULE_COLUMNS} FROM schedules
WHERE next_due_at <= :now ORDER BY next_due_at, schedule_id LIMIT :limit"""
NEXT_SCHEDULE_DUE_AT = """
SELECT min(next_due_at) AS due FROM schedules WHERE next_due_at IS NOT NULL"""
