-- Just-in-time credentials (issue 14): each execution of an approved access request makes one
-- grant — a temporary login on the database's node, valid until `valid_until`. The password is
-- shown to the requester once and never stored; the row keeps the login, its capability and its
-- life: granting (the agent's job runs) → active → expired | revoked, or failed. Forward-only;
-- every statement is safe to re-run; every foreign key has an index.

CREATE TABLE IF NOT EXISTS access_grants (
  id               uuid PRIMARY KEY,
  account_id       uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  request_id       uuid NOT NULL REFERENCES governed_requests (id) ON DELETE CASCADE,
  database_id      uuid NOT NULL REFERENCES databases (id) ON DELETE CASCADE,
  -- `<db>_jit_<8 hex>`: unique, so a login names one grant.
  login            text NOT NULL UNIQUE CHECK (login ~ '^[a-z][a-z0-9_]{0,62}$'),
  capability       text NOT NULL CHECK (capability IN ('reader', 'migrator')),
  valid_until      timestamptz NOT NULL,
  status           text NOT NULL DEFAULT 'granting'
                   CHECK (status IN ('granting', 'active', 'expired', 'revoked', 'failed')),
  -- Who executed the request (the audit's actor when the agent reports the login live).
  actor_type       text NOT NULL CHECK (actor_type IN ('user', 'key', 'system')),
  actor_id         uuid,
  grant_job_id     bigint REFERENCES jobs (id) ON DELETE SET NULL,
  revoke_job_id    bigint REFERENCES jobs (id) ON DELETE SET NULL,
  -- expired | cancelled | database_deleted | grant_timeout | revoked
  end_reason       text CHECK (char_length(end_reason) <= 32),
  -- The agent's answer to the revocation (dropped, terminated_sessions, owns_objects) or its error.
  revoke_outcome   jsonb,
  failure_reason   text CHECK (char_length(failure_reason) <= 1000),
  created_at       timestamptz NOT NULL DEFAULT now(),
  granted_at       timestamptz,
  revoked_at       timestamptz,
  CHECK ((status IN ('expired', 'revoked')) = (revoked_at IS NOT NULL))
);

CREATE INDEX IF NOT EXISTS access_grants_account_idx ON access_grants (account_id);
CREATE INDEX IF NOT EXISTS access_grants_request_idx ON access_grants (request_id);
CREATE INDEX IF NOT EXISTS access_grants_database_idx ON access_grants (database_id);
CREATE INDEX IF NOT EXISTS access_grants_grant_job_idx ON access_grants (grant_job_id);
CREATE INDEX IF NOT EXISTS access_grants_revoke_job_idx ON access_grants (revoke_job_id);
-- The expiry sweeper reads only the grants that may still be live.
CREATE INDEX IF NOT EXISTS access_grants_live_idx ON access_grants (valid_until)
  WHERE status IN ('granting', 'active');
