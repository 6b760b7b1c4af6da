/**
 * Webhook event types: the one table that maps what Bulwark records (audit actions, and the kinds
 * written to `event_outbox`) to the types subscribers see. `GET /v1/webhooks/event-types` lists it
 * and docs/api.md shows it (a test holds both to it).
 *
 * Each event has a stable id: `evt_a<audit event id>` for an audit event, `evt_o<outbox row id>`
 * for an outbox row, `evt_t<uuid>` for a test. A kind the outbox carries (break-glass, stale
 * backups, failed drills) is taken from the outbox only: its audit twin maps to nothing here, so
 * nothing is delivered twice.
 */
import { randomUUID } from 'node:crypto';
import { redactSql } from '../../../shared/sql/explorer-validator.ts';

type Source = { audit: string; when?: (details: Record<string, unknown>) => boolean } | { outbox: string };

export type EventTypeDef = { type: string; description: string; from: Source[] };

const is = (key: string, value: unknown) => (d: Record<string, unknown>) => d[key] === value;
const notDryRun = (d: Record<string, unknown>) => d.mode !== 'dry_run';

export const EVENT_TYPES: readonly EventTypeDef[] = [
  {
    type: 'database.created',
    description: 'A database was requested',
    from: [{ audit: 'database.created' }],
  },
  {
    type: 'database.ready',
    description: 'A database was created on its node and accepts connections',
    from: [{ audit: 'database.create_done' }],
  },
  {
    type: 'database.create_failed',
    description: 'Creating a database failed',
    from: [{ audit: 'database.create_failed' }],
  },
  {
    type: 'database.deleted',
    description: 'A database was dropped',
    from: [{ audit: 'database.delete_done' }],
  },
  {
    type: 'database.allowlist_changed',
    description: 'A database’s allowlist changed',
    from: [{ audit: 'database.allowlist_changed' }, { audit: 'database.allowlist_expired' }],
  },
  {
    type: 'database.limits_changed',
    description: 'A database’s limits changed',
    from: [{ audit: 'database.limits_changed' }],
  },
  {
    type: 'credentials.revealed',
    description: 'A database owner’s password was revealed',
    from: [{ audit: 'database.credentials_revealed' }],
  },
  {
    type: 'credentials.rotated',
    description: 'A database owner’s password was rotated',
    from: [{ audit: 'database.rotate_done' }],
  },
  {
    type: 'credentials.rotation_failed',
    description: 'A password rotation failed (the old password was restored, or could not be)',
    from: [
      { audit: 'database.rotate_failed' },
      { audit: 'database.rotate_failed_restored' },
      { audit: 'database.rotate_restore_failed' },
    ],
  },
  {
    type: 'request.pending',
    description: 'A governed SQL request waits for approval',
    from: [{ audit: 'request.created', when: is('status', 'pending') }],
  },
  {
    type: 'request.approved',
    description: 'A governed SQL request has all the approvals it needs',
    from: [
      { audit: 'request.approved', when: is('approved', true) },
      { audit: 'request.created', when: is('status', 'approved') },
    ],
  },
  {
    type: 'request.rejected',
    description: 'A governed SQL request was rejected',
    from: [{ audit: 'request.rejected' }],
  },
  {
    type: 'request.executed',
    description: 'A governed SQL request ran',
    from: [{ audit: 'request.executed', when: notDryRun }],
  },
  {
    type: 'request.failed',
    description: 'A governed SQL request failed or was refused by the node',
    from: [{ audit: 'request.failed', when: notDryRun }, { audit: 'request.refused' }],
  },
  {
    type: 'request.cancelled',
    description: 'A governed SQL request was cancelled',
    from: [{ audit: 'request.cancelled' }],
  },
  {
    type: 'request.expired',
    description: 'A governed SQL request expired',
    from: [{ audit: 'request.expired' }],
  },
  {
    type: 'break_glass.used',
    description: 'A request was executed with break-glass, past its approvals',
    from: [{ outbox: 'request.break_glass' }],
  },
  {
    type: 'access.granted',
    description: 'Just-in-time credentials were granted',
    from: [{ audit: 'access.granted' }],
  },
  {
    type: 'access.revoked',
    description: 'Just-in-time credentials ended',
    from: [{ audit: 'access.revoked' }],
  },
  { type: 'backup.completed', description: 'A backup completed', from: [{ audit: 'backup.completed' }] },
  { type: 'backup.failed', description: 'A backup failed', from: [{ audit: 'backup.failed' }] },
  {
    type: 'backup.stale',
    description: 'A database’s last good backup is older than its RPO',
    from: [{ outbox: 'backup.stale' }],
  },
  {
    type: 'backup.drill_failed',
    description: 'A restore drill of a backup failed',
    from: [{ outbox: 'backup.drill_failed' }],
  },
  { type: 'backup.deleted', description: 'A backup was deleted', from: [{ audit: 'backup.deleted' }] },
  { type: 'restore.started', description: 'A restore started', from: [{ audit: 'restore.started' }] },
  { type: 'restore.completed', description: 'A restore completed', from: [{ audit: 'restore.completed' }] },
  { type: 'restore.failed', description: 'A restore failed', from: [{ audit: 'restore.failed' }] },
  {
    type: 'node.unhealthy',
    description: 'A node holding the account’s databases stopped reporting',
    from: [{ outbox: 'node.unhealthy' }],
  },
  {
    type: 'node.recovered',
    description: 'An unhealthy node reports again',
    from: [{ outbox: 'node.recovered' }],
  },
  { type: 'key.created', description: 'An API key was created', from: [{ audit: 'key.created' }] },
  {
    type: 'key.revoked',
    description: 'An API key was revoked (by a person, or idle)',
    from: [{ audit: 'key.revoked' }, { audit: 'key.idle_revoked' }],
  },
  {
    type: 'key.decoy_used',
    description: 'A decoy (canary) API key was used',
    from: [{ audit: 'key.decoy_used' }],
  },
  {
    type: 'member.role_changed',
    description: 'A member’s role changed',
    from: [{ audit: 'member.role_changed' }],
  },
  { type: 'member.removed', description: 'A member was removed', from: [{ audit: 'member.removed' }] },
  {
    type: 'policy.applied',
    description: 'A governance policy was applied',
    from: [{ audit: 'policy.applied' }],
  },
  {
    type: 'webhook.disabled',
    description: 'A webhook was disabled after failing continuously',
    from: [{ audit: 'webhook.disabled' }],
  },
  { type: 'webhook.test', description: 'A test event (POST /v1/webhooks/:id/test)', from: [] },
];

