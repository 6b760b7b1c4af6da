/**
 * Slack approvals (issue 18): an account's Slack app settings (owners and admins; the bot token
 * and signing secret write-only, sealed with the master keyring), people's linked Slack
 * identities, and what the outbox posts when a request becomes pending or is decided. Slack's
 * signed requests are handled in slack.interactions.ts.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { conflict, forbidden, unavailable } from '../../../shared/errors.ts';
import type { SecretBox } from '../../crypto/secret-box.ts';
import { type Db, type Tx, withTx } from '../../db/pool.ts';
import type { Caller, UserPrincipal } from '../../http/caller.ts';
import { type AuditService, auditFromCaller } from '../audit/audit.service.ts';
import type { RequireStepUp } from '../sessions/step-up.ts';
import * as repo from './slack.repo.ts';
import type { PutSlackSettings, SlackSettingsView } from './slack.schemas.ts';

export const LINK_CODE_TTL_MS = 10 * 60_000;
const LINK_CODE = /^bwl-[a-z2-7]{26}$/;

export const botTokenContext = (accountId: string) => `slack-bot-token:${accountId}`;
export const signingSecretContext = (accountId: string) => `slack-signing-secret:${accountId}`;

/** SHA-256 of a link code (what is stored); null for a string that is not one. */
export function linkCodeHash(code: string): Buffer | null {
  const c = code.trim().toLowerCase();
  return LINK_CODE.test(c) ? createHash('sha256').update(c).digest() : null;
}

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';
function newLinkCode(): string {
  const bytes = randomBytes(26);
  let out = 'bwl-';
  for (const b of bytes) out += BASE32[b & 31];
  return out;
}

export type SlackDeps = {
  db: Db;
  log: Logger;
  audit: Pick<AuditService, 'record'>;
  box: SecretBox | null;
};

const view = (row: repo.SlackSettingsRow | null): SlackSettingsView => ({
  enabled: row?.enabled ?? false,
  team_id: row?.team_id ?? null,
  channel_id: row?.channel_id ?? null,
  bot_token_set: row?.bot_token_sealed != null,
  signing_secret_set: row?.signing_secret_sealed != null,
  updated_at: row ? row.updated_at.toISOString() : null,
});

