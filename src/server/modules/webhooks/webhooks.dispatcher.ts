/**
 * The dispatcher: turns committed events into deliveries, never inside the request that caused
 * them. Its source is the chained audit log, read after a durable cursor (`webhook_dispatch`, the
 * last audit seq dispatched: seq is given only to committed events, in increasing order, so
 * nothing committed late is skipped), and the `event_outbox` rows not yet taken. One pass is one
 * transaction: it locks the cursor row (replicas take turns), maps events to types, builds the
 * payloads of those an enabled webhook subscribes to, inserts one delivery per (subscribed enabled
 * webhook, event) in one statement and moves the cursor.
 *
 * Woken when this process's audit chainer chains events, on NOTIFY `bulwark_events` (outbox rows),
 * and by a poll (the other replicas' events, a lost notification).
 */
import type { Logger } from 'pino';
import { type Db, withTx } from '../../db/pool.ts';
import { eventFromAudit, eventFromOutbox, subscribed, type WebhookEvent } from './webhooks.events.ts';
import * as queue from './webhooks.queue.ts';
import * as repo from './webhooks.repo.ts';

const BATCH = 500;
/** The largest body sent; bigger event data is replaced by a note (the audit log has it all). */
export const MAX_PAYLOAD_BYTES = 60_000;

export function payloadOf(event: WebhookEvent): string {
  const body = JSON.stringify(event);
  if (Buffer.byteLength(body) <= MAX_PAYLOAD_BYTES) return body;
  return JSON.stringify({ ...event, data: { truncated: true, note: 'too large; see the audit log' } });
}

export type Dispatcher = {
  kick(): void;
  /** Dispatches everything available now (tests, benches). Returns deliveries queued. */
  flush(): Promise<number>;
  start(): void;
  stop(): Promise<void>;
};

export function createDispatcher(deps: {
  db: Db;
  log: Logger;
  maxAttempts: number;
  pollMs: number;
  /** Called after a pass queued deliveries (wakes the delivery worker). */
  onQueued: () => void;
}): Dispatcher {
  let running: Promise<number> | null = null;
  let rerun = false;
  let timer: NodeJS.Timeout | undefined;
  let stopped = true;

  /** One pass: returns [queued, more waiting]. */
  const pass = () =>
    withTx(deps.db, async (tx) => {
      await queue.asyncCommit(tx);
      const cursor = await repo.lockCursor(tx);
      const audit = await repo.chainedAfter(tx, cursor, BATCH);
      const outbox = await repo.lockOutbox(tx, BATCH);
      // Only events some enabled webhook subscribes to are built (scrubbed, SQL redacted,
      // serialised): most accounts have no webhook. The INSERT below still decides who gets what.
      const accounts = new Set<string>();
      for (const row of [...audit, ...outbox]) if (row.account_id) accounts.add(row.account_id);
      const subs = await repo.subscriptionsOf(tx, [...accounts]);
      const wanted = (accountId: string, type: string) =>
        subs.get(accountId)?.some((events) => subscribed(events, type)) ?? false;
      const events: WebhookEvent[] = [];
      for (const row of audit) {
        const e = eventFromAudit(row, wanted);
        if (e) events.push(e);
      }
      for (const row of outbox) {
        const e = eventFromOutbox(row, wanted);
        if (e) events.push(e);
      }
      // One INSERT…SELECT for the whole pass: the subscriptions are matched in the database, and
      // each payload is sent once, whatever the number of webhooks.
      const queued = await queue.queueEvents(
        tx,
        events.map((e) => ({ accountId: e.account_id, eventId: e.id, type: e.type, payload: payloadOf(e) })),
        deps.maxAttempts,
      );
      const last = audit.at(-1);
      if (last) await repo.advanceCursor(tx, Number(last.seq));
      await repo.markOutboxTaken(
        tx,
        outbox.map((o) => o.id),
      );
      return [queued, audit.length === BATCH || outbox.length === BATCH] as const;
    });

  const drain = async (): Promise<number> => {
    let total = 0;
    for (;;) {
      rerun = false;
      const [queued, more] = await pass();
      total += queued;
      if (queued > 0) deps.onQueued();
      if (!more && !rerun) return total;
    }
  };

  const run = (): Promise<number> => {
    if (running) {
      rerun = true;
      return running;
    }
    running = drain().finally(() => {
      running = null;
    });
    return running;
  };

  const kick = () => {
    if (stopped) return;
    run().catch((err: Error) => deps.log.error({ err: { message: err.message } }, 'webhook dispatch failed'));
  };

  return {
    kick,
    async flush() {
      if (running) await running.catch(() => 0);
      return run();
    },
    start() {
      stopped = false;
      timer = setInterval(kick, deps.pollMs);
      timer.unref();
      kick();
    },
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running?.catch(() => 0);
    },
  };
}
