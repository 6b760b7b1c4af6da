/**
 * What Slack sends Bulwark (issue 18): button presses (interactions) and slash commands. Each is
 * verified before anything but its team id is read: the team picks the account and its signing
 * secret, and the signature over the exact bytes received (slack.signature.ts) decides; an unknown
 * team, a disabled integration, a missing, wrong or stale signature are one answer: 401.
 *
 * A Slack user acts as the Bulwark person they linked (`/bulwark link <code>`), in the account the
 * workspace belongs to, with that person's current role, database grants and status; Approve and
 * Reject call the same functions as the API (policy, never self-approval, still pending…) with
 * the audit noting `via: slack`. Break-glass has no action here: any other action is refused.
 */
import type { Logger } from 'pino';
import { AppError, unauthorized } from '../../../shared/errors.ts';
import type { SecretBox } from '../../crypto/secret-box.ts';
import { type Db, withTx } from '../../db/pool.ts';
import type { MembershipRole, Permission, UserCaller } from '../../http/caller.ts';
import { POLICY } from '../../http/policy.ts';
import type { AuditService } from '../audit/audit.service.ts';
import { findRequest } from '../requests/requests.repo.ts';
import type { RequestsService } from '../requests/requests.service.ts';
import { APPROVE_ACTION, REJECT_ACTION } from './slack.message.ts';
import * as repo from './slack.repo.ts';
import { commandForm, interactionPayload } from './slack.schemas.ts';
import { linkCodeHash, signingSecretContext } from './slack.service.ts';
import { type SignatureHeaders, verifySlackSignature } from './slack.signature.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const LEVEL: Record<MembershipRole, Permission> = {
  owner: 'admin',
  admin: 'admin',
  member: 'write',
  viewer: 'read',
};

export type SlackReply = { response_type: 'ephemeral'; text: string };
const reply = (text: string): SlackReply => ({ response_type: 'ephemeral', text: text.slice(0, 2000) });

export const NOT_LINKED_TEXT =
  'Your Slack account is not linked to Bulwark: in Bulwark, open your settings, choose "Link Slack" and send `/bulwark link <code>` here. Nothing was approved.';

/**
 * The form's fields when none appears twice; null otherwise. Slack never repeats a field; a form
 * that does could be read one way to verify (the first value) and another to act (the last).
 */
function singleFields(form: URLSearchParams): Record<string, string> | null {
  const out: Record<string, string> = {};
  for (const [k, v] of form) {
    if (Object.hasOwn(out, k)) return null;
    out[k] = v;
  }
  return out;
}

/** The team id of a form Slack posted (the only thing read before the signature is checked). */
function teamOf(form: URLSearchParams, kind: 'interaction' | 'command'): string | null {
  if (kind === 'command') return form.get('team_id');
  try {
    const p = JSON.parse(form.get('payload') ?? '') as { team?: { id?: unknown } };
    return typeof p?.team?.id === 'string' ? p.team.id : null;
  } catch {
    return null;
  }
}

