-- Backups and restores (issue 15). A backup is an encrypted archive of one tenant database on
-- its node's backup storage; the server keeps its record and its data key (sealed with the
-- master keyring, context `backup-key:<id>`), the agent makes and reads the file through
-- `backup.*` jobs. Forward-only; every statement is safe to re-run.

CREATE TABLE IF NOT EXISTS backups (
  id                uuid PRIMARY KEY,
  account_id        uuid NOT NULL REFERENCES accounts (id) ON DELETE RESTRICT,
  database_id       uuid NOT NULL REFERENCES databases (id) ON DELETE RESTRICT,
  -- The node that holds the file (the database's node when it was taken).
  node_id           uuid NOT NULL REFERENCES nodes (id) ON DELETE RESTRICT,
  -- The database's name when the backup was taken (a restore to a new name shows its source).
  database_name     text NOT NULL CHECK (database_name ~ '^[a-z][a-z0-9_]{0,62}$'),
  status            text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'running', 'completed', 'failed')),
  trigger           text NOT NULL CHECK (trigger IN ('scheduled', 'manual', 'safety', 'drill')),
  -- The daily slot a scheduled backup fills (one per database and slot, whichever replica runs).
  scheduled_for     timestamptz,
  size_bytes        bigint CHECK (size_bytes >= 0),
  sha256            text CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  -- The backup's own data key, sealed with the server's secret box (AAD context `backup-key:<id>`).
  wrapped_key       text NOT NULL CHECK (char_length(wrapped_key) <= 512),
  -- Where the archive lives on its storage, built from ids only (`<database id>/<backup id>…`).
  storage_key       text NOT NULL CHECK (storage_key ~ '^[0-9a-f-]{36}/[0-9a-f-]{36}(\.[a-z0-9-]{1,30})?$'),
  job_id            bigint REFERENCES jobs (id) ON DELETE SET NULL,
  pg_version        text CHECK (char_length(pg_version) <= 200),
  duration_ms       bigint CHECK (duration_ms >= 0),
  -- What the dump held (tables with exact rows and the planner's estimates, object counts): a
  -- restore and a drill are checked against it (src/shared/contracts/backup-results.ts).
  manifest          jsonb CHECK (manifest IS NULL OR jsonb_typeof(manifest) = 'object'),
  failure_reason    text CHECK (char_length(failure_reason) <= 1000),
  created_at        timestamptz NOT NULL DEFAULT now(),
  started_at        timestamptz,
  completed_at      timestamptz,
  -- Last successful restore drill of this archive, and the last failed one's reason.
  verified_at       timestamptz,
  verify_failure    text CHECK (char_length(verify_failure) <= 1000),
  expires_at        timestamptz,
  updated_at        timestamptz NOT NULL DEFAULT now(),
  -- Deletion requested (DELETE, or the retention sweeper): hidden from the API; the row goes
  -- once the agent has removed the file.
  deleted_at        timestamptz,
  delete_job_id     bigint REFERENCES jobs (id) ON DELETE SET NULL,
  CHECK (status <> 'completed' OR (size_bytes IS NOT NULL AND sha256 IS NOT NULL AND manifest IS NOT NULL
                                   AND completed_at IS NOT NULL)),
  CHECK ((trigger = 'scheduled') = (scheduled_for IS NOT NULL))
);

CREATE INDEX IF NOT EXISTS backups_account_idx ON backups (account_id);
CREATE INDEX IF NOT EXISTS backups_node_idx ON backups (node_id);
CREATE INDEX IF NOT EXISTS backups_job_idx ON backups (job_id);
CREATE INDEX IF NOT EXISTS backups_delete_job_idx ON backups (delete_job_id);
-- A database's backups, newest first (the list, the latest good one, freshness).
CREATE INDEX IF NOT EXISTS backups_database_created_idx ON backups (database_id, created_at DESC, id DESC);
-- One scheduled backup per database and daily slot.
CREATE UNIQUE INDEX IF NOT EXISTS backups_scheduled_slot_key ON backups (database_id, scheduled_for)
  WHERE scheduled_for IS NOT NULL;
