-- Jobs of one database run in queue order (claimJob looks for an older unfinished job of the
-- same database): index that lookup.
CREATE INDEX IF NOT EXISTS jobs_database_order_idx
  ON jobs ((payload->>'database_id'), id)
  WHERE status IN ('queued', 'running') AND kind LIKE 'database.%';