export function createSlackInteractions(deps: {
  db: Db;
  log: Logger;
  audit: Pick<AuditService, 'record'>;
  box: SecretBox | null;
  requests: Pick<RequestsService, 'approve' | 'reject'>;
  now?: () => number;
}) {
  const { db, log } = deps;

  /** Verifies a request from Slack; its account's settings when it holds, 401 otherwise. */
  async function verify(
    raw: unknown,
    headers: SignatureHeaders,
    kind: 'interaction' | 'command',
  ): Promise<{ settings: repo.SlackSettingsRow; form: URLSearchParams }> {
    if (!Buffer.isBuffer(raw) || headers.signature === undefined || headers.timestamp === undefined)
      throw unauthorized('Not a signed request from Slack');
    const form = new URLSearchParams(raw.toString('utf8'));
    const team = teamOf(form, kind);
    const settings = team && /^[A-Z0-9]{1,32}$/.test(team) ? await repo.findSettingsByTeam(db, team) : null;
    let ok = false;
    if (settings?.enabled && settings.signing_secret_sealed && deps.box) {
      const secret = deps.box.open(settings.signing_secret_sealed, signingSecretContext(settings.account_id));
      ok = verifySlackSignature(secret, headers, raw, deps.now?.() ?? Date.now());
    }
    if (!ok || !settings) {
      log.warn({ slack_team: team?.slice(0, 32) ?? null, kind }, 'slack request refused: not verified');
      throw unauthorized('Not a signed request from Slack');
    }
    return { settings, form };
  }

  /** The person behind a Slack user of the account's workspace, as an account caller; or why not. */
  async function callerOf(
    settings: repo.SlackSettingsRow,
    slackTeam: string,
    slackUser: string,
    sourceIp: string,
  ): Promise<UserCaller | string> {
    // A user of another workspace (a shared channel) is never someone of this account.
    if (slackTeam !== settings.team_id) return NOT_LINKED_TEXT;
    const p = await repo.findLinkedPerson(db, settings.account_id, slackTeam, slackUser);
    if (!p) return NOT_LINKED_TEXT;
    if (p.user_status !== 'active') return 'Your Bulwark account is suspended. Nothing was approved.';
    if (p.role === null || p.account_status !== 'active')
      return 'You are not a member of this Bulwark account. Nothing was approved.';
    const rule = POLICY['requests.approve'];
    if (!(rule.roles as readonly string[]).includes(p.role) || (p.databases !== null && !rule.scoped))
      return `Your role (${p.role}) does not allow approvals. Nothing was approved.`;
    return {
      kind: 'user',
      userId: p.user_id,
      // No session: Slack identifies the person; nothing reachable from here needs a step-up.
      sessionId: '',
      role: p.role,
      platformAdmin: false,
      accountId: settings.account_id,
      accountName: p.account_name,
      level: LEVEL[p.role],
      databases: p.databases,
      explorer: false,
      sourceIp,
    };
  }

  /** Approve or Reject of a request's message. */
  async function decide(
    caller: UserCaller,
    actionId: string,
    value: string | undefined,
    requestId: string,
  ): Promise<string> {
    if (actionId !== APPROVE_ACTION && actionId !== REJECT_ACTION)
      return 'Bulwark does not know this action (break-glass is never possible from Slack). Nothing was done.';
    if (value === undefined || !UUID.test(value)) return 'Not a Bulwark request. Nothing was done.';
    const row = await findRequest(db, { accountId: caller.accountId, id: value });
    if (!row) return 'Request not found. Nothing was done.';
    try {
      if (actionId === APPROVE_ACTION) {
        const v = await deps.requests.approve(
          caller,
          row.database,
          row.id,
          'Approved in Slack',
          requestId,
          'slack',
        );
        return v.status === 'approved'
          ? `Approved: the request on ${row.database} is approved.`
          : `Your approval counts (${v.approvals_counted} of ${v.policy.approvals_required}).`;
      }
      await deps.requests.reject(caller, row.database, row.id, 'Rejected in Slack', requestId, 'slack');
      return `Rejected: the request on ${row.database}.`;
    } catch (err) {
      if (err instanceof AppError && err.status < 500)
        return `Refused: ${err.code === 'not_found' ? 'request not found' : err.message}. Nothing was done.`;
      throw err;
    }
  }

  return {
    async interaction(raw: unknown, headers: SignatureHeaders, sourceIp: string, requestId: string) {
      const { settings, form } = await verify(raw, headers, 'interaction');
      // One reading of the form and of its payload, the one verified: a repeated field is refused.
      const fields = singleFields(form);
      let payload: ReturnType<typeof interactionPayload.parse>;
      try {
        if (!fields) throw new Error('a repeated field');
        payload = interactionPayload.parse(JSON.parse(fields.payload ?? ''));
      } catch {
        return reply('Bulwark could not read this interaction. Nothing was done.');
      }
      if (payload.team.id !== settings.team_id)
        return reply('Bulwark could not read this interaction. Nothing was done.');
      const action = payload.actions?.[0];
      if (payload.type !== 'block_actions' || !action) return reply('Nothing to do.');
      const slackTeam = (payload.user as { team_id?: unknown }).team_id ?? payload.team.id;
      const caller = await callerOf(settings, String(slackTeam), payload.user.id, sourceIp);
      const text =
        typeof caller === 'string' ? caller : await decide(caller, action.action_id, action.value, requestId);
      // Shown to the one user (Slack ignores the answer to a button press): through the outbox.
      if (payload.channel)
        await repo.enqueueEphemeral(db, settings.account_id, payload.channel.id, payload.user.id, text);
      return reply(text);
    },

    async command(raw: unknown, headers: SignatureHeaders, requestId: string) {
      const { settings, form } = await verify(raw, headers, 'command');
      // One reading of the form, the one verified: a repeated field (a second team_id…) is refused.
      const fields = singleFields(form);
      const parsed = fields ? commandForm.safeParse(fields) : null;
      if (!parsed?.success || parsed.data.team_id !== settings.team_id || !settings.team_id)
        return reply('Bulwark could not read this command. Nothing was linked.');
      const words = parsed.data.text.trim().split(/\s+/);
      if (words[0] !== 'link' || words.length !== 2)
        return reply('Usage: `/bulwark link <code>` (the code from "Link Slack" in your Bulwark settings).');
      const hash = linkCodeHash(words[1]!);
      if (!hash) return reply('That is not a link code. Nothing was linked.');
      // The workspace is the verified one (the settings' team), never a field read again.
      const team = settings.team_id;
      const slackUser = parsed.data.user_id;
      const outcome = await withTx(db, async (tx) => {
        const userId = await repo.takeLinkCode(tx, hash);
        if (!userId) return 'invalid' as const;
        const member = await tx.query(
          `SELECT 1 FROM memberships m JOIN users u ON u.id = m.user_id
            WHERE m.account_id = $1 AND m.user_id = $2 AND u.status = 'active'`,
          [settings.account_id, userId],
        );
        if (member.rowCount === 0) return 'not_member' as const;
        await repo.upsertLink(tx, userId, team, slackUser);
        await deps.audit.record(tx, {
          action: 'slack.linked',
          actorType: 'user',
          actorId: userId,
          accountId: settings.account_id,
          requestId,
          targetType: 'user',
          targetId: userId,
          details: { team_id: team, slack_user_id: slackUser, via: 'slack' },
        });
        return 'linked' as const;
      });
      if (outcome === 'invalid') return reply('This code is unknown, used or expired. Nothing was linked.');
      if (outcome === 'not_member')
        return reply('You are not a member of the Bulwark account of this workspace. Nothing was linked.');
      return reply('Linked: your Slack account now acts as your Bulwark account here.');
    },
  };
}

export type SlackInteractions = ReturnType<typeof createSlackInteractions>;
