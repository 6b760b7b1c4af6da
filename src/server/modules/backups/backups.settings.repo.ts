import type { Queryable } from '../../db/pool.ts';

/** One level of settings as stored (null: inherit the next level). */
export type StoredSettings = {
  enabled: boolean | null;
  schedule_minute: number | null;
  retention_days: number | null;
  rpo_hours: number | null;
  drill_interval_days: number | null;
};

/** What applies to a database: its own setting, else its account's, else the server's default. */
export type EffectiveSettings = {
  enabled: boolean;
  schedule_minute: number;
  retention_days: number;
  rpo_hours: number;
  drill_interval_days: number;
};

const FIELDS = ['enabled', 'schedule_minute', 'retention_days', 'rpo_hours', 'drill_interval_days'] as const;

/** The account's row (databaseId null) or the database's. */
export async function findSettings(
  db: Queryable,
  accountId: string,
  databaseId: string | null,
): Promise<StoredSettings | null> {
  const r = await db.query<StoredSettings>(
    `SELECT ${FIELDS.join(', ')} FROM backup_settings
      WHERE account_id = $1 AND database_id IS NOT DISTINCT FROM $2::uuid`,
    [accountId, databaseId],
  );
  return r.rows[0] ?? null;
}

export async function upsertSettings(
  db: Queryable,
  accountId: string,
  databaseId: string | null,
  s: StoredSettings,
): Promise<void> {
  const values = [
    accountId,
    databaseId,
    s.enabled,
    s.schedule_minute,
    s.retention_days,
    s.rpo_hours,
    s.drill_interval_days,
  ];
  const conflict =
    databaseId === null
      ? 'ON CONFLICT (account_id) WHERE database_id IS NULL'
      : 'ON CONFLICT (database_id) WHERE database_id IS NOT NULL';
  await db.query(
    `INSERT INTO backup_settings (account_id, database_id, ${FIELDS.join(', ')})
     VALUES ($1, $2, $3, $4, $5, $6, $7)
     ${conflict} DO UPDATE SET enabled = EXCLUDED.enabled, schedule_minute = EXCLUDED.schedule_minute,
       retention_days = EXCLUDED.retention_days, rpo_hours = EXCLUDED.rpo_hours,
       drill_interval_days = EXCLUDED.drill_interval_days, updated_at = now()`,
    values,
  );
}

/** SQL of the effective settings of database `d` ($1…$5: the server's defaults). */
const EFFECTIVE = `coalesce(ds.enabled, acc.enabled, $1::boolean) AS enabled,
  coalesce(ds.schedule_minute, acc.schedule_minute, $2::int) AS schedule_minute,
  coalesce(ds.retention_days, acc.retention_days, $3::int) AS retention_days,
  coalesce(ds.rpo_hours, acc.rpo_hours, $4::int) AS rpo_hours,
  coalesce(ds.drill_interval_days, acc.drill_interval_days, $5::int) AS drill_interval_days`;
const SETTINGS_JOINS = `LEFT JOIN backup_settings acc ON acc.account_id = d.account_id AND acc.database_id IS NULL
  LEFT JOIN backup_settings ds ON ds.database_id = d.id`;

const defaultsParams = (d: EffectiveSettings) => [
  d.enabled,
  d.schedule_minute,
  d.retention_days,
  d.rpo_hours,
  d.drill_interval_days,
];

export async function effectiveSettings(
  db: Queryable,
  databaseId: string,
  defaults: EffectiveSettings,
): Promise<EffectiveSettings> {
  const r = await db.query<EffectiveSettings>(
    `SELECT ${EFFECTIVE} FROM databases d ${SETTINGS_JOINS} WHERE d.id = $6`,
    [...defaultsParams(defaults), databaseId],
  );
  return r.rows[0] ?? defaults;
}

export type DueDatabase = {
  id: string;
  account_id: string;
  node_id: string;
  name: string;
  slot: Date;
  retention_days: number;
};

/**
 * Ready databases whose latest daily slot (today's at its schedule minute UTC if that has passed,
 * else yesterday's) has no scheduled backup yet. Slots before the database was ready are not owed.
 */
export async function dueScheduledBackups(
  db: Queryable,
  defaults: EffectiveSettings,
  now: Date,
  limit: number,
): Promise<DueDatabase[]> {
  const r = await db.query<DueDatabase>(
    `WITH s AS (
       SELECT d.id, d.account_id, d.node_id, d.name, d.ready_at, ${EFFECTIVE}
         FROM databases d ${SETTINGS_JOINS}
        WHERE d.status = 'ready' AND d.kind = 'hosted' AND d.account_id IS NOT NULL
     ), slots AS (
       SELECT s.*, CASE WHEN t.today <= $6 THEN t.today ELSE t.today - interval '1 day' END AS slot
         FROM s, LATERAL (SELECT date_trunc('day', $6::timestamptz AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                                 + make_interval(mins => s.schedule_minute) AS today) t
        WHERE s.enabled
     )
     SELECT id, account_id, node_id, name, slot, retention_days FROM slots
      WHERE slot >= coalesce(ready_at, slot)
        AND NOT EXISTS (SELECT 1 FROM backups b WHERE b.database_id = slots.id AND b.scheduled_for = slots.slot)
      ORDER BY slot, id
      LIMIT $7`,
    [...defaultsParams(defaults), now, limit],
  );
  return r.rows;
}

