/**
 * The webhooks' moving parts for one server process (built in main.ts): the service behind the
 * routes, the dispatcher (committed events → deliveries) and the delivery worker (the queue).
 */
import type { Logger } from 'pino';
import type { ServerConfig } from '../../config.ts';
import type { SecretBox } from '../../crypto/secret-box.ts';
import type { PgListener } from '../../db/pg-listener.ts';
import type { Db } from '../../db/pool.ts';
import type { AuditChainer } from '../audit/audit.chainer.ts';
import type { AuditService } from '../audit/audit.service.ts';
import { EVENTS_CHANNEL } from '../requests/requests.deliveries.repo.ts';
import { type DestinationPolicy, defaultResolver, parseAllowedDestinations, type Resolver } from './ssrf.ts';
import { createDispatcher, type Dispatcher } from './webhooks.dispatcher.ts';
import { pruneFinished } from './webhooks.queue.ts';
import { createWebhooksService, type WebhooksService } from './webhooks.service.ts';
import { createDeliveryWorker, type DeliveryWorker } from './webhooks.worker.ts';

export type WebhookConfig = Pick<
  ServerConfig,
  | 'webhookAllowedHosts'
  | 'webhookAllowedPorts'
  | 'webhookTimeoutMs'
  | 'webhookMaxAttempts'
  | 'webhookRetryBaseMs'
  | 'webhookRetryMaxMs'
  | 'webhookDisableAfterSeconds'
  | 'webhookMaxPerAccount'
  | 'webhookPollMs'
  | 'webhookConcurrency'
  | 'webhookConcurrencyPerAccount'
  | 'webhookPendingPerWebhook'
  | 'webhookDeliveryRetentionDays'
>;

/** How often finished deliveries past the retention are pruned, and how many at most per run. */
const PRUNE_EVERY_MS = 60 * 60 * 1000;
const PRUNE_BATCH = 1_000;
const PRUNE_MAX_PER_RUN = 50_000;

export type WebhooksStack = {
  service: WebhooksService;
  dispatcher: Dispatcher;
  worker: DeliveryWorker;
  /** Deletes finished deliveries past the retention (hourly; tests call it). Returns how many. */
  prune(): Promise<number>;
  start(): void;
  close(): Promise<void>;
};

export function createWebhooksStack(deps: {
  config: WebhookConfig;
  db: Db;
  box: SecretBox | null;
  log: Logger;
  audit: Pick<AuditService, 'record'>;
  chainer: Pick<AuditChainer, 'onChained'>;
  listener: Pick<PgListener, 'on'>;
  /** Tests inject their DNS answers; default: dns.lookup with all: true. */
  resolver?: Resolver;
}): WebhooksStack {
  const { config } = deps;
  const allowed = parseAllowedDestinations(config.webhookAllowedHosts);
  const policy: DestinationPolicy = {
    allowed,
    ports: config.webhookAllowedPorts,
    resolver: deps.resolver ?? defaultResolver,
  };
  const worker = createDeliveryWorker({
    db: deps.db,
    box: deps.box,
    log: deps.log,
    audit: deps.audit,
    policy: () => policy,
    settings: {
      timeoutMs: config.webhookTimeoutMs,
      retryBaseMs: config.webhookRetryBaseMs,
      retryMaxMs: config.webhookRetryMaxMs,
      disableAfterMs: config.webhookDisableAfterSeconds * 1000,
      concurrency: config.webhookConcurrency,
      perAccount: config.webhookConcurrencyPerAccount,
      pollMs: config.webhookPollMs,
    },
  });
  const dispatcher = createDispatcher({
    db: deps.db,
    log: deps.log,
    maxAttempts: config.webhookMaxAttempts,
    pollMs: config.webhookPollMs,
    onQueued: () => worker.kick(),
  });
  const service = createWebhooksService({
    db: deps.db,
    box: deps.box,
    audit: deps.audit,
    policy: () => policy,
    maxPerAccount: config.webhookMaxPerAccount,
    maxAttempts: config.webhookMaxAttempts,
    pendingPerWebhook: config.webhookPendingPerWebhook,
    log: deps.log,
    onQueued: () => worker.kick(),
  });
  const unsubscribe = deps.chainer.onChained(() => dispatcher.kick());
  deps.listener.on(EVENTS_CHANNEL, () => dispatcher.kick());

  // The delivery log is bounded in time: a batch at a time (short transactions), a bounded run.
  let pruneTimer: NodeJS.Timeout | undefined;
  let pruning: Promise<number> | null = null;
  const prune = (): Promise<number> => {
    pruning ??= (async () => {
      let total = 0;
      for (;;) {
        const n = await pruneFinished(deps.db, config.webhookDeliveryRetentionDays, PRUNE_BATCH);
        total += n;
        if (n < PRUNE_BATCH || total >= PRUNE_MAX_PER_RUN) break;
      }
      if (total > 0) deps.log.info({ deleted: total }, 'webhook deliveries past their retention deleted');
      return total;
    })().finally(() => {
      pruning = null;
    });
    return pruning;
  };

  return {
    service,
    dispatcher,
    worker,
    prune,
    start() {
      dispatcher.start();
      worker.start();
      pruneTimer = setInterval(
        () =>
          void prune().catch((err: Error) =>
            deps.log.error({ err: { message: err.message } }, 'webhook delivery pruning failed'),
          ),
        PRUNE_EVERY_MS,
      );
      pruneTimer.unref();
    },
    async close() {
      clearInterval(pruneTimer);
      await pruning?.catch(() => 0);
      unsubscribe();
      await dispatcher.stop();
      await worker.stop();
    },
  };
}
