-- API keys, account key policy and Idempotency-Key replay records.
-- Forward-only; every statement is safe to re-run.

ALTER TABLE accounts ADD COLUMN IF NOT EXISTS max_key_lifetime_days integer NOT NULL DEFAULT 90;
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS key_idle_revoke_days integer;

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'accounts_max_key_lifetime_days_check') THEN
    ALTER TABLE accounts ADD CONSTRAINT accounts_max_key_lifetime_days_check
      CHECK (max_key_lifetime_days BETWEEN 1 AND 3650);
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'accounts_key_idle_revoke_days_check') THEN
    ALTER TABLE accounts ADD CONSTRAINT accounts_key_idle_revoke_days_check
      CHECK (key_idle_revoke_days IS NULL OR key_idle_revoke_days BETWEEN 1 AND 3650);
  END IF;
END $$;

-- Only a short lookup prefix and the SHA-256 of the whole key are stored; the key itself
-- is shown once. `databases` NULL means the key covers the whole account.
CREATE TABLE IF NOT EXISTS api_keys (
  id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  account_id         uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  name               text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
  lookup_prefix      text NOT NULL UNIQUE CHECK (lookup_prefix ~ '^[0-9A-Za-z]{12}$'),
  key_hash           bytea NOT NULL CHECK (octet_length(key_hash) = 32),
  level              text NOT NULL CHECK (level IN ('read', 'write', 'admin')),
  databases          text[] CHECK (databases IS NULL OR cardinality(databases) BETWEEN 1 AND 100),
  explorer           boolean NOT NULL DEFAULT false,
  decoy              boolean NOT NULL DEFAULT false,
  created_by_key_id  uuid REFERENCES api_keys (id) ON DELETE SET NULL,
  expires_at         timestamptz NOT NULL,
  last_used_at       timestamptz,
  last_used_ip       inet,
  revoked_at         timestamptz,
  created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS api_keys_account_list_idx ON api_keys (account_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS api_keys_created_by_idx ON api_keys (created_by_key_id);

-- One row per (account, Idempotency-Key): the first request's hash and its response, so a
-- retry replays the response instead of creating a second object. Secrets are never stored.
CREATE TABLE IF NOT EXISTS idempotency_keys (
  account_id       uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  key              text NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
  request_hash     bytea NOT NULL CHECK (octet_length(request_hash) = 32),
  response_status  integer,
  response_body    jsonb,
  created_at       timestamptz NOT NULL DEFAULT now(),
  expires_at       timestamptz NOT NULL,
  PRIMARY KEY (account_id, key)
);

CREATE INDEX IF NOT EXISTS idempotency_keys_expires_idx ON idempotency_keys (expires_at);