export type DueDrill = {
  id: string;
  account_id: string;
  node_id: string;
  name: string;
  slot: Date;
  backup_id: string;
};

/**
 * Ready databases with a completed backup whose drill slot (the current period of
 * `drill_interval_days` since the epoch) has no drill yet: its latest good backup is restored.
 */
export async function dueDrills(
  db: Queryable,
  defaults: EffectiveSettings,
  now: Date,
  limit: number,
): Promise<DueDrill[]> {
  const r = await db.query<DueDrill>(
    `WITH s AS (
       SELECT d.id, d.account_id, d.node_id, d.name, ${EFFECTIVE}
         FROM databases d ${SETTINGS_JOINS}
        WHERE d.status = 'ready' AND d.kind = 'hosted' AND d.account_id IS NOT NULL
     ), slots AS (
       SELECT s.*, to_timestamp(floor(extract(epoch FROM $6::timestamptz) / (s.drill_interval_days * 86400))
                                * (s.drill_interval_days * 86400)) AS slot
         FROM s WHERE s.enabled
     )
     SELECT slots.id, slots.account_id, slots.node_id, slots.name, slots.slot, g.id AS backup_id
       FROM slots
       JOIN LATERAL (SELECT b.id FROM backups b
                      WHERE b.database_id = slots.id AND b.status = 'completed' AND b.deleted_at IS NULL
                        AND b.node_id = slots.node_id
                      ORDER BY b.completed_at DESC, b.id DESC LIMIT 1) g ON true
      WHERE NOT EXISTS (SELECT 1 FROM restores r
                         WHERE r.source_database_id = slots.id AND r.scheduled_for = slots.slot)
      ORDER BY slots.slot, slots.id
      LIMIT $7`,
    [...defaultsParams(defaults), now, limit],
  );
  return r.rows;
}

export type Freshness = {
  id: string;
  account_id: string;
  name: string;
  rpo_hours: number;
  last_good_at: Date | null;
  /** When the clock started: the last good backup, else the database's ready time. */
  since: Date;
  alerted_for: Date | null;
  alerted: boolean;
};

/** Ready databases older than their RPO since their last good backup (or since ready, if none). */
export async function staleDatabases(
  db: Queryable,
  defaults: EffectiveSettings,
  now: Date,
  limit: number,
): Promise<Freshness[]> {
  const r = await db.query<Freshness>(
    `WITH s AS (
       SELECT d.id, d.account_id, d.name, d.ready_at, ${EFFECTIVE},
              (SELECT max(b.completed_at) FROM backups b
                WHERE b.database_id = d.id AND b.status = 'completed' AND b.deleted_at IS NULL) AS last_good_at
         FROM databases d ${SETTINGS_JOINS}
        WHERE d.status = 'ready' AND d.kind = 'hosted' AND d.account_id IS NOT NULL AND d.ready_at IS NOT NULL
     )
     SELECT s.id, s.account_id, s.name, s.rpo_hours, s.last_good_at, coalesce(s.last_good_at, s.ready_at) AS since,
            a.last_good_at AS alerted_for, a.database_id IS NOT NULL AS alerted
       FROM s LEFT JOIN backup_alerts a ON a.database_id = s.id
      WHERE s.enabled AND coalesce(s.last_good_at, s.ready_at) < $6::timestamptz - make_interval(hours => s.rpo_hours)
      ORDER BY s.id
      LIMIT $7`,
    [...defaultsParams(defaults), now, limit],
  );
  return r.rows;
}

/** Notes that a stale alert was raised for this last good backup (null: none ever). */
export async function noteStaleAlert(
  db: Queryable,
  databaseId: string,
  accountId: string,
  lastGoodAt: Date | null,
): Promise<boolean> {
  const r = await db.query(
    `INSERT INTO backup_alerts (database_id, account_id, last_good_at) VALUES ($1, $2, $3)
     ON CONFLICT (database_id) DO UPDATE SET last_good_at = EXCLUDED.last_good_at, alerted_at = now()
       WHERE backup_alerts.last_good_at IS DISTINCT FROM EXCLUDED.last_good_at`,
    [databaseId, accountId, lastGoodAt],
  );
  return r.rowCount === 1;
}

/** Writes an alert to the event outbox when the installation has one (migration 0019). */
export async function outboxAlert(
  db: Queryable,
  accountId: string,
  kind: string,
  payload: Record<string, unknown>,
): Promise<void> {
  const r = await db.query<{ present: boolean }>(`SELECT to_regclass('event_outbox') IS NOT NULL AS present`);
  if (!r.rows[0]?.present) return;
  await db.query('INSERT INTO event_outbox (account_id, kind, payload) VALUES ($1, $2, $3)', [
    accountId,
    kind,
    payload,
  ]);
}
