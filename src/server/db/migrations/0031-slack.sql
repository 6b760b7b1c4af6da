-- Slack approvals (issue 18): an account's Slack app settings (the bot token and signing secret
-- sealed with the master keyring, never shown again), people's linked Slack identities, the
-- single-use link codes (hashed), and the durable outbox of messages to post to Slack.

-- One Bulwark account per Slack workspace: the team id of a signed request picks the account and
-- its signing secret.
CREATE TABLE IF NOT EXISTS slack_settings (
  account_id            uuid PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
  enabled               boolean NOT NULL DEFAULT false,
  team_id               text CHECK (team_id ~ '^[A-Z0-9]{1,32}$'),
  channel_id            text CHECK (channel_id ~ '^[A-Z0-9]{1,32}$'),
  bot_token_sealed      text CHECK (char_length(bot_token_sealed) <= 4096),
  signing_secret_sealed text CHECK (char_length(signing_secret_sealed) <= 4096),
  updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS slack_settings_team_idx ON slack_settings (team_id) WHERE team_id IS NOT NULL;

-- A person's Slack identity (one per person), made by `/bulwark link <code>` in Slack.
CREATE TABLE IF NOT EXISTS slack_links (
  user_id       uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
  team_id       text NOT NULL CHECK (team_id ~ '^[A-Z0-9]{1,32}$'),
  slack_user_id text NOT NULL CHECK (slack_user_id ~ '^[A-Z0-9]{1,32}$'),
  created_at    timestamptz NOT NULL DEFAULT now(),
  UNIQUE (team_id, slack_user_id)
);

-- Link codes: SHA-256 of the code only; single use (deleted when used), 10 minutes.
CREATE TABLE IF NOT EXISTS slack_link_codes (
  code_hash  bytea PRIMARY KEY CHECK (octet_length(code_hash) = 32),
  user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  expires_at timestamptz NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS slack_link_codes_user_idx ON slack_link_codes (user_id);

-- The outbox: written in the transaction that changed the request, sent by a worker after commit
-- (never inside the API request), retried with backoff, `dead` after max attempts.
CREATE TABLE IF NOT EXISTS slack_messages (
  id              bigserial PRIMARY KEY,
  account_id      uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  request_id      uuid REFERENCES governed_requests (id) ON DELETE CASCADE,
  kind            text NOT NULL CHECK (kind IN ('post', 'update', 'ephemeral')),
  -- ephemeral: the Slack user to show it to, and its text.
  slack_user_id   text CHECK (slack_user_id ~ '^[A-Z0-9]{1,32}$'),
  text            text CHECK (char_length(text) <= 2000),
  status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'dead')),
  attempts        int NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  last_error      text CHECK (char_length(last_error) <= 500),
  channel_id      text CHECK (channel_id ~ '^[A-Z0-9]{1,32}$'),
  -- post: the Slack message's ts once sent (an update edits that message).
  message_ts      text CHECK (message_ts ~ '^[0-9]{1,20}\.[0-9]{1,20}$'),
  created_at      timestamptz NOT NULL DEFAULT now(),
  sent_at         timestamptz
);
CREATE INDEX IF NOT EXISTS slack_messages_due_idx ON slack_messages (next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS slack_messages_account_idx ON slack_messages (account_id);
CREATE INDEX IF NOT EXISTS slack_messages_request_idx ON slack_messages (request_id);
