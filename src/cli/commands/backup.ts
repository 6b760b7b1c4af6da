/**
 * `bulwark backup create|list|show|download|restore|delete`: a database's backups through the API.
 * `download` streams the plain pg_dump archive from a signed link into a fresh `<file>.<hex>.partial`
 * (or to stdout) with a progress line (bytes and rate) on a terminal, checks it against the
 * backup's sha256, and only then moves it into place; a failed or mismatched download leaves
 * nothing behind.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { link, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { type Command, InvalidArgumentError } from 'commander';
import { type ApiClient, CliError, EXIT, runCommand } from '../api-client.ts';
import { formatBytes, type JobProgress, jobMeter, transferMeter } from '../backup-progress.ts';
import { clientFromCredentials } from '../credentials.ts';
import { databaseNameArg } from '../options.ts';
import { formatTable, terminalSafe } from '../output.ts';

type Backup = {
  id: string;
  database: string;
  status: 'pending' | 'running' | 'completed' | 'failed';
  trigger: string;
  size_bytes: number | null;
  sha256: string | null;
  started_at: string | null;
  completed_at: string | null;
  verified_at: string | null;
  failure_reason: string | null;
  created_at: string;
  expires_at: string | null;
  progress?: JobProgress;
};
type Restore = {
  id: string;
  status: 'pending' | 'running' | 'completed' | 'failed';
  target: string;
  backup_id: string;
  database: string | null;
  safety_backup_id: string | null;
  failure_reason: string | null;
  progress?: JobProgress;
};

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
function backupIdArg(v: string): string {
  if (!UUID.test(v)) throw new InvalidArgumentError('must be a backup id (a UUID)');
  return v.toLowerCase();
}
function secondsArg(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 86_400) throw new InvalidArgumentError('must be 1–86400 seconds');
  return n;
}

const print = (json: boolean | undefined, value: unknown, human: string) =>
  process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${human}\n`);

const when = (iso: string | null) => (iso ? iso.slice(0, 19).replace('T', ' ') : null);
const COLUMNS = [
  { key: 'id', title: 'id' },
  { key: 'status', title: 'status' },
  { key: 'trigger', title: 'trigger' },
  { key: 'size', title: 'size' },
  { key: 'created', title: 'created' },
  { key: 'verified', title: 'verified' },
  { key: 'problem', title: 'problem' },
];
const row = (b: Backup) => ({
  id: b.id,
  status: b.status,
  trigger: b.trigger,
  size: b.size_bytes === null ? null : formatBytes(b.size_bytes),
  created: when(b.created_at),
  verified: when(b.verified_at),
  problem: b.failure_reason ? terminalSafe(b.failure_reason).slice(0, 80) : null,
});

/**
 * Follows a backup or restore until it is completed (exit 7 when it failed, 8 on timeout); on a
 * terminal, a line shows its phase, bytes and rate as its agent reports them.
 */
async function follow<T extends { status: string; failure_reason: string | null; progress?: JobProgress }>(
  get: () => Promise<T>,
  what: string,
  timeoutS: number,
  showProgress: boolean,
): Promise<T> {
  const deadline = Date.now() + timeoutS * 1000;
  const line = jobMeter(showProgress);
  let delay = 100;
  try {
    for (;;) {
      const x = await get();
      if (x.status === 'completed') return x;
      if (x.status === 'failed')
        throw new CliError(`${what} failed: ${x.failure_reason ?? 'unknown reason'}`, EXIT.notApplied);
      if (Date.now() > deadline)
        throw new CliError(`gave up waiting after ${timeoutS} s: ${what} is still ${x.status}`, EXIT.timeout);
      line.update(x.status, x.progress ?? null);
      await new Promise((r) => setTimeout(r, delay));
      // Progress is reported about once a second: follow it that often while it runs.
      delay = Math.min(delay * 2, x.status === 'running' ? 1_000 : 2_000);
    }
  } finally {
    line.end();
  }
}

const interactive = (json: boolean | undefined) => !json && process.stderr.isTTY === true;

/**
 * Downloads a completed backup into `file` (or stdout: `-`), checked against its sha256. A file is
 * written as a fresh 0600 temp file beside it and moved into place only when whole and matching:
 * never over an existing file unless `force` (then renamed over it, atomically). On stdout the
 * bytes flow as they come; a mismatch or a cut transfer is still an error exit.
 */
