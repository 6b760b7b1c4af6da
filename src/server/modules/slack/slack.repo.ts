/**
 * SQL of the Slack integration (migration 0031): per-account settings (secrets sealed), people's
 * linked Slack identities, single-use link codes (hashed) and the message outbox.
 */
import type { Queryable } from '../../db/pool.ts';

export type SlackSettingsRow = {
  account_id: string;
  enabled: boolean;
  team_id: string | null;
  channel_id: string | null;
  bot_token_sealed: string | null;
  signing_secret_sealed: string | null;
  updated_at: Date;
};

export async function findSettings(q: Queryable, accountId: string): Promise<SlackSettingsRow | null> {
  const r = await q.query<SlackSettingsRow>('SELECT * FROM slack_settings WHERE account_id = $1', [
    accountId,
  ]);
  return r.rows[0] ?? null;
}

export async function findSettingsByTeam(q: Queryable, teamId: string): Promise<SlackSettingsRow | null> {
  const r = await q.query<SlackSettingsRow>('SELECT * FROM slack_settings WHERE team_id = $1', [teamId]);
  return r.rows[0] ?? null;
}

/** The account's settings, locked until the transaction ends (a change compares against them). */
export async function lockSettings(q: Queryable, accountId: string): Promise<SlackSettingsRow | null> {
  const r = await q.query<SlackSettingsRow>('SELECT * FROM slack_settings WHERE account_id = $1 FOR UPDATE', [
    accountId,
  ]);
  return r.rows[0] ?? null;
}

export type SettingsPatch = {
  enabled?: boolean;
  team_id?: string | null;
  channel_id?: string | null;
  bot_token_sealed?: string;
  signing_secret_sealed?: string;
};

/** Creates or changes the account's settings; fields left out keep their value. */
export async function upsertSettings(q: Queryable, accountId: string, p: SettingsPatch): Promise<void> {
  const has = (k: keyof SettingsPatch) => p[k] !== undefined;
  await q.query(
    `INSERT INTO slack_settings AS s
            (account_id, enabled, team_id, channel_id, bot_token_sealed, signing_secret_sealed)
     VALUES ($1, coalesce($2, false), $3, $4, $5, $6)
     ON CONFLICT (account_id) DO UPDATE SET
       enabled = CASE WHEN $7 THEN excluded.enabled ELSE s.enabled END,
       team_id = CASE WHEN $8 THEN excluded.team_id ELSE s.team_id END,
       channel_id = CASE WHEN $9 THEN excluded.channel_id ELSE s.channel_id END,
       bot_token_sealed = CASE WHEN $10 THEN excluded.bot_token_sealed ELSE s.bot_token_sealed END,
       signing_secret_sealed = CASE WHEN $11 THEN excluded.signing_secret_sealed ELSE s.signing_secret_sealed END,
       updated_at = now()`,
    [
      accountId,
      p.enabled ?? null,
      p.team_id ?? null,
      p.channel_id ?? null,
      p.bot_token_sealed ?? null,
      p.signing_secret_sealed ?? null,
      has('enabled'),
      has('team_id'),
      has('channel_id'),
      has('bot_token_sealed'),
      has('signing_secret_sealed'),
    ],
  );
}

export async function deleteSettings(q: Queryable, accountId: string): Promise<boolean> {
  const r = await q.query('DELETE FROM slack_settings WHERE account_id = $1', [accountId]);
  return (r.rowCount ?? 0) > 0;
}

// --- links -------------------------------------------------------------------------------------

export type SlackLinkRow = { user_id: string; team_id: string; slack_user_id: string; created_at: Date };

export async function findLink(q: Queryable, userId: string): Promise<SlackLinkRow | null> {
  const r = await q.query<SlackLinkRow>('SELECT * FROM slack_links WHERE user_id = $1', [userId]);
  return r.rows[0] ?? null;
}

