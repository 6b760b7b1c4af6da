import type { Logger } from 'pino';
import { conflict, notFound, unavailable } from '../../../shared/errors.ts';
import type { SecretBox } from '../../crypto/secret-box.ts';
import { type Db, type Tx, withTx } from '../../db/pool.ts';
import { assertDatabaseInScope, type Caller, callerLogFields, requireLevel } from '../../http/caller.ts';
import { type PageCursor, toPage } from '../../http/pagination.ts';
import { type AuditService, auditFromCaller } from '../audit/audit.service.ts';
import { requireHosted } from '../databases/databases.kind.ts';
import * as dbRepo from '../databases/databases.repo.ts';
import { checkDatabaseName } from '../databases/databases.service.ts';
import { queueBackup, queueBackupDeletion } from './backups.records.ts';
import * as repo from './backups.repo.ts';
import * as settingsRepo from './backups.settings.repo.ts';
import * as restoresRepo from './restores.repo.ts';

export type BackupDefaults = settingsRepo.EffectiveSettings;

export type SettingsInput = {
  enabled?: boolean | null | undefined;
  schedule_time?: string | null | undefined;
  retention_days?: number | null | undefined;
  rpo_hours?: number | null | undefined;
  drill_interval_days?: number | null | undefined;
};

/** `HH:MM` ↔ minutes after midnight UTC. */
export const minuteOf = (hhmm: string): number => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5));
export const timeOf = (minute: number): string =>
  `${String(Math.floor(minute / 60)).padStart(2, '0')}:${String(minute % 60).padStart(2, '0')}`;

export type Freshness = {
  last_good_at: Date | null;
  age_seconds: number | null;
  rpo_hours: number;
  stale: boolean;
};

export type BackupsServiceDeps = {
  db: Db;
  /** Seals each backup's data key; null without a master key (backups then unavailable). */
  box: SecretBox | null;
  log: Logger;
  audit: Pick<AuditService, 'record'>;
  defaults: BackupDefaults;
};