export async function downloadBackup(
  client: ApiClient,
  name: string,
  id: string,
  file: string,
  opts: { progress: boolean; force?: boolean },
): Promise<{ file: string; bytes: number; sha256: string; seconds: number }> {
  const toStdout = file === '-';
  if (
    !toStdout &&
    !opts.force &&
    (await stat(file).then(
      () => true,
      () => false,
    ))
  )
    throw new CliError(`${file} exists: not overwritten (--force replaces it)`);
  const b = await client.request<Backup>('GET', `/v1/databases/${name}/backups/${id}`);
  if (b.status !== 'completed' || !b.sha256)
    throw new CliError(
      `backup ${id} is ${b.status}: only a completed backup can be downloaded`,
      EXIT.notApplied,
    );
  const signed = await client.request<{ url: string }>(
    'POST',
    `/v1/databases/${name}/backups/${id}/download-link`,
  );
  const res = await client.download(signed.url, {});
  if (!res.body) throw new CliError('the server sent no archive');
  const partial = toStdout ? null : `${file}.${randomBytes(6).toString('hex')}.partial`;
  const hash = createHash('sha256');
  const meter = transferMeter(opts.progress);
  try {
    await pipeline(
      Readable.fromWeb(res.body as import('node:stream/web').ReadableStream),
      meter.meter,
      new Transform({
        transform(chunk: Buffer, _e, cb) {
          hash.update(chunk);
          cb(null, chunk);
        },
      }),
      // On stdout the bytes flow as they come (and stdout stays open).
      partial === null ? process.stdout : createWriteStream(partial, { flags: 'wx', mode: 0o600 }),
      { end: partial !== null },
    );
    const { bytes, seconds } = meter.done();
    const sha256 = hash.digest('hex');
    if (sha256 !== b.sha256)
      throw new CliError(`the download does not match the backup (sha256 ${sha256}, expected ${b.sha256})`);
    if (partial === null) return { file: '-', bytes, sha256, seconds };
    // link(2) refuses an existing name (a rename would replace it): the file appears whole or not
    // at all; --force renames over it (atomic too).
    if (opts.force) await rename(partial, file);
    else {
      await link(partial, file).catch((err: NodeJS.ErrnoException) => {
        throw err.code === 'EEXIST'
          ? new CliError(`${file} exists: not overwritten (--force replaces it)`)
          : err;
      });
      await rm(partial, { force: true });
    }
    return { file, bytes, sha256, seconds };
  } catch (err) {
    if (partial !== null) await rm(partial, { force: true });
    if (err instanceof CliError) throw err;
    throw new CliError(
      partial === null
        ? `download failed (what was written to stdout is incomplete): ${(err as Error).message}`
        : `download failed, nothing kept: ${(err as Error).message}`,
    );
  }
}

