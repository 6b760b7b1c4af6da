/**
 * The delivery worker: claims due deliveries from the queue table (FOR UPDATE SKIP LOCKED, so any
 * number of replicas share the work), checks the destination again (ssrf.ts), signs and sends each
 * one outside any transaction, and records the outcome: succeeded; failed with the next attempt
 * after an exponential backoff with full jitter; dead after `max_attempts`. A claim is a lease: a
 * worker that dies mid-attempt leaves the row to be claimed again once the lease ends. A webhook
 * whose deliveries have failed continuously for `disableAfterMs` is disabled, with an audit
 * event `webhook.disabled`.
 *
 * Cost per delivery (ADR 0032): claims are one statement per batch; outcomes are gathered and
 * recorded one transaction per batch (not one per delivery); the destination check is shared by
 * the deliveries of one claimed batch with the same URL (made when the batch is sent, so still at
 * every attempt); connections are kept alive per checked address (webhooks.sender.ts); opened
 * secrets are cached by their sealed value (a rotation seals a new value: the cache follows).
 */
import type { Logger } from 'pino';
import type { SecretBox } from '../../crypto/secret-box.ts';
import { type Db, withTx } from '../../db/pool.ts';
import type { AuditService } from '../audit/audit.service.ts';
import { checkDestination, type Destination, type DestinationPolicy, DestinationRefused } from './ssrf.ts';
import * as queue from './webhooks.queue.ts';
import * as repo from './webhooks.repo.ts';
import { type AttemptResult, ConnectionPools, sendDelivery, signatureHeader } from './webhooks.sender.ts';

export const secretContext = (webhookId: string) => `webhook-secret:${webhookId}`;

export type WorkerSettings = {
  timeoutMs: number;
  retryBaseMs: number;
  retryMaxMs: number;
  disableAfterMs: number;
  concurrency: number;
  /** Deliveries of one account in flight at most (the rest stay free for other accounts). */
  perAccount: number;
  pollMs: number;
};

/** Full jitter: a random wait in [0, min(cap, base·2^(attempt-1))). */
export function backoffMs(attempt: number, base: number, cap: number, random = Math.random): number {
  const ceiling = Math.min(cap, base * 2 ** Math.min(attempt - 1, 30));
  return Math.floor(random() * ceiling);
}