export async function deleteLink(q: Queryable, userId: string): Promise<boolean> {
  const r = await q.query('DELETE FROM slack_links WHERE user_id = $1', [userId]);
  return (r.rowCount ?? 0) > 0;
}

/** Removes every link to these workspaces (a new signing secret or workspace starts from none). */
export async function deleteLinksOfTeams(q: Queryable, teamIds: string[]): Promise<number> {
  if (teamIds.length === 0) return 0;
  const r = await q.query('DELETE FROM slack_links WHERE team_id = ANY($1::text[])', [teamIds]);
  return r.rowCount ?? 0;
}

/** The person linked to this Slack user, with their state and role in the account. */
export type LinkedPerson = {
  user_id: string;
  user_status: 'active' | 'suspended';
  platform_admin: boolean;
  role: 'owner' | 'admin' | 'member' | 'viewer' | null;
  account_name: string;
  account_status: 'active' | 'suspended';
  databases: string[] | null;
};

export async function findLinkedPerson(
  q: Queryable,
  accountId: string,
  teamId: string,
  slackUserId: string,
): Promise<LinkedPerson | null> {
  const r = await q.query<LinkedPerson>(
    `SELECT l.user_id, u.status AS user_status, u.platform_admin, m.role,
            a.name AS account_name, a.status AS account_status,
            (SELECT array_agg(d.name ORDER BY d.name)
               FROM membership_databases md JOIN databases d ON d.id = md.database_id
              WHERE md.account_id = $1 AND md.user_id = l.user_id) AS databases
       FROM slack_links l
       JOIN users u ON u.id = l.user_id
       JOIN accounts a ON a.id = $1
       LEFT JOIN memberships m ON m.account_id = $1 AND m.user_id = l.user_id
      WHERE l.team_id = $2 AND l.slack_user_id = $3`,
    [accountId, teamId, slackUserId],
  );
  return r.rows[0] ?? null;
}

export async function insertLinkCode(
  q: Queryable,
  userId: string,
  codeHash: Buffer,
  expiresAt: Date,
): Promise<void> {
  // One live code per person: a new one replaces the last.
  await q.query('DELETE FROM slack_link_codes WHERE user_id = $1 OR expires_at < now()', [userId]);
  await q.query('INSERT INTO slack_link_codes (code_hash, user_id, expires_at) VALUES ($1, $2, $3)', [
    codeHash,
    userId,
    expiresAt,
  ]);
}

/** Takes a code (single use: deleted whether or not it has expired); its person when still valid. */
export async function takeLinkCode(q: Queryable, codeHash: Buffer): Promise<string | null> {
  const r = await q.query<{ user_id: string; live: boolean }>(
    'DELETE FROM slack_link_codes WHERE code_hash = $1 RETURNING user_id, expires_at > now() AS live',
    [codeHash],
  );
  const row = r.rows[0];
  return row?.live ? row.user_id : null;
}

/** Links the person to the Slack user (replacing their previous link and the Slack user's). */
export async function upsertLink(q: Queryable, userId: string, teamId: string, slackUserId: string) {
  await q.query('DELETE FROM slack_links WHERE (team_id = $1 AND slack_user_id = $2) OR user_id = $3', [
    teamId,
    slackUserId,
    userId,
  ]);
  await q.query('INSERT INTO slack_links (user_id, team_id, slack_user_id) VALUES ($1, $2, $3)', [
    userId,
    teamId,
    slackUserId,
  ]);
}

// --- outbox ------------------------------------------------------------------------------------

export const SLACK_CHANNEL = 'bulwark_slack';

/**
 * Queues a post or an update of a request's message, in the caller's transaction, when the
 * account's Slack integration is enabled with a channel and a bot token; NOTIFY wakes the worker
 * at commit.
 */
