/**
 * `backup.restore` and `backup.drill`. Every one starts by reading the whole archive and
 * authenticating it (`authenticateArchive`: every chunk's tag with its index, the final marker) —
 * nothing is restored, paused or dropped for an archive that is altered, truncated, of another
 * backup, or under a wrong key (a drill makes its scratch database meanwhile, and drops it). The
 * dump's SHA-256 is compared with the backup's record during the restore, before pg_restore gets
 * the dump's last piece (restore-pipeline.ts).
 *
 * - new: the target is created exactly as `database.create` makes a database (that handler
 *   runs first, idempotent: roles, database, grants, schema, pooler entry, the owner's proving
 *   login), then restored into as the target's steward with `--role=<target>_owner` and without
 *   the backup's GRANTs (they name the source's roles; the target's standard grants apply).
 * - in place: restored into a scratch database `bulwark_restore_<hex>` owned by the same steward
 *   with the same roles (GRANTs kept), checked; only then are the database's sessions cut
 *   (PgBouncer `KILL`, new logins refused until `RESUME`; every backend terminated) and the two
 *   databases swapped by name in one transaction; the old one is dropped. A failure before the
 *   swap leaves the database as it was. (The server has made a safety backup before.)
 * - drill: like in place without the swap; the scratch database `bulwark_drill_<hex>` is dropped
 *   whatever happens, and `verified_at` reported.
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type pg from 'pg';
import { ArchiveError } from '../../shared/backup-archive.ts';
import {
  BACKUP_JOB_KINDS,
  type BackupDrillResult,
  type BackupManifest,
  type BackupRestoreResult,
  backupDrillPayloadSchema,
  backupRestorePayloadSchema,
  type RestoreCheck,
} from '../../shared/contracts/backups.ts';
import { quoteIdent, type RoleNames, roleNames } from '../../shared/identifiers.ts';
import { parsePayload } from '../jobs/database-common.ts';
import { databaseCreate } from '../jobs/database-create.ts';
import { type JobContext, type JobHandler, PermanentJobError } from '../jobs/job-context.ts';
import { ensureDatabase, grantDatabase, setupSchema, terminateSessions } from '../postgres/tenant-sql.ts';
import { authenticateArchive, verifyArchive } from './archive-io.ts';
import { type BackupJobDeps, connectForTools, getBackupKey, stewardLogin } from './backup-deps.ts';
import { checkRestored, countObjects } from './backup-manifest.ts';
import type { ArchiveRef } from './backup-storage.ts';
import { withRestoreLogin } from './restore-login.ts';
import { readToc, runRestore } from './restore-pipeline.ts';

export const SCRATCH_PREFIXES = ['bulwark_restore_', 'bulwark_drill_'] as const;

/** `<prefix><storage tag>_<random>`: made here, swept only by an agent with the same backup dir. */
const scratchName = (prefix: (typeof SCRATCH_PREFIXES)[number], tag: string) =>
  `${prefix}${tag}_${randomBytes(8).toString('hex')}`;

/** An archive problem is final: reading the same bytes again will not fix them. */
function archiveFailure(err: unknown): unknown {
  if (err instanceof ArchiveError) return new PermanentJobError(`backup archive refused: ${err.message}`);
  return err;
}

type Restorable = {
  kind: string;
  ref: ArchiveRef;
  key: Buffer;
  expected: BackupManifest;
  source: RoleNames;
};

/**
 * A new database that is no longer empty: a retry of a restore whose success was not reported
 * (the restore is one transaction, so a failed one leaves it empty). It passes the checks, or
 * the job fails for good: nothing is restored over a tenant's objects.
 */
async function alreadyRestored(
  deps: BackupJobDeps,
  login: ReturnType<typeof stewardLogin>,
  expected: BackupManifest,
): Promise<RestoreCheck | null> {
  const c = await connectForTools(deps.cluster, login);
  try {
    const now = await countObjects(c);
    const empty = Object.entries(now).every(([k, v]) => (k === 'schemas' ? v <= 1 : v === 0));
    if (empty) return null;
    return await checkRestored(c, expected).catch((err: Error) => {
      throw new PermanentJobError(
        `the target database is not empty and does not match the backup: ${err.message}`,
      );
    });
  } finally {
    await c.end().catch(() => {});
  }
}

