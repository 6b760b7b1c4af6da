import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import type { BackupJobDeps } from '../../src/agent/backups/backup-deps.ts';
import { backupHandlers } from '../../src/agent/backups/backup-handlers.ts';
import { createLocalStorage } from '../../src/agent/backups/backup-storage.ts';
import type { JobContext, JobHandler } from '../../src/agent/jobs/job-context.ts';
import type { BackupCreateResult } from '../../src/shared/contracts/backups.ts';
import { DEFAULT_LIMITS } from '../../src/shared/contracts/jobs.ts';
import { scramVerifier } from '../../src/shared/scram.ts';
import { newPassword, uniqueName } from '../pooler-harness.ts';
import { testEnv } from './env.ts';
import { startTenantKit, type Tenant, type TenantKit } from './tenant-kit.ts';

export type BackupKit = {
  tenants: TenantKit;
  dir: string;
  deps: BackupJobDeps;
  jobs: Map<string, JobHandler>;
  /** A job context whose backup key is `key` (and whose secret, if given, is `password`). */
  ctx(key: Buffer, password?: string): JobContext;
  /** Runs backup.create of `t` with a fresh backup id and key. */
  backup(
    t: Tenant,
    opts?: { deps?: Partial<BackupJobDeps> },
  ): Promise<{ id: string; key: Buffer; result: BackupCreateResult }>;
  /** Runs backup.restore of a backup into a new database; returns the target and its owner's login. */
  restoreNew(
    source: Tenant,
    b: { id: string; key: Buffer; result: BackupCreateResult },
    /** An existing target (a retried restore), else a fresh name and id. */
    into?: Pick<Tenant, 'name' | 'id' | 'password'>,
  ): Promise<Tenant & { result: Record<string, unknown> }>;
  close(): Promise<void>;
};

/** The tenant kit (real PostgreSQL and PgBouncer), a temp backup dir and the backup handlers. */
export async function startBackupKit(opts: { chunkSize?: number } = {}): Promise<BackupKit> {
  const tenants = await startTenantKit();
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-backups-'));
  const deps: BackupJobDeps = {
    ...tenants.kit.deps,
    storage: createLocalStorage(dir),
    pgBin: testEnv().pgBin,
    ...(opts.chunkSize ? { chunkSize: opts.chunkSize } : {}),
  };
  const jobs = new Map(backupHandlers(deps));
  const ctx = (key: Buffer, password?: string): JobContext => ({
    ...tenants.kit.ctx(password),
    backupKey: async () => key,
  });
  const backup: BackupKit['backup'] = async (t, o = {}) => {
    const id = randomUUID();
    const key = randomBytes(32);
    const handlers = o.deps ? new Map(backupHandlers({ ...deps, ...o.deps })) : jobs;
    const result = (await handlers.get('backup.create')!(
      { backup_id: id, database_id: t.id, name: t.name },
      ctx(key),
    )) as BackupCreateResult;
    return { id, key, result };
  };
  const restoreNew: BackupKit['restoreNew'] = async (source, b, into) => {
    const name = into?.name ?? uniqueName('rn');
    const id = into?.id ?? randomUUID();
    const password = into?.password ?? newPassword();
    const create = {
      database_id: id,
      name,
      verifier: scramVerifier(password),
      allowlist: [{ cidr: '127.0.0.1/32', expires_at: null }],
      limits: DEFAULT_LIMITS,
    };
    const result = await jobs.get('backup.restore')!(
      {
        backup_id: b.id,
        database_id: id,
        name,
        mode: 'new',
        source: { database_id: source.id, name: source.name },
        expected: {
          sha256: b.result.sha256,
          tables: b.result.tables,
          tables_total: b.result.tables_total,
          objects: b.result.objects,
        },
        create,
      },
      ctx(b.key, password),
    );
    const { roleNames } = await import('../../src/shared/identifiers.ts');
    const roles = roleNames(name);
    return { name, id, user: roles.owner, roles, password, result };
  };
  return {
    tenants,
    dir,
    deps,
    jobs,
    ctx,
    backup,
    restoreNew,
    async close() {
      await tenants.close();
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}

/** Every row of a query, as JSON text (for equality across databases). */
export async function rowsOf(c: pg.Client, sql: string): Promise<string> {
  return JSON.stringify((await c.query(sql)).rows);
}
