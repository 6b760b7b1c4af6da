-- Step-up re-authentication ("sudo mode"): when the session's user last proved themselves again
-- (POST /v1/auth/reauth: the password or a TOTP code). Minting credentials (API keys, invites),
-- starting TOTP enrolment and revealing a database password need it within the last 5 minutes
-- when the caller is a signed-in user. NULL: never (signing in does not count for local users).
-- Read by the session's primary key at the time of the action. Forward-only; safe to re-run.
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS reauthenticated_at timestamptz;
