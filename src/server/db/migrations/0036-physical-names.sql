-- Physical names (issue 16, ADR 0034): a database made from a warm-pool spare keeps the spare's
-- generated name in PostgreSQL and PgBouncer (its roles are `<pg_name>_owner` …), while `name` stays
-- the label its account chose. NULL: the database is called `name` on its node (the cold path).
-- Forward-only; every statement is safe to re-run.
ALTER TABLE databases ADD COLUMN IF NOT EXISTS pg_name text;
ALTER TABLE databases DROP CONSTRAINT IF EXISTS databases_pg_name_check;
ALTER TABLE databases ADD CONSTRAINT databases_pg_name_check
  CHECK (pg_name IS NULL OR pg_name ~ '^[a-z][a-z0-9_]{0,62}$');

-- PostgreSQL database (and role) names are per cluster: one live physical name per node, whether
-- it is a label (cold) or a spare's name (warm).
CREATE UNIQUE INDEX IF NOT EXISTS databases_node_physical_key ON databases (node_id, (coalesce(pg_name, name)))
  WHERE deleted_at IS NULL;
