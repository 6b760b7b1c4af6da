/**
 * Feeding a verified archive to pg_restore.
 *
 * Order (ADR 0022): the caller has read the whole archive first (`authenticateArchive`: every
 * tag with its index, the final marker, nothing after it), so pg_restore never receives a byte of
 * an archive that is altered or cut short. Then two more reads of the same open file:
 * `pg_restore --list` for the table of contents, filtered to what the tenant's own roles can
 * and may restore; then the restore itself, the dump's SHA-256 compared with the backup's record
 * before pg_restore gets the dump's last piece (`heldUntilChecked`: it cannot finish, let alone
 * commit, without it); in one transaction (`--single-transaction`), logged
 * in as the target's steward with `--role=<owner>` — so any tenant code the restore runs (index
 * expressions, check constraints) runs as the tenant's owner — and `--no-owner`: every object
 * belongs to the owner afterwards.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ArchiveError } from '../../shared/backup-archive.ts';
import { heldUntilChecked, plainStream } from './archive-io.ts';
import type { BackupJobDeps } from './backup-deps.ts';
import type { ArchiveRef } from './backup-storage.ts';
import { type PgLogin, startTool } from './pg-tools.ts';

/** The largest table of contents accepted from `pg_restore --list` (bytes). */
const MAX_TOC_BYTES = 64 * 1024 * 1024;

/** Entry types never restored: only a superuser could make them, and ours come from the template. */
const SKIPPED_TYPES = new Set(['EVENT TRIGGER', 'SUBSCRIPTION', 'DATABASE', 'DATABASE PROPERTIES']);

/**
 * Keeps the entries the tenant's roles can restore: drops the skipped types, and any entry owned
 * by a role that is not one of `tenantRoles` (what the dump saw of platform objects), and default
 * privileges of any role but the restoring one (the target's own defaults are set by our schema
 * setup). Returns the list for `pg_restore -L` and what was dropped (for the log).
 */
export function filterToc(
  toc: string,
  opts: { tenantRoles: ReadonlySet<string>; restoringRole: string },
): { list: string; dropped: string[] } {
  const out: string[] = [];
  const dropped: string[] = [];
  for (const line of toc.split('\n')) {
    if (line.startsWith(';') || line.trim() === '') {
      out.push(line);
      continue;
    }
    // `<id>; <tableoid> <oid> <TYPE…> <schema> <name…> <owner>`
    const m = /^(\d+); (\d+) (\d+) (.*)$/.exec(line);
    if (!m) {
      dropped.push(line.slice(0, 200));
      continue;
    }
    const rest = m[4]!;
    const type = [...SKIPPED_TYPES, 'DEFAULT ACL'].find((t) => rest.startsWith(`${t} `));
    // The owner is the last field, empty for objects without one (an extension: its line ends in a space).
    const owner = rest.slice(rest.lastIndexOf(' ') + 1);
    const ownedByOther = owner !== '' && !opts.tenantRoles.has(owner);
    if (type && SKIPPED_TYPES.has(type)) dropped.push(line.slice(0, 200));
    // Schema public is made (and handed to the owner) with every database; its comment stays.
    else if (/^SCHEMA - public \S+$/.test(rest)) dropped.push(line.slice(0, 200));
    else if (type === 'DEFAULT ACL' && owner !== opts.restoringRole) dropped.push(line.slice(0, 200));
    else if (ownedByOther) dropped.push(line.slice(0, 200));
    else out.push(line);
  }
  return { list: out.join('\n'), dropped };
}

/**
 * Feeds the plain dump to a started tool's stdin. An archive error (the file changed since it was
 * verified) is reported as such; otherwise the tool's own failure (its stderr) is the reason.
 */
async function feed(
  source: () => Readable,
  key: Buffer,
  ref: ArchiveRef,
  tool: ReturnType<typeof startTool>,
  opts: { stopEarlyOk: boolean; signal: AbortSignal; expectedSha256?: string },
): Promise<void> {
  const stdin = tool.child.stdin!;
  stdin.on('error', () => {});
  const plain = plainStream(source(), key, ref);
  const fed = (
    opts.expectedSha256
      ? pipeline(plain, heldUntilChecked(opts.expectedSha256), stdin, { signal: opts.signal })
      : pipeline(plain, stdin, { signal: opts.signal })
  ).catch((err) => {
    const code = (err as NodeJS.ErrnoException).code;
    // pg_restore --list stops reading once it has the table of contents.
    if (opts.stopEarlyOk && (code === 'EPIPE' || code === 'ERR_STREAM_PREMATURE_CLOSE')) return;
    tool.child.kill('SIGKILL');
    throw err;
  });
  const [f, t] = await Promise.allSettled([fed, tool.exited]);
  if (f.status === 'rejected' && f.reason instanceof ArchiveError) throw f.reason;
  if (t.status === 'rejected') throw t.reason;
  if (f.status === 'rejected') throw f.reason;
}

export async function readToc(
  deps: BackupJobDeps,
  source: () => Readable,
  key: Buffer,
  ref: ArchiveRef,
  login: PgLogin,
  signal: AbortSignal,
): Promise<string> {
  const tool = startTool(deps.pgBin, 'pg_restore', ['--list'], login, { signal, stdin: 'pipe' });
  deps.onTool?.('pg_restore', tool.child);
  const parts: Buffer[] = [];
  let size = 0;
  tool.child.stdout!.on('data', (d: Buffer) => {
    size += d.length;
    if (size > MAX_TOC_BYTES) tool.child.kill('SIGKILL');
    else parts.push(d);
  });
  await feed(source, key, ref, tool, { stopEarlyOk: true, signal });
  if (size > MAX_TOC_BYTES) throw new Error('the archive table of contents is too large');
  return Buffer.concat(parts).toString('utf8');
}

/**
 * Restores an authenticated archive into `login.database` as `role`, in one transaction; the
 * table of contents is `toc` when the caller read it already (`readToc`).
 */
export async function runRestore(
  deps: BackupJobDeps,
  source: () => Readable,
  key: Buffer,
  ref: ArchiveRef,
  opts: {
    login: PgLogin;
    role: string;
    tenantRoles: ReadonlySet<string>;
    /** Drop GRANTs (the backup's roles are not the target's). */
    noPrivileges: boolean;
    /** The plain dump's SHA-256 in the backup's record: checked before pg_restore gets its end. */
    expectedSha256: string;
    toc?: string;
    signal: AbortSignal;
  },
): Promise<{ dropped: string[] }> {
  const toc = opts.toc ?? (await readToc(deps, source, key, ref, opts.login, opts.signal));
  const { list, dropped } = filterToc(toc, { tenantRoles: opts.tenantRoles, restoringRole: opts.role });
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-restore-'));
  const listFile = path.join(dir, `${randomBytes(6).toString('hex')}.list`);
  try {
    await fs.writeFile(listFile, list, { mode: 0o600 });
    const tool = startTool(
      deps.pgBin,
      'pg_restore',
      [
        '--no-password',
        '--single-transaction',
        '--exit-on-error',
        '--no-owner',
        `--role=${opts.role}`,
        `--use-list=${listFile}`,
        ...(opts.noPrivileges ? ['--no-privileges'] : []),
        `--dbname=${opts.login.database}`,
      ],
      opts.login,
      { signal: opts.signal, stdin: 'pipe' },
    );
    deps.onTool?.('pg_restore', tool.child);
    await feed(source, key, ref, tool, {
      stopEarlyOk: false,
      signal: opts.signal,
      expectedSha256: opts.expectedSha256,
    });
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
  return { dropped };
}
