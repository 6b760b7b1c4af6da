-- Sessions (issue 12): a signed-in user's session is a refresh-token family. The access token
-- (a JWT of 15 minutes) names the session in its `jti`, so one lookup says whether it was
-- revoked; the refresh token is opaque, stored only as its SHA-256, and rotated on every use:
-- the presented token is marked used and a new one is inserted in the same transaction.
-- Presenting a used token again revokes the whole session (reuse = theft).
-- The JWT signing key (Ed25519) is shared by every server replica through this database; its
-- private half is sealed with the master keyring (secret-box, AAD `session-signing-key:<kid>`).
-- Forward-only; every statement is safe to re-run.

CREATE TABLE IF NOT EXISTS sessions (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  created_at      timestamptz NOT NULL DEFAULT now(),
  last_used_at    timestamptz NOT NULL DEFAULT now(),
  expires_at      timestamptz NOT NULL,
  revoked_at      timestamptz,
  revoked_reason  text CHECK (revoked_reason IN ('logout', 'refresh_reuse', 'user_suspended', 'revoked')),
  source_ip       inet,
  user_agent      text CHECK (char_length(user_agent) <= 500),
  CHECK ((revoked_at IS NULL) = (revoked_reason IS NULL))
);
CREATE INDEX IF NOT EXISTS sessions_user_idx ON sessions (user_id, created_at DESC);
CREATE INDEX IF NOT EXISTS sessions_expires_idx ON sessions (expires_at);

CREATE TABLE IF NOT EXISTS refresh_tokens (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  session_id  uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
  token_hash  bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
  created_at  timestamptz NOT NULL DEFAULT now(),
  used_at     timestamptz
);
CREATE INDEX IF NOT EXISTS refresh_tokens_session_idx ON refresh_tokens (session_id);

-- The access tokens' signing keys. One is active (the newest); older ones still verify until
-- their tokens have expired.
CREATE TABLE IF NOT EXISTS session_signing_keys (
  kid                 text PRIMARY KEY CHECK (kid ~ '^[A-Za-z0-9_-]{8,64}$'),
  public_key_pem      text NOT NULL CHECK (char_length(public_key_pem) <= 1000),
  private_key_sealed  text NOT NULL CHECK (char_length(private_key_sealed) <= 2000),
  created_at          timestamptz NOT NULL DEFAULT now()
);