/** Verifies, then restores into `database` (which the caller made) and checks it. */
async function restoreInto(
  deps: BackupJobDeps,
  ctx: JobContext,
  r: Restorable,
  target: {
    database: string;
    databaseId: string;
    roles: RoleNames;
    noPrivileges: boolean;
    /** The target may hold this restore's result already (a retry after an unreported success). */
    resume?: boolean;
    /** The target is still being made: the table of contents is read meanwhile. */
    ready?: Promise<void>;
  },
): Promise<RestoreCheck> {
  const opened = await deps.storage.open(r.ref);
  try {
    const login = stewardLogin(
      deps.cluster,
      { databaseId: target.databaseId, steward: target.roles.steward },
      target.database,
    );
    if (target.resume) {
      const done = await alreadyRestored(deps, login, r.expected);
      if (done) {
        ctx.log.info('the target already holds this backup (a retried restore): checked, not restored again');
        return done;
      }
    }
    await deps.onStep?.(r.kind, 'list');
    // `pg_restore --list` touches no database: it runs while the target is being made.
    const toc = await readToc(deps, opened.stream, r.key, r.ref, login, ctx.signal);
    await target.ready;
    await deps.onStep?.(r.kind, 'restore');
    // pg_restore logs in as a one-off member of the owner, never the steward (restore-login.ts).
    const { dropped } = await withRestoreLogin(
      ctx.admin,
      deps.cluster,
      {
        database: target.database,
        databaseId: target.databaseId,
        owner: target.roles.owner,
        tag: deps.storage.tag,
      },
      (restoreLogin) =>
        runRestore(deps, opened.stream, r.key, r.ref, {
          login: restoreLogin,
          role: target.roles.owner,
          tenantRoles: new Set([r.source.owner, r.source.migrator]),
          noPrivileges: target.noPrivileges,
          expectedSha256: r.expected.sha256,
          toc,
          signal: ctx.signal,
        }),
    ).catch((err) => {
      throw archiveFailure(err);
    });
    if (dropped.length > 0)
      ctx.log.info({ skipped: dropped.length }, 'archive entries not restored (platform objects)');
    await deps.onStep?.(r.kind, 'check');
    const c = await connectForTools(deps.cluster, login);
    try {
      return await checkRestored(c, r.expected, ctx.signal);
    } finally {
      await c.end().catch(() => {});
    }
  } finally {
    await opened.close().catch(() => {});
  }
}

/**
 * A scratch database owned by the source's steward, with the source's roles: the same as the
 * database itself but for its name (the reserved `bulwark_` prefix, so no tenant can hold it).
 * No role may connect to it (the owner only gets CREATE, for the restore's schemas) until it is
 * swapped in.
 */
async function makeScratch(
  deps: BackupJobDeps,
  ctx: JobContext,
  name: string,
  databaseId: string,
  roles: RoleNames,
): Promise<void> {
  await ensureDatabase(ctx.admin, name, roles, databaseId);
  // The owner may create schemas (the restore runs as the owner), but nobody may log in to it.
  await ctx.admin.query(
    `REVOKE ALL ON DATABASE ${quoteIdent(name)} FROM PUBLIC; GRANT CREATE ON DATABASE ${quoteIdent(name)} TO ${quoteIdent(roles.owner)}`,
  );
  const c = await connectForTools(
    deps.cluster,
    stewardLogin(deps.cluster, { databaseId, steward: roles.steward }, name),
  );
  try {
    await setupSchema(c, roles);
  } finally {
    await c.end().catch(() => {});
  }
}

