-- Governance policies (issue 14, "Policy"): each account's policy as code, one row per applied
-- version. `source` is the YAML text exactly as applied (readable back through the API);
-- `compiled` is the validated GovernancePolicy the workflow decides with; `source_sha256` is what
-- the audit event `policy.applied` names. The active policy is the account's highest version;
-- no row means the built-in defaults (version 0). Rows are never updated: a new apply is a new
-- version. Forward-only; every statement is safe to re-run.

CREATE TABLE IF NOT EXISTS governance_policies (
  id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  account_id          uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  version             integer NOT NULL CHECK (version >= 1),
  source              text NOT NULL CHECK (octet_length(source) <= 262144),
  source_sha256       bytea NOT NULL CHECK (octet_length(source_sha256) = 32),
  compiled            jsonb NOT NULL,
  created_by_user_id  uuid REFERENCES users (id) ON DELETE SET NULL,
  created_by_key_id   uuid REFERENCES api_keys (id) ON DELETE SET NULL,
  created_at          timestamptz NOT NULL DEFAULT now(),
  UNIQUE (account_id, version)
);

-- The UNIQUE constraint's index serves "the active version" (account_id, version DESC scans it
-- backwards); the creators' foreign keys get their own.
CREATE INDEX IF NOT EXISTS governance_policies_created_by_user_idx ON governance_policies (created_by_user_id);
CREATE INDEX IF NOT EXISTS governance_policies_created_by_key_idx ON governance_policies (created_by_key_id);