-- The retention sweeper's scan.
CREATE INDEX IF NOT EXISTS backups_expiry_idx ON backups (expires_at) WHERE deleted_at IS NULL;

CREATE TABLE IF NOT EXISTS restores (
  id                  uuid PRIMARY KEY,
  account_id          uuid NOT NULL REFERENCES accounts (id) ON DELETE RESTRICT,
  backup_id           uuid NOT NULL REFERENCES backups (id) ON DELETE CASCADE,
  -- The database the backup came from, and the one restored into (new, itself, or a scratch one).
  source_database_id  uuid NOT NULL REFERENCES databases (id) ON DELETE RESTRICT,
  target_database_id  uuid REFERENCES databases (id) ON DELETE SET NULL,
  target              text NOT NULL CHECK (target IN ('new', 'in_place', 'drill')),
  status              text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'running', 'completed', 'failed')),
  -- In place: the backup taken first; the restore job is queued once it completed.
  safety_backup_id    uuid REFERENCES backups (id) ON DELETE SET NULL,
  job_id              bigint REFERENCES jobs (id) ON DELETE SET NULL,
  -- The weekly drill slot (one drill per database and slot).
  scheduled_for       timestamptz,
  failure_reason      text CHECK (char_length(failure_reason) <= 1000),
  result              jsonb CHECK (result IS NULL OR jsonb_typeof(result) = 'object'),
  created_at          timestamptz NOT NULL DEFAULT now(),
  started_at          timestamptz,
  completed_at        timestamptz,
  updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS restores_account_idx ON restores (account_id);
CREATE INDEX IF NOT EXISTS restores_backup_idx ON restores (backup_id);
CREATE INDEX IF NOT EXISTS restores_source_created_idx ON restores (source_database_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS restores_target_idx ON restores (target_database_id);
CREATE INDEX IF NOT EXISTS restores_safety_backup_idx ON restores (safety_backup_id);
CREATE INDEX IF NOT EXISTS restores_job_idx ON restores (job_id);
CREATE UNIQUE INDEX IF NOT EXISTS restores_drill_slot_key ON restores (source_database_id, scheduled_for)
  WHERE scheduled_for IS NOT NULL;

-- Schedule and retention: one row per account (database_id NULL: the account's defaults) and
-- optionally one per database (overrides the account's). A NULL column inherits the next level
-- (database → account → the server's defaults).
CREATE TABLE IF NOT EXISTS backup_settings (
  id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  account_id            uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  database_id           uuid REFERENCES databases (id) ON DELETE CASCADE,
  enabled               boolean,
  -- Minutes after midnight UTC of the daily backup.
  schedule_minute       integer CHECK (schedule_minute BETWEEN 0 AND 1439),
  retention_days        integer CHECK (retention_days BETWEEN 1 AND 3650),
  rpo_hours             integer CHECK (rpo_hours BETWEEN 1 AND 8760),
  drill_interval_days   integer CHECK (drill_interval_days BETWEEN 1 AND 365),
  updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX IF NOT EXISTS backup_settings_account_key ON backup_settings (account_id)
  WHERE database_id IS NULL;
CREATE INDEX IF NOT EXISTS backup_settings_account_idx ON backup_settings (account_id);
CREATE UNIQUE INDEX IF NOT EXISTS backup_settings_database_key ON backup_settings (database_id)
  WHERE database_id IS NOT NULL;

-- Freshness alerts: the last good backup a `backup.stale` alert was raised for (one alert per
-- stale spell; a newer good backup ends it).
CREATE TABLE IF NOT EXISTS backup_alerts (
  database_id        uuid PRIMARY KEY REFERENCES databases (id) ON DELETE CASCADE,
  account_id         uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  last_good_at       timestamptz,
  alerted_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS backup_alerts_account_idx ON backup_alerts (account_id);
