/**
 * `backup.create`: pg_dump → SHA-256 → zstd → chunked AES-256-GCM → SHA-256 of the stored bytes →
 * `<id>.partial` → fsync → rename → fsync dir; then the whole archive is read back and
 * authenticated (every chunk's tag with its index, the final marker, the stored bytes hashing to
 * what was written — ADR 0022 says what that proves) before success.
 *
 * Who dumps: the database's steward (ADR 0010), logged in on the loopback port with the
 * platform's settings pinned in PGOPTIONS. It is no superuser; as a member (INHERIT) of
 * `<db>_owner` and `<db>_migrator` it holds their privileges, and those two are the only roles
 * that can own anything in a tenant database — so it can read every table, sequence and large
 * object the tenant made. An object the tenant locked even from itself (`REVOKE SELECT … FROM
 * <own role>`, FORCE ROW LEVEL SECURITY) makes the dump fail with PostgreSQL's reason rather than
 * be skipped. The template's `bulwark_guard` schema is not dumped (`DUMP_SELECTION`). pg_dump
 * gets `-Fc -Z0` (zstd here is faster and smaller) and `--snapshot` of a REPEATABLE READ
 * transaction the steward opened, in which the objects are counted and the tables listed; the
 * exact rows are read from the dump stream itself (dump-rows.ts): the record describes exactly
 * what the archive holds.
 */
import { performance } from 'node:perf_hooks';
import { pipeline } from 'node:stream/promises';
import { createZstdCompress, constants as zlib } from 'node:zlib';
import { createArchiveEncryptor, FORMAT_VERSION } from '../../shared/backup-archive.ts';
import {
  BACKUP_JOB_KINDS,
  type BackupCreateResult,
  backupCreatePayloadSchema,
} from '../../shared/contracts/backups.ts';
import { roleNames } from '../../shared/identifiers.ts';
import { parsePayload } from '../jobs/database-common.ts';
import type { JobHandler } from '../jobs/job-context.ts';
import { BACKUP_READS_SETTINGS } from '../postgres/catalog-visibility.ts';
import { authenticateArchive, coalesce, hashingTap } from './archive-io.ts';
import { type BackupJobDeps, connectForTools, getBackupKey, stewardLogin } from './backup-deps.ts';
import { countObjects, listTables, tableRows } from './backup-manifest.ts';
import type { PendingArchive } from './backup-storage.ts';
import { DumpRowCounter } from './dump-rows.ts';
import { startTool } from './pg-tools.ts';

/** How long pg_dump waits for a table lock a tenant holds before the backup fails (and is retried). */
const LOCK_WAIT_MS = 60_000;
/**
 * zstd level 1: on the benchmark's rows (bench/backup.bench.ts) it was both the fastest level and
 * the smallest archive (10.9 MB from a 70 MB dump, against 14.2 MB at level 3 and 13.7 MB for
 * pg_dump's gzip), and compression runs beside pg_dump on a host that also serves the databases.
 */
const ZSTD_LEVEL = 1;

