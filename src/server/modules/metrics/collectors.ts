/**
 * Scrape-time series read from the control database. Only series whose data exists are emitted.
 * Last good backup age per database is in modules/backups/backups.metrics.ts. Later features plug
 * in here (do not emit placeholders or fake zeros before they exist):
 *   - pending approvals (requests awaiting approval) — with the approvals feature;
 *   - webhook delivery failures — with webhooks (a counter in server-metrics.ts).
 */
import type { Queryable } from '../../db/pool.ts';
import { readyReserves } from '../databases/databases.reserves.repo.ts';
import * as repo from './metrics.repo.ts';
import type { GaugeFamily, MetricsRegistry } from './registry.ts';

export function registerCoreCollectors(registry: MetricsRegistry, db: Queryable): void {
  registry.collect(async (): Promise<GaugeFamily[]> => {
    const rows = await repo.jobQueueStats(db);
    return [
      {
        name: 'bulwark_jobs',
        help: 'Jobs waiting or running, by status',
        type: 'gauge',
        samples: ['queued', 'running'].map((status) => ({
          labels: { status },
          value: rows.find((r) => r.status === status)?.count ?? 0,
        })),
      },
      {
        name: 'bulwark_jobs_oldest_age_seconds',
        help: 'Age of the oldest job in each status (absent when there is none)',
        type: 'gauge',
        samples: rows
          .filter((r) => r.oldest_age_s !== null)
          .map((r) => ({ labels: { status: r.status }, value: r.oldest_age_s ?? 0 })),
      },
    ];
  });

  registry.collect(async () => [
    {
      name: 'bulwark_agent_heartbeat_age_seconds',
      help: 'Seconds since each active node last heard from its agent',
      type: 'gauge',
      samples: (await repo.heartbeatAges(db)).map((n) => ({ labels: { node: n.name }, value: n.age_s })),
    },
  ]);

  registry.collect(async (): Promise<GaugeFamily[]> => {
    const pools = await repo.warmPools(db);
    if (pools.length === 0) return [];
    return [
      {
        name: 'bulwark_node_warm_pool_spares',
        help: "Spare databases ready in each node's warm pool (as its agent last reported)",
        type: 'gauge',
        samples: pools.map((n) => ({ labels: { node: n.name }, value: n.ready })),
      },
      {
        name: 'bulwark_node_warm_pool_size',
        help: "Spare databases each node's warm pool keeps (0: off)",
        type: 'gauge',
        samples: pools.map((n) => ({ labels: { node: n.name }, value: n.size })),
      },
    ];
  });

  registry.collect(
    async (): Promise<GaugeFamily[]> => [
      {
        name: 'bulwark_node_reserved_databases',
        help: 'Reserved databases ready on each active node, for creates to take (ADR 0037)',
        type: 'gauge',
        samples: (await readyReserves(db)).map((n) => ({ labels: { node: n.name }, value: n.ready })),
      },
    ],
  );

  registry.collect(async (): Promise<GaugeFamily[]> => {
    const a = await repo.auditChainStats(db);
    const out: GaugeFamily[] = [
      {
        name: 'bulwark_audit_chain_length',
        help: 'Sequence number of the audit chain head',
        type: 'gauge',
        samples: [{ value: a.head_seq }],
      },
      {
        name: 'bulwark_audit_pending_events',
        help: 'Committed audit events not chained yet',
        type: 'gauge',
        samples: [{ value: a.pending }],
      },
    ];
    if (a.oldest_pending_age_s !== null) {
      out.push({
        name: 'bulwark_audit_chain_lag_seconds',
        help: 'Age of the oldest unchained audit event',
        type: 'gauge',
        samples: [{ value: a.oldest_pending_age_s }],
      });
    }
    return out;
  });
}