export function registerBackup(program: Command): void {
  const backup = program
    .command('backup')
    .description('Back up, list, download and restore databases')
    .addHelpText(
      'after',
      '\nWith --wait: exit 7 when it failed (reason on stderr), 8 when --timeout passed first.',
    );

  backup
    .command('create')
    .description('Back up a database now')
    .argument('<database>', 'database name', databaseNameArg)
    .option('--wait', 'wait until the backup is completed')
    .option('--timeout <seconds>', 'how long --wait waits', secondsArg, 3600)
    .option('--json', 'machine-readable output')
    .action((name: string, o: { wait?: boolean; timeout: number; json?: boolean }) =>
      runCommand(o.json, async () => {
        const client = clientFromCredentials();
        let b = await client.request<Backup>('POST', `/v1/databases/${name}/backups`);
        if (o.wait)
          b = await follow(
            () => client.request<Backup>('GET', `/v1/databases/${name}/backups/${b.id}`),
            `backup ${b.id}`,
            o.timeout,
            interactive(o.json),
          );
        print(
          o.json,
          b,
          b.status === 'completed'
            ? `backup ${b.id} of ${name} completed: ${formatBytes(b.size_bytes ?? 0)}, sha256 ${b.sha256}`
            : `backup ${b.id} of ${name} is ${b.status}`,
        );
      }),
    );

  backup
    .command('list')
    .description("A database's backups, newest first")
    .argument('<database>', 'database name', databaseNameArg)
    .option('--json', 'machine-readable output')
    .action((name: string, o: { json?: boolean }) =>
      runCommand(o.json, async () => {
        const client = clientFromCredentials();
        const items: Backup[] = [];
        let cursor: string | undefined;
        for (let page = 0; page < 10_000; page++) {
          const r = await client.request<{ items: Backup[]; next_cursor: string | null }>(
            'GET',
            `/v1/databases/${name}/backups`,
            undefined,
            { query: { limit: 100, cursor } },
          );
          items.push(...r.items);
          if (!r.next_cursor) break;
          cursor = r.next_cursor;
        }
        print(
          o.json,
          { items },
          items.length ? formatTable(items.map(row), COLUMNS) : `no backups of ${name}`,
        );
      }),
    );

  backup
    .command('show')
    .description('Show a backup')
    .argument('<database>', 'database name', databaseNameArg)
    .argument('<backup-id>', 'backup id', backupIdArg)
    .option('--json', 'machine-readable output')
    .action((name: string, id: string, o: { json?: boolean }) =>
      runCommand(o.json, async () => {
        const b = await clientFromCredentials().request<Backup>('GET', `/v1/databases/${name}/backups/${id}`);
        const human = [
          formatTable([row(b)], COLUMNS),
          '',
          `sha256     ${b.sha256 ?? '-'}`,
          `started    ${when(b.started_at) ?? '-'}`,
          `completed  ${when(b.completed_at) ?? '-'}`,
          `expires    ${when(b.expires_at) ?? '-'}`,
          ...(b.progress
            ? [
                `progress   ${b.progress.phase}: ${formatBytes(b.progress.done_bytes)}${
                  b.progress.total_bytes === null ? '' : ` of ${formatBytes(b.progress.total_bytes)}`
                }`,
              ]
            : []),
        ].join('\n');
        print(o.json, b, human);
      }),
    );

  backup
    .command('download')
    .description('Download a backup as a plain pg_dump archive (for pg_restore), checked against its sha256')
    .argument('<database>', 'database name', databaseNameArg)
    .argument('<backup-id>', 'backup id', backupIdArg)
    .option(
      '-o, --output <file>',
      'where to write it (default: <database>-<backup id>.dump; - for stdout); an existing file is kept unless --force',
    )
    .option('--force', 'replace an existing file (atomically, once the download is whole and checked)')
    .option('--json', 'machine-readable output')
    .action((name: string, id: string, o: { output?: string; force?: boolean; json?: boolean }) =>
      runCommand(o.json, async () => {
        const toStdout = o.output === '-';
        if (toStdout && o.json)
          throw new CliError('--json and -o - both want stdout: choose one', EXIT.usage);
        const file = toStdout ? '-' : path.resolve(o.output ?? `${name}-${id}.dump`);
        const r = await downloadBackup(clientFromCredentials(), name, id, file, {
          progress: interactive(o.json),
          force: o.force === true,
        });
        const human = `${toStdout ? 'wrote stdout' : `wrote ${r.file}`} (${formatBytes(r.bytes)} in ${r.seconds.toFixed(1)} s, sha256 ${r.sha256}); restore with pg_restore`;
        if (toStdout) process.stderr.write(`${human}\n`);
        else print(o.json, r, human);
      }),
    );

  backup
    .command('restore')
    .description('Restore a backup into a new database (default) or in place after a safety backup')
    .argument('<database>', 'database name', databaseNameArg)
    .argument('<backup-id>', 'backup id', backupIdArg)
    .option('--new-name <name>', 'the new database (default: <database>_restored_<hex>)', databaseNameArg)
    .option('--in-place', 'restore into <database> itself (a safety backup is taken first)')
    .option('--wait', 'wait until the restore is completed')
    .option('--timeout <seconds>', 'how long --wait waits', secondsArg, 3600)
    .option('--json', 'machine-readable output')
    .action(
      (
        name: string,
        id: string,
        o: { newName?: string; inPlace?: boolean; wait?: boolean; timeout: number; json?: boolean },
      ) =>
        runCommand(o.json, async () => {
          if (o.inPlace && o.newName)
            throw new CliError('give --in-place or --new-name, not both', EXIT.usage);
          const client = clientFromCredentials();
          let r = await client.request<Restore>(
            'POST',
            `/v1/databases/${name}/restore`,
            o.inPlace
              ? { backup_id: id, target: 'in_place' }
              : { backup_id: id, target: 'new', ...(o.newName ? { new_name: o.newName } : {}) },
          );
          if (o.wait)
            r = await follow(
              () => client.request<Restore>('GET', `/v1/databases/${name}/restores/${r.id}`),
              `restore ${r.id}`,
              o.timeout,
              interactive(o.json),
            );
          const into = r.target === 'in_place' ? `${name} (in place)` : (r.database ?? 'a new database');
          print(o.json, r, `restore ${r.id} of backup ${id} into ${into} is ${r.status}`);
        }),
    );

  backup
    .command('delete')
    .description('Delete a finished backup')
    .argument('<database>', 'database name', databaseNameArg)
    .argument('<backup-id>', 'backup id', backupIdArg)
    .option('--json', 'machine-readable output')
    .action((name: string, id: string, o: { json?: boolean }) =>
      runCommand(o.json, async () => {
        const r = await clientFromCredentials().request('DELETE', `/v1/databases/${name}/backups/${id}`);
        print(o.json, r, `backup ${id} of ${name} deleted`);
      }),
    );
}
