-- duratask task hub on PostgreSQL, schema version 9.
--
-- Task queues: an instance runs on the task queue it was started on, and an activity on the
-- queue its orchestration sent it to; a worker leases only work on the queues it serves.
-- Rows from before have the default queue. Leasing walks the same indexes as before (the
-- messages and activities by due time): the queue is tested on the instance and activity
-- rows that walk reads anyway, like the orchestration and activity names.
ALTER TABLE {schema}.instances ADD COLUMN task_queue text NOT NULL DEFAULT 'default';
ALTER TABLE {schema}.activities ADD COLUMN task_queue text NOT NULL DEFAULT 'default';
