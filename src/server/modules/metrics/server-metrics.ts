import type { Counter, MetricsRegistry } from './registry.ts';

/**
 * The counters other modules increment. Built once per server (main.ts) and passed in the app deps:
 *   deps.metrics.authFailures.inc({ reason: 'unknown_key' })   // reason: a short fixed word
 *   deps.metrics.rateLimited.inc({ scope: 'key' })
 */
export type ServerMetrics = {
  registry: MetricsRegistry;
  /** HTTP requests by method, route pattern (never the raw URL) and status code (onResponse hook). */
  httpRequests: Counter;
  /** Refused credentials: API keys, agent tokens, the metrics token. Label `reason` (fixed words). */
  authFailures: Counter;
  /** Requests answered 429. Label `scope` (e.g. ip, key). */
  rateLimited: Counter;
};

export function createServerMetrics(registry: MetricsRegistry): ServerMetrics {
  return {
    registry,
    httpRequests: registry.counter(
      'bulwark_http_requests_total',
      'HTTP requests by route pattern and status',
      ['method', 'route', 'status'],
    ),
    authFailures: registry.counter('bulwark_auth_failures_total', 'Refused credentials by kind and reason', [
      'kind',
      'reason',
    ]),
    rateLimited: registry.counter('bulwark_rate_limit_hits_total', 'Requests refused by a rate limit', [
      'scope',
    ]),
  };
}
