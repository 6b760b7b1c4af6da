-- Size and connection samples of tenant databases (the dashboard's charts and list): the agent of
-- a node reads them from its cluster every interval and reports them (POST /v1/agent/samples);
-- the server keeps them for a bounded window (config sampleRetentionDays) and prunes older rows.
-- The primary key leads with database_id: it indexes the foreign key, serves "the latest sample
-- of a database" (a backward scan) and a chart's window. `at` is the server's clock at ingest.
-- Forward-only; every statement is safe to re-run.
CREATE TABLE IF NOT EXISTS database_samples (
  database_id  uuid NOT NULL REFERENCES databases (id) ON DELETE CASCADE,
  at           timestamptz NOT NULL,
  size_bytes   bigint NOT NULL CHECK (size_bytes >= 0),
  connections  integer NOT NULL CHECK (connections >= 0),
  PRIMARY KEY (database_id, at)
);
-- The prune deletes by age across every database.
CREATE INDEX IF NOT EXISTS database_samples_at_idx ON database_samples (at);
-- The databases list: an account's live databases newest first, filtered by status and name,
-- read in index order (keyset paging) without a sort.
CREATE INDEX IF NOT EXISTS databases_account_created_idx ON databases (account_id, created_at DESC, id DESC)
  WHERE deleted_at IS NULL;
