-- Signed webhooks (issue 18). Forward-only; every statement is safe to re-run.
--
-- webhooks: an account's subscriptions. The signing secret is sealed with the master keyring
-- (never stored in clear); after a rotation the previous one keeps signing until its expiry.
-- webhook_deliveries: the durable delivery queue and the delivery log in one table (a row per
-- (webhook, event) and per redelivery; workers claim due rows with FOR UPDATE SKIP LOCKED).
-- webhook_dispatch: the dispatcher's cursor over the chained audit log (seq), one row.

CREATE TABLE IF NOT EXISTS webhooks (
  id                          uuid PRIMARY KEY,
  account_id                  uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  url                         text NOT NULL CHECK (char_length(url) <= 2048),
  events                      text[] NOT NULL CHECK (cardinality(events) BETWEEN 1 AND 64),
  description                 text CHECK (char_length(description) <= 500),
  enabled                     boolean NOT NULL DEFAULT true,
  disabled_reason             text CHECK (char_length(disabled_reason) <= 500),
  secret_sealed               text NOT NULL CHECK (char_length(secret_sealed) <= 1000),
  secret_hint                 text NOT NULL CHECK (char_length(secret_hint) <= 8),
  secret_rotated_at           timestamptz,
  previous_secret_sealed      text CHECK (char_length(previous_secret_sealed) <= 1000),
  previous_secret_expires_at  timestamptz,
  consecutive_failures        integer NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
  failing_since               timestamptz,
  created_at                  timestamptz NOT NULL DEFAULT now(),
  updated_at                  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS webhooks_account_idx ON webhooks (account_id, created_at, id);

CREATE TABLE IF NOT EXISTS webhook_deliveries (
  id                uuid PRIMARY KEY,
  webhook_id        uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
  account_id        uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  event_id          text NOT NULL CHECK (char_length(event_id) <= 100),
  event_type        text NOT NULL CHECK (char_length(event_type) <= 100),
  -- The exact JSON body sent (the signature covers these bytes); at most 64 KB.
  payload           text NOT NULL CHECK (octet_length(payload) <= 65536),
  redelivery_of     uuid REFERENCES webhook_deliveries (id) ON DELETE SET NULL,
  status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'succeeded', 'failed', 'dead')),
  attempts          integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  max_attempts      integer NOT NULL CHECK (max_attempts BETWEEN 1 AND 50),
  next_attempt_at   timestamptz,
  last_status_code  integer,
  last_error        text CHECK (char_length(last_error) <= 500),
  duration_ms       integer,
  response_body     text CHECK (char_length(response_body) <= 1024),
  created_at        timestamptz NOT NULL DEFAULT now(),
  delivered_at      timestamptz
);
-- One delivery per (webhook, event) from the dispatcher (a replayed pass inserts nothing twice);
-- redeliveries are extra rows.
CREATE UNIQUE INDEX IF NOT EXISTS webhook_deliveries_event_uidx
  ON webhook_deliveries (webhook_id, event_id) WHERE redelivery_of IS NULL;
-- Due work, in order (stays small: only rows still to be tried).
CREATE INDEX IF NOT EXISTS webhook_deliveries_due_idx
  ON webhook_deliveries (next_attempt_at) WHERE status IN ('pending', 'failed');
-- The delivery log of a webhook, newest first.
CREATE INDEX IF NOT EXISTS webhook_deliveries_log_idx ON webhook_deliveries (webhook_id, created_at, id);
CREATE INDEX IF NOT EXISTS webhook_deliveries_account_idx ON webhook_deliveries (account_id);
CREATE INDEX IF NOT EXISTS webhook_deliveries_redelivery_idx
  ON webhook_deliveries (redelivery_of) WHERE redelivery_of IS NOT NULL;

-- Starts at the chain's current head: history from before webhooks existed is not delivered.
CREATE TABLE IF NOT EXISTS webhook_dispatch (
  id          smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
  audit_seq   bigint NOT NULL CHECK (audit_seq >= 0),
  updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO webhook_dispatch (id, audit_seq)
  SELECT 1, COALESCE((SELECT seq FROM audit_head WHERE id = 1), 0)
  ON CONFLICT (id) DO NOTHING;