/** `p`, or a rejection when it takes longer than `ms` (the work itself may go on, unheeded). */
function withDeadline<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms (resolving the destination)`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
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
  const inFlightOf = new Map<string, number>();
  const attempts = new Set<Promise<void>>();
  let stopped = true;
  let timer: NodeJS.Timeout | undefined;
  let claiming = false;
  let again = false;
  const pools = new ConnectionPools();

  // Opened secrets by (webhook, sealed value): a rotation or a new webhook brings a new sealed
  // value, so the cache never serves a replaced secret. Bounded; cleared when full.
  const opened = new Map<string, string>();
  const open = (webhookId: string, sealed: string): string => {
    if (!deps.box) throw new Error('no master key: webhook secrets cannot be opened');
    const key = `${webhookId}:${sealed}`;
    let secret = opened.get(key);
    if (secret === undefined) {
      secret = deps.box.open(sealed, secretContext(webhookId));
      if (opened.size >= 1_000) opened.clear();
      opened.set(key, secret);
    }
    return secret;
  };
  const secretsOf = (d: queue.ClaimedDelivery): string[] => {
    const out = [open(d.webhook_id, d.secret_sealed)];
    if (
      d.previous_secret_sealed &&
      d.previous_secret_expires_at &&
      d.previous_secret_expires_at.getTime() > Date.now()
    )
      out.push(open(d.webhook_id, d.previous_secret_sealed));
    return out;
  };

  // --- Outcomes: gathered, recorded one transaction per batch -----------------------------------
  let outcomes: queue.Outcome[] = [];
  let recording: Promise<void> | null = null;

  const recordBatch = async (batch: queue.Outcome[]) => {
    const lastError = new Map<string, string | null>();
    for (const o of batch) if (!o.ok) lastError.set(o.webhookId, o.error);
    await withTx(deps.db, async (tx) => {
      await queue.asyncCommit(tx);
      // The webhooks' rows first (in id order), then the deliveries': the order a DELETE of a
      // webhook (its cascade) takes them in, so the two never deadlock.
      const failing = await queue.noteStreaks(tx, batch);
      await queue.recordOutcomes(tx, batch);
      for (const w of failing) {
        if (!w.enabled || !w.failing_since) continue;
        if (Date.now() - w.failing_since.getTime() < cfg.disableAfterMs) continue;
        const reason =
          `Every delivery failed since ${w.failing_since.toISOString()} (${w.consecutive_failures} in a row); last: ${lastError.get(w.id) ?? 'failure'}`.slice(
            0,
            500,
          );
        await repo.disableWebhook(tx, w.id, queue.pgText(reason) ?? '');
        await deps.audit.record(tx, {
          action: 'webhook.disabled',
          actorType: 'system',
          accountId: w.account_id,
          outcome: 'failure',
          targetType: 'webhook',
          targetId: w.id,
          details: {
            consecutive_failures: w.consecutive_failures,
            failing_since: w.failing_since.toISOString(),
          },
        });
        log.warn({ webhook_id: w.id }, 'webhook disabled after failing continuously');
      }
    });
  };

  /**
   * Records one batch; when the batch is refused, each outcome alone, so one outcome the database
   * will not take never holds back the others (of any account). An outcome refused alone is
   * dropped and logged: its delivery is due again when its lease ends. Throws only for a batch of
   * one.
   */
  const recordIsolated = async (batch: queue.Outcome[]) => {
    try {
      await recordBatch(batch);
      return;
    } catch (err) {
      if (batch.length === 1) throw err;
    }
    for (const o of batch)
      await recordBatch([o]).catch((err: Error) =>
        log.error(
          { err: { message: err.message }, delivery_id: o.deliveryId },
          'webhook outcome not recorded; the delivery is due again after its lease',
        ),
      );
  };

  /** Records every gathered outcome, a batch at a time (bounded retries); resolves when done. */
  const record = (): Promise<void> => {
    if (recording) return recording;
    recording = (async () => {
      while (outcomes.length) {
        const batch = outcomes;
        outcomes = [];
        for (let tries = 1; ; tries++) {
          try {
            await recordIsolated(batch);
            break;
          } catch (err) {
            log.error(
              { err: { message: (err as Error).message }, tries },
              'webhook outcome not recorded; the delivery is due again after its lease',
            );
            if (tries >= 3) break;
            await new Promise((r) => setTimeout(r, 100 * tries));
          }
        }
      }
    })().finally(() => {
      recording = null;
      if (!stopped) kick();
    });
    return recording;
  };

  // A burst's outcomes are recorded together: at once when nothing else is in flight, else after
  // a short gathering window (the outcome is not on the delivery's path: the receiver has it).
  let recordTimer: NodeJS.Timeout | undefined;
  const scheduleRecord = () => {
    if (inFlight === 0) {
      clearTimeout(recordTimer);
      recordTimer = undefined;
      setImmediate(() => void record());
    } else if (!recordTimer) {
      recordTimer = setTimeout(() => {
        recordTimer = undefined;
        void record();
      }, 20);
      recordTimer.unref();
    }
  };

  const attempt = async (d: queue.ClaimedDelivery, destination: Promise<Destination>): Promise<void> => {
    let result: AttemptResult;
    const started = Date.now();
    try {
      // The deadline covers the destination check (a slow DNS answer) and the request together.
      const dest = await withDeadline(destination, cfg.timeoutMs);
      const t = Math.floor(Date.now() / 1000);
      result = await sendDelivery({
        destination: dest,
        agent: pools.agentFor(d.account_id, dest),
        body: d.payload,
        timeoutMs: Math.max(1, cfg.timeoutMs - (Date.now() - started)),
        headers: {
          'bulwark-signature': signatureHeader(secretsOf(d), d.payload, t),
          'bulwark-delivery': d.id,
          'bulwark-event': d.event_type,
        },
      });
    } catch (err) {
      const refused = err instanceof DestinationRefused;
      if (refused && err.address)
        log.info(
          { delivery_id: d.id, webhook_id: d.webhook_id, address: err.address },
          'webhook destination refused',
        );
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
    outcomes.push({
      deliveryId: d.id,
      webhookId: d.webhook_id,
      ok: result.ok,
      status: result.ok ? 'succeeded' : dead ? 'dead' : 'failed',
      nextAttemptInMs: result.ok || dead ? null : backoffMs(d.attempts, cfg.retryBaseMs, cfg.retryMaxMs),
      statusCode: result.statusCode,
      error: result.error,
      durationMs: result.durationMs,
      responseBody: result.responseBody,
    });
  };

  const launch = (d: queue.ClaimedDelivery, destination: Promise<Destination>) => {
    inFlight++;
    inFlightOf.set(d.account_id, (inFlightOf.get(d.account_id) ?? 0) + 1);
    const p = attempt(d, destination)
      .catch((err: Error) =>
        log.error({ err: { message: err.message }, delivery_id: d.id }, 'webhook attempt failed'),
      )
      .finally(() => {
        inFlight--;
        const n = (inFlightOf.get(d.account_id) ?? 1) - 1;
        if (n > 0) inFlightOf.set(d.account_id, n);
        else inFlightOf.delete(d.account_id);
        attempts.delete(p);
        scheduleRecord();
      });
    attempts.add(p);
  };

  /** Claims what is due (within the concurrency bound) and launches it; returns how many. */
  const claimRound = async (): Promise<number> => {
    const room = cfg.concurrency - inFlight;
    if (room <= 0) return 0;
    const claimed = await queue.claimDue(deps.db, room, cfg.timeoutMs + 30_000, {
      cap: Math.min(cfg.perAccount, cfg.concurrency),
      busy: inFlightOf,
    });
    // One check per URL per batch, made now: every attempt is still checked when it is sent.
    const checks = new Map<string, Promise<Destination>>();
    for (const d of claimed) {
      if (d.status === 'dead') {
        log.warn({ delivery_id: d.id }, 'webhook delivery dead: its last attempt left no outcome');
        continue;
      }
      let check = checks.get(d.url);
      if (!check) {
        check = checkDestination(d.url, deps.policy());
        check.catch(() => {});
        checks.set(d.url, check);
      }
      launch(d, check);
    }
    return claimed.length;
  };

  /** Sleeps until the next due delivery (at most the poll interval). */
  const schedule = async () => {
    clearTimeout(timer);
    if (stopped) return;
    // Attempts in flight kick again when their outcomes are recorded.
    const next = inFlight > 0 ? null : await queue.nextDueAt(deps.db).catch(() => null);
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
          const room = cfg.concurrency - inFlight;
          const n = await claimRound();
          // A full batch: more may be waiting (as soon as there is room).
          if (n > 0 && n === room && inFlight < cfg.concurrency) again = true;
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

  const settle = async () => {
    await Promise.allSettled([...attempts]);
    await record();
  };

  return {
    kick,
    start() {
      stopped = false;
      kick();
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await settle();
      clearTimeout(recordTimer);
      pools.close();
    },
    async runOnce() {
      const n = await claimRound();
      await settle();
      return n;
    },
  };
}
