-- Tenant databases: desired state of each database on its node. The agent converges the
-- node to it through database.* jobs; job completion moves `status`.
-- Forward-only; every statement is safe to re-run.

CREATE TABLE IF NOT EXISTS databases (
  id                       uuid PRIMARY KEY,
  account_id               uuid NOT NULL REFERENCES accounts (id) ON DELETE RESTRICT,
  node_id                  uuid NOT NULL REFERENCES nodes (id) ON DELETE RESTRICT,
  name                     text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
  status                   text NOT NULL DEFAULT 'provisioning'
                           CHECK (status IN ('provisioning', 'ready', 'failed', 'deleting', 'deleted')),
  failure_reason           text CHECK (char_length(failure_reason) <= 1000),
  -- AES-256-GCM secret-box values (AAD `database:<id>`); NULL once the database is deleted.
  password_sealed          text,
  -- A rotation in flight: becomes password_sealed when the agent reports it done.
  pending_password_sealed  text,
  password_version         integer NOT NULL DEFAULT 1 CHECK (password_version >= 1),
  allowlist                jsonb NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(allowlist) = 'array'),
  limits                   jsonb NOT NULL CHECK (jsonb_typeof(limits) = 'object'),
  created_at               timestamptz NOT NULL DEFAULT now(),
  ready_at                 timestamptz,
  rotated_at               timestamptz,
  updated_at               timestamptz NOT NULL DEFAULT now(),
  deleted_at               timestamptz,
  CHECK ((status = 'deleted') = (deleted_at IS NOT NULL)),
  CHECK (status = 'deleted' OR password_sealed IS NOT NULL)
);

-- PostgreSQL database (and derived role) names are per cluster: one live name per node.
CREATE UNIQUE INDEX IF NOT EXISTS databases_node_name_key ON databases (node_id, name)
  WHERE deleted_at IS NULL;
-- Callers address a database by name within their account.
CREATE UNIQUE INDEX IF NOT EXISTS databases_account_name_key ON databases (account_id, name)
  WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS databases_account_idx ON databases (account_id);
CREATE INDEX IF NOT EXISTS databases_node_idx ON databases (node_id);