/** Backups of a database through the API: on demand, list, show, delete; schedule settings. */
export function createBackupsService(deps: BackupsServiceDeps) {
  const { db, log } = deps;

  const requireBox = (): SecretBox => {
    if (!deps.box) throw unavailable('Backups are unavailable: the server has no master key configured');
    return deps.box;
  };

  /** The caller's database by name: another account's, or out of scope, is a 404. */
  const findDatabase = async (caller: Caller, name: string, tx?: Tx): Promise<dbRepo.DatabaseRow> => {
    checkDatabaseName(name);
    assertDatabaseInScope(caller, name);
    const row = await dbRepo.findByName(tx ?? db, caller.accountId, name, { forUpdate: Boolean(tx) });
    if (!row) throw notFound('Database');
    requireHosted(row, 'back up or restore');
    return row;
  };

  const findBackup = async (caller: Caller, name: string, id: string, tx?: Tx) => {
    const database = await findDatabase(caller, name, tx);
    const backup = await repo.findBackup(tx ?? db, caller.accountId, database.id, id, {
      forUpdate: Boolean(tx),
    });
    if (!backup) throw notFound('Backup');
    return { database, backup };
  };

  const audit = (tx: Tx, caller: Caller, action: string, id: string, details: Record<string, unknown>) =>
    deps.audit.record(tx, auditFromCaller(caller, { action, targetType: 'backup', targetId: id, details }));

  const freshness = async (databaseId: string, now = new Date()): Promise<Freshness> => {
    const [latest, settings] = await Promise.all([
      repo.latestGood(db, databaseId),
      settingsRepo.effectiveSettings(db, databaseId, deps.defaults),
    ]);
    const age = latest
      ? Math.max(0, Math.floor((now.getTime() - latest.completed_at.getTime()) / 1000))
      : null;
    return {
      last_good_at: latest?.completed_at ?? null,
      age_seconds: age,
      rpo_hours: settings.rpo_hours,
      stale: settings.enabled && (age === null || age > settings.rpo_hours * 3600),
    };
  };

  const present = (s: settingsRepo.StoredSettings | null) => ({
    enabled: s?.enabled ?? null,
    schedule_time:
      s?.schedule_minute === null || s?.schedule_minute === undefined ? null : timeOf(s.schedule_minute),
    retention_days: s?.retention_days ?? null,
    rpo_hours: s?.rpo_hours ?? null,
    drill_interval_days: s?.drill_interval_days ?? null,
  });

  const toStored = (input: SettingsInput): settingsRepo.StoredSettings => ({
    enabled: input.enabled ?? null,
    schedule_minute: input.schedule_time ? minuteOf(input.schedule_time) : null,
    retention_days: input.retention_days ?? null,
    rpo_hours: input.rpo_hours ?? null,
    drill_interval_days: input.drill_interval_days ?? null,
  });

  const effective = (e: settingsRepo.EffectiveSettings) => ({
    enabled: e.enabled,
    schedule_time: timeOf(e.schedule_minute),
    retention_days: e.retention_days,
    rpo_hours: e.rpo_hours,
    drill_interval_days: e.drill_interval_days,
  });

  return {
    findDatabase,

    /** An on-demand backup: the record and its job now; `202 {id, status}`. */
    async create(caller: Caller, name: string): Promise<repo.BackupRow> {
      requireLevel(caller, 'write');
      const box = requireBox();
      const { id, database } = await withTx(db, async (tx) => {
        const database = await findDatabase(caller, name, tx);
        if (database.status !== 'ready')
          throw conflict(`Cannot back up while the database is ${database.status}`);
        const settings = await settingsRepo.effectiveSettings(tx, database.id, deps.defaults);
        const id = (await queueBackup(tx, box, database, {
          trigger: 'manual',
          retentionDays: settings.retention_days,
        }))!;
        await audit(tx, caller, 'backup.created', id, { database: database.name, trigger: 'manual' });
        return { id, database };
      });
      log.info({ database: name, backup_id: id, ...callerLogFields(caller) }, 'backup queued');
      return (await repo.findBackup(db, caller.accountId, database.id, id))!;
    },

    async list(
      caller: Caller,
      name: string,
      opts: { after: PageCursor | null; limit: number; status?: repo.BackupStatus | undefined },
    ) {
      requireLevel(caller, 'read');
      const database = await findDatabase(caller, name);
      const rows = await repo.listBackups(db, caller.accountId, database.id, opts);
      return toPage(
        rows,
        opts.limit,
        (r) => ({ ts: Number(r.created_us), id: r.id }),
        (r) => r,
      );
    },

    async get(caller: Caller, name: string, id: string): Promise<repo.BackupRow> {
      requireLevel(caller, 'read');
      return (await findBackup(caller, name, id)).backup;
    },

    /** Deletes a finished backup: hidden at once, its file removed by the agent, then the row. */
    async remove(caller: Caller, name: string, id: string): Promise<void> {
      requireLevel(caller, 'write');
      await withTx(db, async (tx) => {
        const { database, backup } = await findBackup(caller, name, id, tx);
        if (backup.status === 'pending' || backup.status === 'running')
          throw conflict(`Cannot delete a backup while it is ${backup.status}`);
        if (await restoresRepo.backupInUse(tx, backup.id))
          throw conflict('Cannot delete a backup while a restore reads it');
        await queueBackupDeletion(tx, backup);
        await audit(tx, caller, 'backup.deleted', id, { database: database.name, trigger: backup.trigger });
      });
    },

    /** Freshness of one database (the database's detail view). */
    freshness,

    async getSettings(caller: Caller, name: string | null) {
      requireLevel(caller, 'read');
      const database = name === null ? null : await findDatabase(caller, name);
      const stored = await settingsRepo.findSettings(db, caller.accountId, database?.id ?? null);
      const account =
        database === null ? stored : await settingsRepo.findSettings(db, caller.accountId, null);
      const merged: settingsRepo.EffectiveSettings = {
        enabled: stored?.enabled ?? account?.enabled ?? deps.defaults.enabled,
        schedule_minute: stored?.schedule_minute ?? account?.schedule_minute ?? deps.defaults.schedule_minute,
        retention_days: stored?.retention_days ?? account?.retention_days ?? deps.defaults.retention_days,
        rpo_hours: stored?.rpo_hours ?? account?.rpo_hours ?? deps.defaults.rpo_hours,
        drill_interval_days:
          stored?.drill_interval_days ?? account?.drill_interval_days ?? deps.defaults.drill_interval_days,
      };
      return { settings: present(stored), effective: effective(merged) };
    },

    /** Replaces the account's (name null) or one database's settings; a null field inherits. */
    async putSettings(caller: Caller, name: string | null, input: SettingsInput) {
      requireLevel(caller, 'write');
      await withTx(db, async (tx) => {
        const database = name === null ? null : await findDatabase(caller, name, tx);
        const stored = toStored(input);
        await settingsRepo.upsertSettings(tx, caller.accountId, database?.id ?? null, stored);
        await deps.audit.record(
          tx,
          auditFromCaller(caller, {
            action: 'backup.settings_changed',
            targetType: database ? 'database' : 'account',
            targetId: database?.id ?? caller.accountId,
            details: { database: database?.name ?? null, ...present(stored) },
          }),
        );
      });
      return this.getSettings(caller, name);
    },
  };
}

export type BackupsService = ReturnType<typeof createBackupsService>;
