-- People (issue 12): users with local passwords and/or OIDC identities, their second factor,
-- their roles in accounts, the invites that create them and the login throttle. Sessions and
-- refresh tokens are in 0012. No secret is stored in clear: passwords are argon2id PHC strings,
-- the TOTP secret is sealed with the master keyring (secret-box, AAD `user-totp:<user id>`),
-- recovery and invite codes are SHA-256 hashes, an IdP subject is an HMAC with an install secret.
-- Forward-only; every statement is safe to re-run.

CREATE TABLE IF NOT EXISTS users (
  id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  -- NULL for a user who signs in only through OIDC.
  username             text UNIQUE CHECK (username ~ '^[a-z][a-z0-9._-]{1,62}$'),
  status               text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
  platform_admin       boolean NOT NULL DEFAULT false,
  -- argon2id PHC string ($argon2id$v=19$m=…,t=…,p=…$salt$hash); NULL = no local password.
  password_hash        text CHECK (password_hash LIKE '$argon2id$%' AND char_length(password_hash) <= 200),
  password_changed_at  timestamptz,
  created_at           timestamptz NOT NULL DEFAULT now(),
  suspended_at         timestamptz,
  CHECK ((status = 'suspended') = (suspended_at IS NOT NULL)),
  CHECK ((password_hash IS NULL) = (password_changed_at IS NULL))
);

-- A user's TOTP second factor (RFC 6238). Enrolment writes the row unconfirmed; it is enforced
-- at login only once confirmed. last_used_step makes each code single-use (updated atomically:
-- a step is accepted only when greater than the last one used).
CREATE TABLE IF NOT EXISTS user_totp (
  user_id         uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
  secret_sealed   text NOT NULL CHECK (char_length(secret_sealed) <= 500),
  confirmed_at    timestamptz,
  last_used_step  bigint CHECK (last_used_step >= 0),
  created_at      timestamptz NOT NULL DEFAULT now()
);

-- Recovery codes, shown once at TOTP confirmation; each usable once in place of a TOTP code.
CREATE TABLE IF NOT EXISTS user_recovery_codes (
  user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  code_hash   bytea NOT NULL CHECK (octet_length(code_hash) = 32),
  used_at     timestamptz,
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, code_hash)
);

-- OIDC identities: the IdP subject only as HMAC-SHA256(install secret, subject).
CREATE TABLE IF NOT EXISTS user_identities (
  user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  issuer        text NOT NULL CHECK (char_length(issuer) BETWEEN 1 AND 500),
  subject_hmac  bytea NOT NULL CHECK (octet_length(subject_hmac) = 32),
  created_at    timestamptz NOT NULL DEFAULT now(),
  UNIQUE (issuer, subject_hmac)
);
CREATE INDEX IF NOT EXISTS user_identities_user_idx ON user_identities (user_id);

CREATE TABLE IF NOT EXISTS memberships (
  account_id  uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  role        text NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (account_id, user_id)
);
CREATE INDEX IF NOT EXISTS memberships_user_idx ON memberships (user_id);

-- Database-level grants: a member with rows here sees only those databases of the account;
-- a member with none sees all of them. The database must belong to the membership's account
-- (composite foreign key on (id, account_id)).
CREATE UNIQUE INDEX IF NOT EXISTS databases_id_account_key ON databases (id, account_id);
CREATE TABLE IF NOT EXISTS membership_databases (
  account_id   uuid NOT NULL,
  user_id      uuid NOT NULL,
  database_id  uuid NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (account_id, user_id, database_id),
  FOREIGN KEY (account_id, user_id) REFERENCES memberships (account_id, user_id) ON DELETE CASCADE,
  FOREIGN KEY (database_id, account_id) REFERENCES databases (id, account_id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS membership_databases_database_idx ON membership_databases (database_id, account_id);

-- Invite-only sign-up: single-use codes, stored as SHA-256, deleted when redeemed. An invite
-- into an account carries the role; one without an account carries none (e.g. the first
-- platform admin).
CREATE TABLE IF NOT EXISTS invites (
  id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  code_hash           bytea NOT NULL UNIQUE CHECK (octet_length(code_hash) = 32),
  account_id          uuid REFERENCES accounts (id) ON DELETE CASCADE,
  role                text CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
  platform_admin      boolean NOT NULL DEFAULT false,
  expires_at          timestamptz NOT NULL,
  created_by_user_id  uuid REFERENCES users (id) ON DELETE SET NULL,
  created_at          timestamptz NOT NULL DEFAULT now(),
  CHECK ((account_id IS NULL) = (role IS NULL))
);
CREATE INDEX IF NOT EXISTS invites_account_idx ON invites (account_id, created_at DESC);
CREATE INDEX IF NOT EXISTS invites_created_by_idx ON invites (created_by_user_id);
CREATE INDEX IF NOT EXISTS invites_expires_idx ON invites (expires_at);

-- Failed sign-ins per username (scope 'user', key = a keyed hash of the username as typed) and
-- per source address (scope 'ip'), shared by every server replica. A success clears the user row.
CREATE TABLE IF NOT EXISTS login_throttle (
  scope            text NOT NULL CHECK (scope IN ('user', 'ip')),
  key              text NOT NULL CHECK (char_length(key) BETWEEN 1 AND 200),
  failures         integer NOT NULL DEFAULT 0 CHECK (failures >= 0),
  next_allowed_at  timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (scope, key)
);
CREATE INDEX IF NOT EXISTS login_throttle_updated_idx ON login_throttle (updated_at);

-- A key created by a user dies with that user's suspension and never exceeds their role.
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS created_by_user_id uuid REFERENCES users (id) ON DELETE SET NULL;
CREATE INDEX IF NOT EXISTS api_keys_created_by_user_idx ON api_keys (created_by_user_id);
