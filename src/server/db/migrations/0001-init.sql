-- Foundation: tenants, data-plane nodes and the job queue that drives them.
-- Forward-only; every statement is safe to re-run.

CREATE TABLE IF NOT EXISTS accounts (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name        text NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
  status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS nodes (
  id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name               text NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
  token_hash         bytea UNIQUE CHECK (octet_length(token_hash) = 32),
  status             text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
  agent_version      text,
  pg_version         text,
  capabilities       jsonb NOT NULL DEFAULT '{}'::jsonb,
  last_heartbeat_at  timestamptz,
  enrolled_at        timestamptz,
  created_at         timestamptz NOT NULL DEFAULT now()
);

-- One-time enrollment tokens: only the hash is kept, and the row is deleted on use.
CREATE TABLE IF NOT EXISTS node_enrollments (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  token_hash  bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
  node_name   text NOT NULL CHECK (node_name ~ '^[a-z][a-z0-9_-]{0,62}$'),
  expires_at  timestamptz NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS jobs (
  id                bigserial PRIMARY KEY,
  node_id           uuid NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
  account_id        uuid REFERENCES accounts (id) ON DELETE CASCADE,
  kind              text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_.]{0,62}$'),
  payload           jsonb NOT NULL DEFAULT '{}'::jsonb,
  status            text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'succeeded', 'dead')),
  attempts          integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  max_attempts      integer NOT NULL DEFAULT 5 CHECK (max_attempts BETWEEN 1 AND 100),
  run_after         timestamptz NOT NULL DEFAULT now(),
  lease_expires_at  timestamptz,
  result            jsonb,
  last_error        text,
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now(),
  finished_at       timestamptz
);

CREATE INDEX IF NOT EXISTS jobs_claim_idx ON jobs (node_id, run_after, id) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS jobs_lease_idx ON jobs (node_id, lease_expires_at) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS jobs_account_idx ON jobs (account_id);
CREATE INDEX IF NOT EXISTS jobs_status_idx ON jobs (status, created_at);