export function backupCreate(deps: BackupJobDeps): JobHandler {
  const step = (name: string) => deps.onStep?.(BACKUP_JOB_KINDS.create, name);
  return async (payload, ctx) => {
    const p = parsePayload(backupCreatePayloadSchema, payload);
    const roles = roleNames(p.name);
    const ref = { databaseId: p.database_id, backupId: p.backup_id };
    const t0 = performance.now();
    const key = await getBackupKey(ctx);
    // A retry after an attempt that wrote its archive but could not report: that archive was
    // never recorded as good; it is made again from a fresh snapshot.
    await deps.storage.remove(ref);

    const login = stewardLogin(deps.cluster, { databaseId: p.database_id, steward: roles.steward }, p.name);
    const steward = await connectForTools(deps.cluster, login);
    const stop = new AbortController();
    const onAbort = () => stop.abort(ctx.signal.reason);
    ctx.signal.addEventListener('abort', onAbort, { once: true });
    let pending: PendingArchive | null = null;
    try {
      await step('snapshot');
      await steward.query('BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY');
      const snap = await steward.query<{ s: string; v: string; n: string }>(
        `SELECT pg_catalog.pg_export_snapshot() AS s, pg_catalog.current_setting('server_version') AS v,
                pg_catalog.current_setting('server_version_num') AS n`,
      );
      const { s: snapshot, v: pgVersion, n: versionNum } = snap.rows[0]!;
      const listed = await listTables(steward);
      const objects = await countObjects(steward);

      await step('dump');
      pending = await deps.storage.create(ref);
      const dump = startTool(
        deps.pgBin,
        'pg_dump',
        [
          '--format=custom',
          '--compress=0',
          '--no-password',
          `--snapshot=${snapshot}`,
          `--lock-wait-timeout=${LOCK_WAIT_MS}`,
          ...DUMP_SELECTION,
        ],
        login,
        { signal: stop.signal },
      );
      deps.onTool?.('pg_dump', dump.child);
      // The plain dump's SHA-256 and its exact rows per table, read from the stream as it passes.
      const rowCounter = new DumpRowCounter();
      const hash = hashingTap((chunk) => rowCounter.push(chunk));
      const stored = hashingTap();
      const written = pipeline(
        dump.child.stdout!,
        coalesce(),
        hash.tap,
        createZstdCompress({
          chunkSize: 1024 * 1024,
          params: { [zlib.ZSTD_c_compressionLevel]: ZSTD_LEVEL },
        }),
        createArchiveEncryptor(key, ref, deps.chunkSize ? { chunkSize: deps.chunkSize } : {}),
        stored.tap,
        pending.stream,
        { signal: stop.signal },
      );
      const all = Promise.all([written, dump.exited]);
      // The first failure (pg_dump's exit, a write error such as ENOSPC) ends the rest.
      all.catch((err) => stop.abort(err));
      await all;
      // Still in the dump's snapshot: SQL counts only for what the stream did not give.
      const tables = await tableRows(steward, listed.tables, rowCounter.result(), stop.signal, (why) =>
        ctx.log.warn({ reason: why }, 'rows counted with SQL: the dump stream could not be read'),
      );
      await steward.query('COMMIT');

      await step('commit');
      const { sizeBytes } = await pending.commit();
      pending = null;

      await step('verify');
      // Every stored byte read back and authenticated, and equal to what was written; the plain
      // dump's SHA-256 (the record's) was taken as pg_dump wrote it.
      const readBack = await authenticateArchive(deps.storage, ref, key, {
        expectedArchiveSha256: stored.digest(),
        signal: ctx.signal,
      });
      if (readBack.sizeBytes !== stored.bytes() || sizeBytes !== stored.bytes())
        throw new Error('the archive read back is not the size written');
      // Off-site copy (when configured): part of the backup; a failed copy fails it (both removed).
      let offsite: { key: string } | null = null;
      if (deps.storage.copyOffsite) {
        await step('offsite');
        offsite = await deps.storage.copyOffsite(ref).catch((err: Error) => {
          throw new Error(`off-site copy failed: ${err.message}`, { cause: err });
        });
      }
      const result: BackupCreateResult = {
        backup_id: p.backup_id,
        sha256: hash.digest(),
        size_bytes: sizeBytes,
        dump_bytes: hash.bytes(),
        duration_ms: Math.round((performance.now() - t0) * 100) / 100,
        pg_version: pgVersion.slice(0, 200),
        server_version_num: Number(versionNum),
        format_version: FORMAT_VERSION,
        tables,
        tables_total: listed.total,
        objects,
        verified: true,
        ...(offsite ? { offsite_key: offsite.key } : {}),
      };
      return result;
    } catch (err) {
      stop.abort(err);
      await pending?.abort();
      // A verified-then-failed archive (e.g. a read-back mismatch) is not left behind either.
      if (!pending) await deps.storage.remove(ref).catch(() => {});
      throw describe(err);
    } finally {
      ctx.signal.removeEventListener('abort', onAbort);
      await steward.end().catch(() => {});
    }
  };
}

/** The failure reason a backup reports: the cause, with the errno code when there is one. */
function describe(err: unknown): unknown {
  const e = err as NodeJS.ErrnoException;
  if (e?.code === 'ABORT_ERR' && e.cause) return describe(e.cause);
  if (e instanceof Error && /permission denied for table pg_db_role_setting/.test(e.message))
    return new Error(
      `${e.message} — this database was made from an older tenant template; a superuser must run ` +
        `"${BACKUP_READS_SETTINGS}" in it once`,
    );
  return err;
}

/**
 * What pg_dump selects: the whole database (so casts, publications and database-wide default
 * privileges the tenant made are in it) except the template's `bulwark_guard` schema, which is
 * ours and in every new database already; subscriptions need a superuser and are never a
 * tenant's. What else a whole-database dump holds that is not the tenant's (the event trigger,
 * plpgsql) is left out at restore by owner (restore-pipeline.ts `filterToc`).
 */
export const DUMP_SELECTION: readonly string[] = ['--exclude-schema=bulwark_guard', '--no-subscriptions'];