export function createSlackService(deps: SlackDeps) {
  const { db } = deps;
  const requireBox = () => {
    if (!deps.box) throw unavailable('The server has no master key configured');
    return deps.box;
  };

  return {
    async settings(caller: Caller): Promise<SlackSettingsView> {
      return view(await repo.findSettings(db, caller.accountId));
    },

    /**
     * Changes the settings. A new signing secret, bot token or workspace needs a recent step-up of
     * the person's session (whoever holds the signing secret can press buttons as any linked
     * person), and a new signing secret or workspace removes the links to the old and the new
     * workspace in the same transaction: people link again, proving it with their own session.
     */
    async putSettings(
      caller: Caller,
      body: PutSlackSettings,
      requestId: string,
      stepUp: RequireStepUp,
    ): Promise<SlackSettingsView> {
      const box = body.bot_token !== undefined || body.signing_secret !== undefined ? requireBox() : null;
      const current = await repo.findSettings(db, caller.accountId);
      const teamChanges = body.team_id !== undefined && body.team_id !== (current?.team_id ?? null);
      const sensitive = teamChanges || body.bot_token !== undefined || body.signing_secret !== undefined;
      if (sensitive) {
        // slack.manage admits no API key (policy.ts); a caller without a session is refused here too.
        if (caller.kind !== 'user' || !caller.sessionId)
          throw forbidden('Only a signed-in person may change the Slack app');
        await stepUp({ userId: caller.userId, sessionId: caller.sessionId }, 'change the Slack app');
      }
      return withTx(db, async (tx) => {
        const before = await repo.lockSettings(tx, caller.accountId);
        // The workspace changed since it was compared (a concurrent change): decide again.
        if (!sensitive && body.team_id !== undefined && body.team_id !== (before?.team_id ?? null))
          throw conflict('The Slack settings changed meanwhile; send the change again');
        await repo.upsertSettings(tx, caller.accountId, {
          ...(body.enabled !== undefined ? { enabled: body.enabled } : {}),
          ...(body.team_id !== undefined ? { team_id: body.team_id } : {}),
          ...(body.channel_id !== undefined ? { channel_id: body.channel_id } : {}),
          ...(body.bot_token !== undefined
            ? { bot_token_sealed: box!.seal(body.bot_token, botTokenContext(caller.accountId)) }
            : {}),
          ...(body.signing_secret !== undefined
            ? {
                signing_secret_sealed: box!.seal(body.signing_secret, signingSecretContext(caller.accountId)),
              }
            : {}),
        });
        const row = await repo.findSettings(tx, caller.accountId);
        const oldTeam = before?.team_id ?? null;
        const newTeam = row?.team_id ?? null;
        const unlinkTeams =
          body.signing_secret !== undefined || oldTeam !== newTeam
            ? [...new Set([oldTeam, newTeam])].filter((x): x is string => x !== null)
            : [];
        const linksRemoved = await repo.deleteLinksOfTeams(tx, unlinkTeams);
        await deps.audit.record(
          tx,
          auditFromCaller(
            caller,
            {
              action: 'slack.settings_changed',
              targetType: 'account',
              targetId: caller.accountId,
              // What changed, never a secret.
              details: {
                enabled: row?.enabled ?? false,
                team_id: newTeam,
                previous_team_id: oldTeam,
                channel_id: row?.channel_id ?? null,
                bot_token_changed: body.bot_token !== undefined,
                signing_secret_changed: body.signing_secret !== undefined,
                links_removed: linksRemoved,
              },
            },
            requestId,
          ),
        );
        return view(row);
      });
    },

    async deleteSettings(caller: Caller, requestId: string): Promise<void> {
      await withTx(db, async (tx) => {
        if (!(await repo.deleteSettings(tx, caller.accountId))) return;
        await deps.audit.record(
          tx,
          auditFromCaller(
            caller,
            { action: 'slack.settings_deleted', targetType: 'account', targetId: caller.accountId },
            requestId,
          ),
        );
      });
    },

    /** A single-use code (10 minutes) the person sends as `/bulwark link <code>` in Slack. */
    async newLinkCode(user: UserPrincipal): Promise<{ code: string; expires_at: string }> {
      const code = newLinkCode();
      const expiresAt = new Date(Date.now() + LINK_CODE_TTL_MS);
      await withTx(db, (tx) => repo.insertLinkCode(tx, user.userId, linkCodeHash(code)!, expiresAt));
      return { code, expires_at: expiresAt.toISOString() };
    },

    async link(user: UserPrincipal) {
      const row = await repo.findLink(db, user.userId);
      return {
        linked: row !== null,
        slack_user_id: row?.slack_user_id ?? null,
        team_id: row?.team_id ?? null,
      };
    },

    async unlink(user: UserPrincipal, requestId: string): Promise<void> {
      await withTx(db, async (tx) => {
        const row = await repo.findLink(tx, user.userId);
        if (!row || !(await repo.deleteLink(tx, user.userId))) return;
        await deps.audit.record(tx, {
          action: 'slack.unlinked',
          actorType: 'user',
          actorId: user.userId,
          sourceIp: user.sourceIp,
          requestId,
          targetType: 'user',
          targetId: user.userId,
          details: { team_id: row.team_id, slack_user_id: row.slack_user_id },
        });
      });
    },

    /** The account's bot token, when Slack is enabled for it (the outbox's). */
    async botToken(accountId: string): Promise<string | null> {
      const row = await repo.findSettings(db, accountId);
      if (!row?.enabled || !row.bot_token_sealed || !deps.box) return null;
      return deps.box.open(row.bot_token_sealed, botTokenContext(accountId));
    },

    /** The requests module's hook: queue the request's message in its transaction. */
    async onRequestChange(
      tx: Tx,
      row: { id: string; account_id: string },
      change: 'pending' | 'decided',
    ): Promise<void> {
      await repo.enqueueRequestMessage(tx, row.account_id, row.id, change === 'pending' ? 'post' : 'update');
    },
  };
}

export type SlackService = ReturnType<typeof createSlackService>;
