/**
 * The delivery worker: claims due deliveries from the queue table (FOR UPDATE SKIP LOCKED, so any
 * number of replicas share the work), checks the destination again (ssrf.ts), signs and sends each
 * one outside any transaction, and records the outcome: succeeded; failed with the next attempt
 * after an exponential backoff with full jitter; dead after `max_attempts`. A claim is a lease: a
 * worker that dies mid-attempt leaves the row to be claimed again once the lease ends. A webhook
 * whose deliveries have failed continuously for `disableAfterMs` is disabled, with an audit
 * event `webhook.disabled`.
 */
import type { Logger } from 'pino';
import type { SecretBox } from '../../crypto/secret-box.ts';
import { type Db, withTx } from '../../db/pool.ts';
import type { AuditService } from '../audit/audit.service.ts';
import { checkDestination, type DestinationPolicy, DestinationRefused } from './ssrf.ts';
import * as repo from './webhooks.repo.ts';
import { type AttemptResult, sendDelivery, signatureHeader } from './webhooks.sender.ts';

export const secretContext = (webhookId: string) => `webhook-secret:${webhookId}`;

export type WorkerSettings = {
  timeoutMs: number;
  retryBaseMs: number;
  retryMaxMs: number;
  disableAfterMs: number;
  concurrency: number;
  pollMs: number;
};

/** Full jitter: a random wait in [0, min(cap, base·2^(attempt-1))). */
export function backoffMs(attempt: number, base: number, cap: number, random = Math.random): number {
  const ceiling = Math.min(cap, base * 2 ** Math.min(attempt - 1, 30));
  return Math.floor(random() * ceiling);
}

export type DeliveryWorker = {
  kick(): void;
  start(): void;
  stop(): Promise<void>;
  /** Runs one claim-and-send round and waits for its attempts (tests). */
  runOnce(): Promise<number>;
};

export function createDeliveryWorker(deps: {
  db: Db;
  box: SecretBox | null;
  log: Logger;
  audit: Pick<AuditService, 'record'>;
  policy: () => DestinationPolicy;
  settings: WorkerSettings;
}): DeliveryWorker {
  const { settings: cfg, log } = deps;
  let inFlight = 0;
  const attempts = new Set<Promise<void>>();
  let stopped = true;
  let timer: NodeJS.Timeout | undefined;
  let claiming = false;
  let again = false;

  const secretsOf = (d: repo.ClaimedDelivery): string[] => {
    if (!deps.box) throw new Error('no master key: webhook secrets cannot be opened');
    const out = [deps.box.open(d.secret_sealed, secretContext(d.webhook_id))];
    if (
      d.previous_secret_sealed &&
      d.previous_secret_expires_at &&
      d.previous_secret_expires_at.getTime() > Date.now()
    )
      out.push(deps.box.open(d.previous_secret_sealed, secretContext(d.webhook_id)));
    return out;
  };

  const attempt = async (d: repo.ClaimedDelivery): Promise<void> => {
    let result: AttemptResult;
    try {
      const destination = await checkDestination(d.url, deps.policy());
      const t = Math.floor(Date.now() / 1000);
      result = await sendDelivery({
        destination,
        body: d.payload,
        timeoutMs: cfg.timeoutMs,
        headers: {
          'bulwark-signature': signatureHeader(secretsOf(d), d.payload, t),
          'bulwark-delivery': d.id,
          'bulwark-event': d.event_type,
        },
      });
    } catch (err) {
      const refused = err instanceof DestinationRefused;
      result = {
        ok: false,
        statusCode: null,
        error: (refused ? `destination refused: ${(err as Error).message}` : (err as Error).message).slice(
          0,
          500,
        ),
        durationMs: 0,
        responseBody: null,
      };
    }
    const dead = !result.ok && d.attempts >= d.max_attempts;
    await withTx(deps.db, async (tx) => {
      // The webhook's row first, then the delivery's: the order a DELETE of the webhook (its
      // cascade) takes them in, so the two never deadlock.
      const w = await repo.noteOutcome(tx, d.webhook_id, result.ok);
      await repo.recordAttempt(tx, d.id, {
        status: result.ok ? 'succeeded' : dead ? 'dead' : 'failed',
        nextAttemptInMs: result.ok || dead ? null : backoffMs(d.attempts, cfg.retryBaseMs, cfg.retryMaxMs),
        statusCode: result.statusCode,
        error: result.error,
        durationMs: result.durationMs,
        responseBody: result.responseBody,
      });
      if (!w || result.ok || !w.enabled || !w.failing_since) return;
      if (Date.now() - w.failing_since.getTime() < cfg.disableAfterMs) return;
      const reason =
        `Every delivery failed since ${w.failing_since.toISOString()} (${w.consecutive_failures} in a row); last: ${result.error ?? 'failure'}`.slice(
          0,
          500,
        );
      await repo.disableWebhook(tx, d.webhook_id, reason);
      await deps.audit.record(tx, {
        action: 'webhook.disabled',
        actorType: 'system',
        accountId: w.account_id,
        outcome: 'failure',
        targetType: 'webhook',
        targetId: d.webhook_id,
        details: {
          consecutive_failures: w.consecutive_failures,
          failing_since: w.failing_since.toISOString(),
        },
      });
      log.warn({ webhook_id: d.webhook_id }, 'webhook disabled after failing continuously');
    });
  };

  const launch = (d: repo.ClaimedDelivery) => {
    inFlight++;
    const p = attempt(d)
      .catch((err: Error) =>
        log.error({ err: { message: err.message }, delivery_id: d.id }, 'webhook attempt failed'),
      )
      .finally(() => {
        inFlight--;
        attempts.delete(p);
        if (!stopped) kick();
      });
    attempts.add(p);
  };

  /** Claims what is due (within the concurrency bound) and launches it; returns how many. */
  const claimRound = async (): Promise<number> => {
    const room = cfg.concurrency - inFlight;
    if (room <= 0) return 0;
    const claimed = await repo.claimDue(deps.db, room, cfg.timeoutMs + 30_000);
    for (const d of claimed) launch(d);
    return claimed.length;
  };

  /** Sleeps until the next due delivery (at most the poll interval). */
  const schedule = async () => {
    clearTimeout(timer);
    if (stopped) return;
    const next = await repo.nextDueAt(deps.db).catch(() => null);
    const wait = next ? Math.max(0, Math.min(cfg.pollMs, next.getTime() - Date.now())) : cfg.pollMs;
    clearTimeout(timer);
    if (stopped) return;
    timer = setTimeout(kick, wait);
    timer.unref();
  };

  function kick(): void {
    if (stopped) return;
    if (claiming) {
      again = true;
      return;
    }
    claiming = true;
    void (async () => {
      try {
        do {
          again = false;
          const n = await claimRound();
          if (n > 0 && inFlight < cfg.concurrency) again = true;
        } while (again && !stopped);
        await schedule();
      } catch (err) {
        log.error({ err: { message: (err as Error).message } }, 'webhook claim failed');
        timer = setTimeout(kick, cfg.pollMs);
        timer.unref();
      } finally {
        claiming = false;
      }
    })();
  }

  return {
    kick,
    start() {
      stopped = false;
      kick();
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await Promise.allSettled([...attempts]);
    },
    async runOnce() {
      const n = await claimRound();
      await Promise.allSettled([...attempts]);
      return n;
    },
  };
}
