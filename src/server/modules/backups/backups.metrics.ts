import type { Queryable } from '../../db/pool.ts';
import type { MetricsRegistry } from '../metrics/registry.ts';

/** At most this many databases in one scrape (a label value each). */
const MAX_SERIES = 10_000;

/**
 * `bulwark_backup_last_good_age_seconds{database_id}`: seconds since each ready database's
 * latest completed backup (databases without one are absent: `bulwark_backup_missing` counts
 * them), and `bulwark_backups{status}`.
 */
export function registerBackupCollectors(registry: MetricsRegistry, db: Queryable): void {
  registry.collect(async () => {
    const ages = await db.query<{ database_id: string; age_s: number | null }>(
      `SELECT d.id AS database_id,
              extract(epoch FROM now() - (SELECT max(b.completed_at) FROM backups b
                                           WHERE b.database_id = d.id AND b.status = 'completed'
                                             AND b.deleted_at IS NULL))::float8 AS age_s
         FROM databases d WHERE d.status = 'ready' AND d.kind = 'hosted' AND d.account_id IS NOT NULL ORDER BY d.id LIMIT $1`,
      [MAX_SERIES],
    );
    const counts = await db.query<{ status: string; count: number }>(
      `SELECT status, count(*)::int AS count FROM backups WHERE deleted_at IS NULL GROUP BY status`,
    );
    return [
      {
        name: 'bulwark_backup_last_good_age_seconds',
        help: "Seconds since each ready database's latest completed backup",
        type: 'gauge' as const,
        samples: ages.rows
          .filter((r) => r.age_s !== null)
          .map((r) => ({ labels: { database_id: r.database_id }, value: r.age_s ?? 0 })),
      },
      {
        name: 'bulwark_backup_missing',
        help: 'Ready databases without any completed backup',
        type: 'gauge' as const,
        samples: [{ value: ages.rows.filter((r) => r.age_s === null).length }],
      },
      {
        name: 'bulwark_backups',
        help: 'Backups by status',
        type: 'gauge' as const,
        samples: ['pending', 'running', 'completed', 'failed'].map((status) => ({
          labels: { status },
          value: counts.rows.find((r) => r.status === status)?.count ?? 0,
        })),
      },
    ];
  });
}
