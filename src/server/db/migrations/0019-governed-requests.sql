-- Governed SQL requests (issue 14): a request to run SQL (or to be given time-boxed access) on one
-- database, its approvals, each delivery to the agent (execution or dry run), the sealed result of
-- the last execution, and an outbox of events for notifications (break-glass). Forward-only; every
-- statement is safe to re-run; every foreign key has an index.

CREATE TABLE IF NOT EXISTS governed_requests (
  id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  account_id           uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  database_id          uuid NOT NULL REFERENCES databases (id) ON DELETE CASCADE,
  status               text NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'cancelled',
                                                         'expired', 'executing', 'executed', 'failed')),
  kind                 text NOT NULL CHECK (kind IN ('sql', 'access')),
  -- The exact SQL text (its SHA-256 is what the execution token binds); NULL for access requests.
  sql                  text CHECK (char_length(sql) <= 200000),
  sql_sha256           text CHECK (sql_sha256 ~ '^[0-9a-f]{64}$'),
  reason               text NOT NULL CHECK (char_length(reason) BETWEEN 1 AND 2000),
  capability           text NOT NULL CHECK (capability IN ('reader', 'migrator')),
  access_role          text CHECK (access_role IN ('reader', 'migrator')),
  access_duration_s    integer CHECK (access_duration_s BETWEEN 60 AND 31536000),
  -- The policy class (read, write, ddl, destructive, access_read, access_write).
  class                text NOT NULL CHECK (char_length(class) <= 32),
  classification       jsonb NOT NULL,
  findings             jsonb NOT NULL DEFAULT '[]'::jsonb,
  requester_user_id    uuid REFERENCES users (id) ON DELETE SET NULL,
  requester_key_id     uuid REFERENCES api_keys (id) ON DELETE SET NULL,
  requester_name       text NOT NULL CHECK (char_length(requester_name) <= 200),
  -- {version, rule, why, environment, approvals_required, admin_approvals_required}
  policy               jsonb NOT NULL,
  max_executions       integer NOT NULL CHECK (max_executions >= 1),
  executions           integer NOT NULL DEFAULT 0 CHECK (executions >= 0),
  approval_lifetime_s  integer NOT NULL CHECK (approval_lifetime_s >= 1),
  dry_run              jsonb,
  dry_run_error        jsonb,
  approved_rows        bigint CHECK (approved_rows >= 0),
  rejection            jsonb,
  break_glass          jsonb,
  last_execution       jsonb,
  expires_at           timestamptz NOT NULL,
  approval_expires_at  timestamptz,
  created_at           timestamptz NOT NULL DEFAULT now(),
  updated_at           timestamptz NOT NULL DEFAULT now(),
  CHECK ((kind = 'sql') = (sql IS NOT NULL AND sql_sha256 IS NOT NULL)),
  CHECK ((kind = 'access') = (access_role IS NOT NULL AND access_duration_s IS NOT NULL)),
  CHECK (requester_user_id IS NULL OR requester_key_id IS NULL)
);
-- Lists: newest first per account and per database (keyset on created_at, id).
CREATE INDEX IF NOT EXISTS governed_requests_account_idx ON governed_requests (account_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS governed_requests_database_idx ON governed_requests (database_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS governed_requests_requester_user_idx ON governed_requests (requester_user_id);
CREATE INDEX IF NOT EXISTS governed_requests_requester_key_idx ON governed_requests (requester_key_id);
-- The expiry sweeper reads only the requests still open.
CREATE INDEX IF NOT EXISTS governed_requests_open_idx ON governed_requests (expires_at)
  WHERE status IN ('pending', 'approved');

-- One approval per person and request (a second one by the same person is the same row).
CREATE TABLE IF NOT EXISTS request_approvals (
  request_id  uuid NOT NULL REFERENCES governed_requests (id) ON DELETE CASCADE,
  user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  comment     text CHECK (char_length(comment) <= 2000),
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (request_id, user_id)
);
CREATE INDEX IF NOT EXISTS request_approvals_user_idx ON request_approvals (user_id);

-- Every delivery of a request to its node: the token's jti, how it went, what came back
-- (counts and errors only; rows live sealed in request_results).
CREATE TABLE IF NOT EXISTS request_executions (
  id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  request_id     uuid NOT NULL REFERENCES governed_requests (id) ON DELETE CASCADE,
  mode           text NOT NULL CHECK (mode IN ('execute', 'dry_run')),
  jti            uuid NOT NULL UNIQUE,
  -- The SQL's hash when sent (a dry run of text since edited settles nothing) and the request's
  -- status before (where it returns when the node never took the delivery).
  sql_sha256     text NOT NULL CHECK (sql_sha256 ~ '^[0-9a-f]{64}$'),
  prior_status   text NOT NULL CHECK (char_length(prior_status) <= 20),
  actor_user_id  uuid REFERENCES users (id) ON DELETE SET NULL,
  actor_key_id   uuid REFERENCES api_keys (id) ON DELETE SET NULL,
  delivery       text CHECK (delivery IN ('channel', 'queue')),
  job_id         bigint REFERENCES jobs (id) ON DELETE SET NULL,
  status         text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'executed', 'failed', 'refused')),
  outcome        jsonb,
  started_at     timestamptz NOT NULL DEFAULT now(),
  finished_at    timestamptz
);
CREATE INDEX IF NOT EXISTS request_executions_request_idx ON request_executions (request_id, started_at);
CREATE INDEX IF NOT EXISTS request_executions_actor_user_idx ON request_executions (actor_user_id);
CREATE INDEX IF NOT EXISTS request_executions_actor_key_idx ON request_executions (actor_key_id);
CREATE INDEX IF NOT EXISTS request_executions_job_idx ON request_executions (job_id);

-- The result of a request's last execution, sealed with the server's secret box
-- (context `request-result:<request id>`), deleted at expires_at by the sweeper.
CREATE TABLE IF NOT EXISTS request_results (
  request_id   uuid PRIMARY KEY REFERENCES governed_requests (id) ON DELETE CASCADE,
  sealed       text NOT NULL,
  executed_at  timestamptz NOT NULL,
  expires_at   timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS request_results_expires_idx ON request_results (expires_at);

-- Events for notifications (webhooks deliver them): written in the transaction of the change,
-- with a NOTIFY on `bulwark_events` naming the row.
CREATE TABLE IF NOT EXISTS event_outbox (
  id            bigserial PRIMARY KEY,
  account_id    uuid REFERENCES accounts (id) ON DELETE CASCADE,
  kind          text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_.]{0,62}$'),
  payload       jsonb NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  delivered_at  timestamptz
);
CREATE INDEX IF NOT EXISTS event_outbox_account_idx ON event_outbox (account_id);
CREATE INDEX IF NOT EXISTS event_outbox_undelivered_idx ON event_outbox (id) WHERE delivered_at IS NULL;