async function dropScratch(admin: pg.Pool, name: string): Promise<void> {
  if (!SCRATCH_PREFIXES.some((p) => name.startsWith(p))) throw new Error('not a scratch database');
  await admin.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`);
}

/** Drops the scratch databases a crashed agent with this storage (`tag`) left behind (start-up). */
export async function sweepScratchDatabases(admin: pg.Pool, tag: string): Promise<string[]> {
  if (!/^[0-9a-f]{8}$/.test(tag)) throw new Error('invalid storage tag');
  const r = await admin.query<{ name: string }>(
    `SELECT datname::pg_catalog.text AS name FROM pg_catalog.pg_database
      WHERE datname::pg_catalog.text LIKE ANY (ARRAY['bulwark\\_restore\\_' || $1 || '\\_%', 'bulwark\\_drill\\_' || $1 || '\\_%'])`,
    [tag],
  );
  for (const { name } of r.rows) await dropScratch(admin, name);
  return r.rows.map((x) => x.name);
}

/** Swaps the restored scratch database in under `name`; the old one is dropped afterwards. */
async function swapIn(
  deps: BackupJobDeps,
  ctx: JobContext,
  name: string,
  scratch: string,
  roles: RoleNames,
): Promise<void> {
  const old = scratchName('bulwark_restore_', deps.storage.tag);
  // The database's own privileges, as database.create grants them.
  await grantDatabase(ctx.admin, scratch, roles);
  try {
    // KILL through the pooler's safe cut (no client mid-login); logins refused until `resume`.
    await deps.pooler.disconnect(name, { hold: true });
    let lastErr: unknown = null;
    for (let attempt = 0; attempt < 5; attempt++) {
      await terminateSessions(ctx.admin, { roles: [], database: name });
      try {
        // Two statements in one simple-protocol message: one implicit transaction, both or neither.
        await ctx.admin.query(
          `ALTER DATABASE ${quoteIdent(name)} RENAME TO ${quoteIdent(old)}; ` +
            `ALTER DATABASE ${quoteIdent(scratch)} RENAME TO ${quoteIdent(name)}`,
        );
        lastErr = null;
        break;
      } catch (err) {
        lastErr = err;
        // 55006: another session is still using the database (a new login raced the terminate).
        if ((err as { code?: string }).code !== '55006') throw err;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    if (lastErr) throw lastErr;
  } finally {
    await deps.pooler.resume(name);
  }
  await dropScratch(ctx.admin, old).catch((err: Error) =>
    ctx.log.warn({ err: { message: err.message } }, 'the replaced database could not be dropped yet'),
  );
}

export function backupRestore(deps: BackupJobDeps): JobHandler {
  // A restore into a new database (and a move's arrival) makes it under the name it was given,
  // never from a spare: a spare keeps its own name (ADR 0034) and the restore targets `p.name`.
  const { warmPool: _noSpares, ...cold } = deps;
  const create = databaseCreate(cold);
  return async (payload, ctx) => {
    const p = parsePayload(backupRestorePayloadSchema, payload);
    const t0 = performance.now();
    const ref = { databaseId: p.source.database_id, backupId: p.backup_id };
    const key = await getBackupKey(ctx);
    const kind = BACKUP_JOB_KINDS.restore;
    const r: Restorable = { kind, ref, key, expected: p.expected, source: roleNames(p.source.name) };
    // Authenticity first: nothing is touched for an archive that does not verify.
    await deps.onStep?.(kind, 'verify');
    await authenticateArchive(deps.storage, ref, key, { signal: ctx.signal }).catch((err) => {
      throw archiveFailure(err);
    });
    const roles = roleNames(p.name);
    let check: RestoreCheck;
    await deps.onStep?.(kind, 'target');
    if (p.mode === 'new') {
      await create(p.create!, ctx);
      check = await restoreInto(deps, ctx, r, {
        database: p.name,
        databaseId: p.database_id,
        roles,
        noPrivileges: true,
        resume: true,
      });
    } else {
      const scratch = scratchName('bulwark_restore_', deps.storage.tag);
      let swapped = false;
      try {
        await makeScratch(deps, ctx, scratch, p.database_id, roles);
        check = await restoreInto(deps, ctx, r, {
          database: scratch,
          databaseId: p.database_id,
          roles,
          noPrivileges: false,
        });
        await deps.onStep?.(kind, 'swap');
        await swapIn(deps, ctx, p.name, scratch, roles);
        swapped = true;
      } finally {
        if (!swapped) await dropScratch(ctx.admin, scratch).catch(() => {});
      }
    }
    const result: BackupRestoreResult = {
      backup_id: p.backup_id,
      database_id: p.database_id,
      name: p.name,
      mode: p.mode,
      duration_ms: Math.round((performance.now() - t0) * 100) / 100,
      ...check,
      verified: true,
    };
    return result;
  };
}

export function backupDrill(deps: BackupJobDeps): JobHandler {
  return async (payload, ctx) => {
    const p = parsePayload(backupDrillPayloadSchema, payload);
    const t0 = performance.now();
    const ref = { databaseId: p.database_id, backupId: p.backup_id };
    const key = await getBackupKey(ctx);
    const roles = roleNames(p.name);
    const kind = BACKUP_JOB_KINDS.drill;
    // The scratch database (nobody can log in to it) is made while the archive is authenticated;
    // nothing is restored into it before that passed, and it is dropped whatever happens.
    const scratch = scratchName('bulwark_drill_', deps.storage.tag);
    const made = makeScratch(deps, ctx, scratch, p.database_id, roles);
    made.catch(() => {});
    let check: RestoreCheck;
    let offsiteVerified: boolean | undefined;
    try {
      await deps.onStep?.(kind, 'verify');
      await authenticateArchive(deps.storage, ref, key, { signal: ctx.signal }).catch((err) => {
        throw archiveFailure(err);
      });
      // The off-site copy is proven too (read whole, checked against the record) before the restore.
      if (deps.storage.offsite) {
        await deps.onStep?.(kind, 'verify_offsite');
        offsiteVerified = await deps.storage.offsite.exists(ref);
        if (offsiteVerified)
          await verifyArchive(deps.storage.offsite, ref, key, {
            expectedSha256: p.expected.sha256,
            signal: ctx.signal,
          }).catch((err) => {
            if (err instanceof ArchiveError)
              throw new PermanentJobError(`off-site copy refused: ${err.message}`);
            throw err;
          });
      }
      check = await restoreInto(
        deps,
        ctx,
        { kind, ref, key, expected: p.expected, source: roles },
        { database: scratch, databaseId: p.database_id, roles, noPrivileges: false, ready: made },
      );
    } finally {
      await made.catch(() => {});
      await deps.onStep?.(kind, 'drop');
      await dropScratch(ctx.admin, scratch).catch((err: Error) =>
        ctx.log.warn(
          { err: { message: err.message } },
          'drill database not dropped; the next start-up sweeps it',
        ),
      );
    }
    const result: BackupDrillResult = {
      backup_id: p.backup_id,
      verified_at: new Date().toISOString(),
      duration_ms: Math.round((performance.now() - t0) * 100) / 100,
      ...check,
      verified: true,
      ...(offsiteVerified === undefined ? {} : { offsite_verified: offsiteVerified }),
    };
    return result;
  };
}