export const EVENT_TYPE_NAMES: ReadonlySet<string> = new Set(EVENT_TYPES.map((e) => e.type));
export const EVENT_AREAS: ReadonlySet<string> = new Set(EVENT_TYPES.map((e) => areaOf(e.type)));

export function areaOf(type: string): string {
  return type.slice(0, type.indexOf('.'));
}

const byAudit = new Map<string, { type: string; when?: (d: Record<string, unknown>) => boolean }[]>();
const byOutbox = new Map<string, string>();
for (const def of EVENT_TYPES)
  for (const s of def.from) {
    if ('outbox' in s) byOutbox.set(s.outbox, def.type);
    else {
      const list = byAudit.get(s.audit) ?? [];
      list.push({ type: def.type, ...(s.when ? { when: s.when } : {}) });
      byAudit.set(s.audit, list);
    }
  }

/** The event type of an audit event, or null when webhooks do not carry it. */
export function typeOfAudit(
  action: string,
  outcome: string,
  details: Record<string, unknown>,
): string | null {
  // Refusals and failed attempts of people (outcome 'denied') are the audit log's, not events.
  if (outcome === 'denied') return null;
  for (const m of byAudit.get(action) ?? []) if (!m.when || m.when(details)) return m.type;
  return null;
}

export function typeOfOutbox(kind: string): string | null {
  return byOutbox.get(kind) ?? null;
}

export function subscribed(events: readonly string[], type: string): boolean {
  const area = `${areaOf(type)}.*`;
  return events.some((e) => e === '*' || e === type || e === area);
}

