-- Tamper-evident audit log (issue 5). Forward-only; every statement is safe to re-run.
--
-- Writers insert a row with seq/prev_hash/hash/canonical NULL in the same transaction as the
-- change it records (no shared lock, so appends do not serialise on a head row). One chainer per
-- cluster then assigns seq in id order to committed pending rows, stores the canonical text it
-- hashed and advances audit_head once per batch. Verification hashes the stored canonical text.
-- No foreign keys: events must outlive the accounts, keys and nodes they mention.

CREATE TABLE IF NOT EXISTS audit_events (
  id           bigserial PRIMARY KEY,
  seq          bigint UNIQUE CHECK (seq >= 1),
  occurred_at  timestamptz NOT NULL,
  actor_type   text NOT NULL CHECK (actor_type IN ('user', 'key', 'agent', 'system', 'operator')),
  actor_id     text CHECK (length(actor_id) <= 200),
  action       text NOT NULL CHECK (action ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){0,5}$' AND length(action) <= 100),
  target_type  text CHECK (length(target_type) <= 100),
  target_id    text CHECK (length(target_id) <= 200),
  account_id   uuid,
  source_ip    text CHECK (length(source_ip) <= 100),
  outcome      text NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
  request_id   text CHECK (length(request_id) <= 100),
  details      jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(details) = 'object'),
  canonical    text,
  prev_hash    bytea CHECK (octet_length(prev_hash) = 32),
  hash         bytea CHECK (octet_length(hash) = 32),
  chained_at   timestamptz,
  CONSTRAINT audit_events_chained_together CHECK (
    (seq IS NULL AND canonical IS NULL AND prev_hash IS NULL AND hash IS NULL AND chained_at IS NULL)
    OR (seq IS NOT NULL AND canonical IS NOT NULL AND prev_hash IS NOT NULL AND hash IS NOT NULL
        AND chained_at IS NOT NULL)
  )
);

-- Few indexes on purpose: each costs every append (insert, then the chainer's update).
-- Rows waiting for the chainer, in id order (stays tiny: a chained row leaves it).
CREATE INDEX IF NOT EXISTS audit_events_pending_idx ON audit_events (id) WHERE seq IS NULL;
-- Account-scoped listing and export, newest first, keyset on id. Retention walks the seq index.
CREATE INDEX IF NOT EXISTS audit_events_account_idx ON audit_events (account_id, id);

-- The chain head: one row, advanced by the chainer once per batch (and by nothing else).
CREATE TABLE IF NOT EXISTS audit_head (
  id          smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
  seq         bigint NOT NULL DEFAULT 0 CHECK (seq >= 0),
  hash        bytea NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea
                CHECK (octet_length(hash) = 32),
  updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO audit_head (id) VALUES (1) ON CONFLICT (id) DO NOTHING;

-- Signed heads. kind 'checkpoint': periodic/on-demand; kind 'anchor': the last pruned event
-- (retention), from which verification starts. `at` is the exact signed text.
CREATE TABLE IF NOT EXISTS audit_checkpoints (
  id          bigserial PRIMARY KEY,
  kind        text NOT NULL CHECK (kind IN ('checkpoint', 'anchor')),
  seq         bigint NOT NULL CHECK (seq >= 1),
  hash        bytea NOT NULL CHECK (octet_length(hash) = 32),
  at          text NOT NULL CHECK (length(at) <= 64),
  key_id      text NOT NULL CHECK (key_id ~ '^[0-9a-f]{16}$'),
  signature   text NOT NULL CHECK (length(signature) <= 200),
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS audit_checkpoints_seq_idx ON audit_checkpoints (kind, seq);
