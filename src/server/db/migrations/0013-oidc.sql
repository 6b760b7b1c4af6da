-- OIDC sign-in (issue 12). Forward-only; every statement is safe to re-run.
--
-- install_secrets: secrets this install makes once and keeps for good (e.g. the key of the
-- HMAC that hides an IdP subject in user_identities), shared by every server replica through
-- this database and sealed with the master keyring (secret-box, AAD `install-secret:<name>`),
-- so a copy of the database alone cannot recompute a hash from a known subject.
CREATE TABLE IF NOT EXISTS install_secrets (
  name           text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9-]{0,62}$'),
  secret_sealed  text NOT NULL CHECK (char_length(secret_sealed) <= 500),
  created_at     timestamptz NOT NULL DEFAULT now()
);

-- A sign-in in progress: one row per redirect to the IdP, taken (deleted) by its callback, so a
-- state is usable once; rows past expires_at are refused and swept. The state itself is not
-- stored, only its SHA-256; the PKCE verifier and the nonce are derived from the state with the
-- install's key (nothing here is usable without the state the browser holds). binding_hash is
-- the SHA-256 of the value of the browser's flow cookie (login CSRF: the browser that finishes
-- must be the one that started); invite_hash the SHA-256 of an invite code carried by the flow.
CREATE TABLE IF NOT EXISTS oidc_flows (
  state_hash    bytea PRIMARY KEY CHECK (octet_length(state_hash) = 32),
  binding_hash  bytea NOT NULL CHECK (octet_length(binding_hash) = 32),
  invite_hash   bytea CHECK (octet_length(invite_hash) = 32),
  redirect      text CHECK (char_length(redirect) <= 512),
  created_at    timestamptz NOT NULL DEFAULT now(),
  expires_at    timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS oidc_flows_expires_idx ON oidc_flows (expires_at);

-- What the IdP said about an identity, stored only when the operator opts in
-- (BULWARK_OIDC_STORE_PROFILE); NULL otherwise.
ALTER TABLE user_identities ADD COLUMN IF NOT EXISTS email text CHECK (char_length(email) <= 320);
ALTER TABLE user_identities ADD COLUMN IF NOT EXISTS display_name text CHECK (char_length(display_name) <= 200);
