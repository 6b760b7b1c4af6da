/**
 * Webhooks of an account: create (the secret shown once), list, show, change, delete, rotate the
 * secret (the old one keeps signing for the overlap window), send a test, read the delivery log,
 * redeliver. Another account's webhook is a 404. The URL passes the SSRF checks (ssrf.ts) at every
 * save; deliveries check it again.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { AppError, badRequest, conflict, notFound, unavailable } from '../../../shared/errors.ts';
import type { SecretBox } from '../../crypto/secret-box.ts';
import { type Db, withTx } from '../../db/pool.ts';
import type { Caller } from '../../http/caller.ts';
import type { PageCursor } from '../../http/pagination.ts';
import { type AuditService, auditFromCaller } from '../audit/audit.service.ts';
import { checkDestination, type DestinationPolicy, DestinationRefused } from './ssrf.ts';
import { payloadOf } from './webhooks.dispatcher.ts';
import { areaOf, EVENT_TYPES, testEvent } from './webhooks.events.ts';
import * as repo from './webhooks.repo.ts';
import { DEFAULT_OVERLAP_S } from './webhooks.schemas.ts';
import { secretContext } from './webhooks.worker.ts';

export const SECRET_PREFIX = 'whsec_';

export function generateSecret(): string {
  return `${SECRET_PREFIX}${randomBytes(32).toString('base64url')}`;
}

export type WebhooksService = ReturnType<typeof createWebhooksService>;

export function createWebhooksService(deps: {
  db: Db;
  box: SecretBox | null;
  audit: Pick<AuditService, 'record'>;
  policy: () => DestinationPolicy;
  maxPerAccount: number;
  maxAttempts: number;
  /** Deliveries waiting per webhook past which a test or redelivery is refused (429). */
  pendingPerWebhook: number;
  log: Pick<Logger, 'info'>;
  /** A delivery was queued (wakes the worker). */
  onQueued: () => void;
}) {
  const { db } = deps;

  const needBox = (): SecretBox => {
    if (!deps.box) throw unavailable('The server has no master key configured (BULWARK_MASTER_KEY_FILE)');
    return deps.box;
  };

  /** The URL's SSRF verdict as a 400 naming the reason. */
  const checkUrl = async (url: string) => {
    try {
      await checkDestination(url, deps.policy());
    } catch (err) {
      if (err instanceof DestinationRefused) {
        // The address a name resolved to stays in the server's log (the tenant gets the reason).
        if (err.address) deps.log.info({ address: err.address }, 'webhook URL refused');
        throw new AppError('destination_refused', `Webhook URL refused: ${err.message}`, {
          reason: err.message,
        });
      }
      throw err;
    }
  };

  /** What the audit log keeps of a URL: its origin (a path may carry a token). */
  const originOf = (url: string) => new URL(url).origin;

  const load = async (caller: Caller, id: string) => {
    const w = await repo.findWebhook(db, caller.accountId, id);
    if (!w) throw notFound('Webhook');
    return w;
  };

  /**
   * Tests and redeliveries are the deliveries a caller queues at will: past `pendingPerWebhook`
   * waiting (pending or to be retried), a 429. Serialised per webhook so the bound holds under
   * concurrency.
   */
  const boundWaiting = async (tx: Parameters<AuditService['record']>[0], webhookId: string) => {
    await tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`webhook-deliveries:${webhookId}`]);
    if ((await repo.countWaiting(tx, webhookId)) >= deps.pendingPerWebhook)
      throw new AppError(
        'rate_limited',
        `This webhook already has ${deps.pendingPerWebhook} deliveries waiting; try again when they are sent`,
      );
  };

  const record = (
    tx: Parameters<AuditService['record']>[0],
    caller: Caller,
    action: string,
    id: string,
    details: Record<string, unknown>,
  ) =>
    deps.audit.record(tx, auditFromCaller(caller, { action, targetType: 'webhook', targetId: id, details }));

  return {
    eventTypes: () =>
      EVENT_TYPES.map((e) => ({ type: e.type, area: areaOf(e.type), description: e.description })),

    async create(caller: Caller, input: { url: string; events: string[]; description?: string | undefined }) {
      const box = needBox();
      await checkUrl(input.url);
      const id = randomUUID();
      const secret = generateSecret();
      await withTx(db, async (tx) => {
        // Serialises creations per account so the bound holds under concurrency.
        await tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`webhooks:${caller.accountId}`]);
        if ((await repo.countWebhooks(tx, caller.accountId)) >= deps.maxPerAccount)
          throw conflict(`An account has at most ${deps.maxPerAccount} webhooks`);
        await repo.insertWebhook(tx, {
          id,
          accountId: caller.accountId,
          url: input.url,
          events: [...new Set(input.events)],
          description: input.description ?? null,
          secretSealed: box.seal(secret, secretContext(id)),
          secretHint: secret.slice(-4),
        });
        await record(tx, caller, 'webhook.created', id, {
          origin: originOf(input.url),
          events: input.events,
        });
      });
      return { row: await load(caller, id), secret };
    },

    list: (caller: Caller) => repo.listWebhooks(db, caller.accountId),
    get: load,

    async update(caller: Caller, id: string, p: repo.WebhookPatch) {
      if (p.url !== undefined) await checkUrl(p.url);
      await withTx(db, async (tx) => {
        const w = await repo.findWebhook(tx, caller.accountId, id, { lock: true });
        if (!w) throw notFound('Webhook');
        await repo.patchWebhook(tx, id, { ...p, ...(p.events ? { events: [...new Set(p.events)] } : {}) });
        await record(tx, caller, 'webhook.updated', id, {
          ...(p.url !== undefined ? { origin: originOf(p.url) } : {}),
          ...(p.events !== undefined ? { events: p.events } : {}),
          ...(p.enabled !== undefined ? { enabled: p.enabled } : {}),
        });
      });
      if (p.enabled) deps.onQueued();
      return load(caller, id);
    },

    async remove(caller: Caller, id: string) {
      await withTx(db, async (tx) => {
        if (!(await repo.deleteWebhook(tx, caller.accountId, id))) throw notFound('Webhook');
        await record(tx, caller, 'webhook.deleted', id, {});
      });
    },

    async rotateSecret(caller: Caller, id: string, overlapS = DEFAULT_OVERLAP_S) {
      const box = needBox();
      const secret = generateSecret();
      await withTx(db, async (tx) => {
        const w = await repo.findWebhook(tx, caller.accountId, id, { lock: true });
        if (!w) throw notFound('Webhook');
        await repo.rotateSecret(tx, id, {
          secretSealed: box.seal(secret, secretContext(id)),
          secretHint: secret.slice(-4),
          previousSealed: overlapS > 0 ? w.secret_sealed : null,
          overlapS,
        });
        await record(tx, caller, 'webhook.secret_rotated', id, { overlap_s: overlapS });
      });
      return { row: await load(caller, id), secret };
    },

    async sendTest(caller: Caller, id: string) {
      const w = await load(caller, id);
      const deliveryId = randomUUID();
      await withTx(db, async (tx) => {
        await boundWaiting(tx, w.id);
        await repo.insertDeliveries(tx, [
          {
            id: deliveryId,
            webhookId: w.id,
            accountId: w.account_id,
            ...eventFields(testEvent(w.account_id, w.id)),
            maxAttempts: deps.maxAttempts,
          },
        ]);
      });
      deps.onQueued();
      return deliveryId;
    },

    async deliveries(
      caller: Caller,
      id: string,
      q: { status?: string; limit: number; after: PageCursor | null },
    ) {
      await load(caller, id);
      return repo.listDeliveries(db, { webhookId: id, ...q });
    },

    async delivery(caller: Caller, id: string, deliveryId: string) {
      await load(caller, id);
      const d = await repo.findDelivery(db, id, deliveryId);
      if (!d) throw notFound('Delivery');
      return d;
    },

    async redeliver(caller: Caller, id: string, deliveryId: string) {
      const newId = randomUUID();
      await withTx(db, async (tx) => {
        const w = await repo.findWebhook(tx, caller.accountId, id);
        if (!w) throw notFound('Webhook');
        const d = await repo.findDelivery(tx, id, deliveryId);
        if (!d) throw notFound('Delivery');
        if (d.status === 'pending') throw badRequest('This delivery is still pending');
        await boundWaiting(tx, id);
        await repo.insertDeliveries(tx, [
          {
            id: newId,
            webhookId: id,
            accountId: w.account_id,
            eventId: d.event_id,
            eventType: d.event_type,
            payload: d.payload,
            maxAttempts: deps.maxAttempts,
            redeliveryOf: d.id,
          },
        ]);
        await record(tx, caller, 'webhook.redelivered', id, { delivery_id: d.id, event_id: d.event_id });
      });
      deps.onQueued();
      return newId;
    },
  };
}

function eventFields(e: ReturnType<typeof testEvent>) {
  return { eventId: e.id, eventType: e.type, payload: payloadOf(e) };
}
