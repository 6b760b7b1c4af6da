-- Long jobs (issue 15): a running backup, restore or drill reports how far it is (phase, bytes
-- done, bytes total), read through the backup's or restore's job; and the backup jobs that use a
-- database (create, restore, drill) join the per-database queue order of its `database.*` jobs.
-- Forward-only; every statement is safe to re-run.

ALTER TABLE jobs ADD COLUMN IF NOT EXISTS progress jsonb
  CHECK (progress IS NULL OR (jsonb_typeof(progress) = 'object' AND pg_column_size(progress) <= 1024));

-- claimJob looks for an older unfinished job of the same database among these kinds.
CREATE INDEX IF NOT EXISTS jobs_database_order_v2_idx
  ON jobs ((payload->>'database_id'), id)
  WHERE status IN ('queued', 'running')
    AND (kind LIKE 'database.%' OR kind IN ('backup.create', 'backup.restore', 'backup.drill'));
DROP INDEX IF EXISTS jobs_database_order_idx;