// --- Payloads ----------------------------------------------------------------------------------

/** Keys whose value is never sent, at any depth (defence in depth: nothing records secrets). */
const SECRET_KEY = /(pass(word)?|secret|token|private|credential|api_?key|^key$|sealed|wrapped)/i;
const MAX_DEPTH = 8;

/** A copy fit to leave the platform: SQL redacted (literals → ?), secret-looking fields dropped. */
export function scrub(value: unknown, depth = 0): unknown {
  if (depth > MAX_DEPTH) return null;
  if (Array.isArray(value)) return value.slice(0, 200).map((v) => scrub(v, depth + 1));
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      if (SECRET_KEY.test(k) && !/_id$|^key_prefix$/.test(k)) continue;
      out[k] = k === 'sql' && typeof v === 'string' ? safeRedact(v) : scrub(v, depth + 1);
    }
    return out;
  }
  if (typeof value === 'string') return value.length > 4000 ? `${value.slice(0, 4000)}…` : value;
  return value;
}

/**
 * Literals → `?`, also on text already redacted by its writer (the audit log redacts `sql` as it
 * records): each `?` stands in as a parameter while parsing, so redacting twice changes nothing.
 */
function safeRedact(sql: string): string {
  const MARK = '$31999';
  try {
    return redactSql(sql.replaceAll('?', MARK)).replaceAll(MARK, '?');
  } catch {
    return '(SQL not shown)';
  }
}

export type WebhookEvent = {
  id: string;
  type: string;
  created_at: string;
  account_id: string;
  data: Record<string, unknown>;
};

export type AuditEventRow = {
  id: string;
  action: string;
  outcome: string;
  actor_type: string;
  actor_id: string | null;
  target_type: string | null;
  target_id: string | null;
  account_id: string | null;
  request_id: string | null;
  details: Record<string, unknown>;
  occurred_at: Date;
};

/**
 * A key's events leave the platform without `decoy`: a decoy (canary) key must look like any other
 * key to every consumer (its use is the `key.decoy_used` alert). The audit log keeps it.
 */
function outgoingDetails(action: string, details: Record<string, unknown>): Record<string, unknown> {
  if (!action.startsWith('key.') || !('decoy' in details)) return details;
  const { decoy: _decoy, ...rest } = details;
  return rest;
}

/** Whether an account has a webhook subscribed to a type (an event nobody wants is not built). */
export type Wanted = (accountId: string, type: string) => boolean;

export function eventFromAudit(row: AuditEventRow, wanted: Wanted = () => true): WebhookEvent | null {
  if (!row.account_id) return null;
  const type = typeOfAudit(row.action, row.outcome, row.details ?? {});
  if (!type || !wanted(row.account_id, type)) return null;
  return {
    id: `evt_a${row.id}`,
    type,
    created_at: row.occurred_at.toISOString(),
    account_id: row.account_id,
    data: {
      action: row.action,
      outcome: row.outcome,
      actor: { type: row.actor_type, id: row.actor_id },
      target: row.target_type ? { type: row.target_type, id: row.target_id } : null,
      request_id: row.request_id,
      details: scrub(outgoingDetails(row.action, row.details ?? {})),
    },
  };
}

export type OutboxRow = {
  id: string;
  account_id: string | null;
  kind: string;
  payload: Record<string, unknown>;
  created_at: Date;
};

export function eventFromOutbox(row: OutboxRow, wanted: Wanted = () => true): WebhookEvent | null {
  if (!row.account_id) return null;
  const type = typeOfOutbox(row.kind);
  if (!type || !wanted(row.account_id, type)) return null;
  return {
    id: `evt_o${row.id}`,
    type,
    created_at: row.created_at.toISOString(),
    account_id: row.account_id,
    data: scrub(row.payload ?? {}) as Record<string, unknown>,
  };
}

export function testEvent(accountId: string, webhookId: string): WebhookEvent {
  return {
    id: `evt_t${randomUUID()}`,
    type: 'webhook.test',
    created_at: new Date().toISOString(),
    account_id: accountId,
    data: { webhook_id: webhookId, message: 'A test event from Bulwark' },
  };
}
