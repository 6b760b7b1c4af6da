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
>;

export type WebhooksStack = {
  service: WebhooksService;
  dispatcher: Dispatcher;
  worker: DeliveryWorker;
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
  return {
    service,
    dispatcher,
    worker,
    start() {
      dispatcher.start();
      worker.start();
    },
    async close() {
      unsubscribe();
      await dispatcher.stop();
      await worker.stop();
    },
  };
}