export async function enqueueRequestMessage(
  tx: Queryable,
  accountId: string,
  requestId: string,
  kind: 'post' | 'update',
): Promise<boolean> {
  const r = await tx.query(
    `INSERT INTO slack_messages (account_id, request_id, kind, channel_id)
     SELECT s.account_id, $2, $3, s.channel_id FROM slack_settings s
      WHERE s.account_id = $1 AND s.enabled AND s.channel_id IS NOT NULL AND s.bot_token_sealed IS NOT NULL`,
    [accountId, requestId, kind],
  );
  if ((r.rowCount ?? 0) === 0) return false;
  await tx.query("SELECT pg_notify($1, 'slack')", [SLACK_CHANNEL]);
  return true;
}

export async function enqueueEphemeral(
  q: Queryable,
  accountId: string,
  channelId: string,
  slackUserId: string,
  text: string,
): Promise<void> {
  await q.query(
    `INSERT INTO slack_messages (account_id, kind, channel_id, slack_user_id, text)
     VALUES ($1, 'ephemeral', $2, $3, $4)`,
    [accountId, channelId, slackUserId, text.slice(0, 2000)],
  );
  await q.query("SELECT pg_notify($1, 'slack')", [SLACK_CHANNEL]);
}

export type SlackMessageRow = {
  id: string;
  account_id: string;
  request_id: string | null;
  kind: 'post' | 'update' | 'ephemeral';
  slack_user_id: string | null;
  text: string | null;
  attempts: number;
  channel_id: string | null;
};

/**
 * Leases due messages (their next attempt moved `leaseS` ahead, so another replica skips them
 * meanwhile). An update waits while its request's post is still pending.
 */
export async function leaseDue(q: Queryable, limit: number, leaseS: number): Promise<SlackMessageRow[]> {
  const r = await q.query<SlackMessageRow>(
    `UPDATE slack_messages m SET next_attempt_at = now() + make_interval(secs => $2), attempts = m.attempts + 1
      WHERE m.id IN (
        SELECT x.id FROM slack_messages x
         WHERE x.status = 'pending' AND x.next_attempt_at <= now()
           AND NOT (x.kind = 'update' AND EXISTS (
                 SELECT 1 FROM slack_messages p
                  WHERE p.request_id = x.request_id AND p.kind = 'post' AND p.status = 'pending' AND p.id < x.id))
         ORDER BY x.id
         LIMIT $1
         FOR UPDATE SKIP LOCKED)
      RETURNING m.id, m.account_id, m.request_id, m.kind, m.slack_user_id, m.text, m.attempts, m.channel_id`,
    [limit, leaseS],
  );
  return r.rows.sort((a, b) => Number(a.id) - Number(b.id));
}

export async function markSent(q: Queryable, id: string, ts: string | null): Promise<void> {
  await q.query(
    `UPDATE slack_messages SET status = 'sent', sent_at = now(), message_ts = $2, last_error = NULL
      WHERE id = $1`,
    [id, ts],
  );
}

export async function markFailed(
  q: Queryable,
  id: string,
  error: string,
  retryInS: number | null,
): Promise<void> {
  await q.query(
    `UPDATE slack_messages
        SET last_error = $2,
            status = CASE WHEN $3::float8 IS NULL THEN 'dead' ELSE 'pending' END,
            next_attempt_at = now() + make_interval(secs => coalesce($3::float8, 0))
      WHERE id = $1`,
    [id, error.slice(0, 500), retryInS],
  );
}

/** The channel and ts of the request's last sent post (what an update edits). */
export async function postedMessage(
  q: Queryable,
  requestId: string,
): Promise<{ channel_id: string; message_ts: string } | null> {
  const r = await q.query<{ channel_id: string; message_ts: string }>(
    `SELECT channel_id, message_ts FROM slack_messages
      WHERE request_id = $1 AND kind = 'post' AND status = 'sent' AND message_ts IS NOT NULL
      ORDER BY id DESC LIMIT 1`,
    [requestId],
  );
  return r.rows[0] ?? null;
}
