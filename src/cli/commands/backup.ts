/**
 * `bulwark backup create|list|show|download|restore|delete`: a database's backups through the API.
 * `download` streams the plain pg_dump archive from a signed link into `<file>.partial` with a
 * progress line (bytes and rate) on a terminal, checks it against the backup's sha256, and only
 * then renames it into place; a failed or mismatched download leaves nothing behind.
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { link, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { type Command, InvalidArgumentError } from 'commander';
import { type ApiClient, CliError, EXIT, runCommand } from '../api-client.ts';
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
};
type Restore = {
  id: string;
  status: 'pending' | 'running' | 'completed' | 'failed';
  target: string;
  backup_id: string;
  database: string | null;
  safety_backup_id: string | null;
  failure_reason: string | null;
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

/** 1536 → "1.5 KiB". */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}

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

/** Follows a backup or restore until it is completed (exit 7 when it failed, 8 on timeout). */
async function follow<T extends { status: string; failure_reason: string | null }>(
  get: () => Promise<T>,
  what: string,
  timeoutS: number,
): Promise<T> {
  const deadline = Date.now() + timeoutS * 1000;
  let delay = 100;
  for (;;) {
    const x = await get();
    if (x.status === 'completed') return x;
    if (x.status === 'failed')
      throw new CliError(`${what} failed: ${x.failure_reason ?? 'unknown reason'}`, EXIT.notApplied);
    if (Date.now() > deadline)
      throw new CliError(`gave up waiting after ${timeoutS} s: ${what} is still ${x.status}`, EXIT.timeout);
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 2_000);
  }
}

/** A progress line on stderr (a terminal only): bytes so far and the rate, at most 10 times a second. */
function progress(enabled: boolean) {
  const started = Date.now();
  let bytes = 0;
  let last = 0;
  const draw = (final: boolean) => {
    const s = Math.max((Date.now() - started) / 1000, 0.001);
    process.stderr.write(
      `\r${formatBytes(bytes).padStart(10)}  ${formatBytes(bytes / s)}/s   ${final ? '\n' : ''}`,
    );
  };
  return {
    meter: new Transform({
      transform(chunk: Buffer, _e, cb) {
        bytes += chunk.length;
        if (enabled && Date.now() - last > 100) {
          last = Date.now();
          draw(false);
        }
        cb(null, chunk);
      },
    }),
    done() {
      if (enabled) draw(true);
      return { bytes, seconds: (Date.now() - started) / 1000 };
    },
  };
}

/** Downloads a completed backup into `file` (through `.partial`), checked against its sha256. */
export async function downloadBackup(
  client: ApiClient,
  name: string,
  id: string,
  file: string,
  opts: { progress: boolean },
): Promise<{ file: string; bytes: number; sha256: string; seconds: number }> {
  if (
    await stat(file).then(
      () => true,
      () => false,
    )
  )
    throw new CliError(`${file} exists: not overwritten`);
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
  const partial = `${file}.partial`;
  const hash = createHash('sha256');
  const meter = progress(opts.progress);
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
      createWriteStream(partial, { flags: 'wx', mode: 0o600 }),
    );
    const { bytes, seconds } = meter.done();
    const sha256 = hash.digest('hex');
    if (sha256 !== b.sha256)
      throw new CliError(`the download does not match the backup (sha256 ${sha256}, expected ${b.sha256})`);
    // link(2) refuses an existing name (a rename would replace it): the file appears whole or not at all.
    await link(partial, file).catch((err: NodeJS.ErrnoException) => {
      throw err.code === 'EEXIST' ? new CliError(`${file} exists: not overwritten`) : err;
    });
    await rm(partial, { force: true });
    return { file, bytes, sha256, seconds };
  } catch (err) {
    await rm(partial, { force: true });
    if (err instanceof CliError) throw err;
    throw new CliError(`download failed, nothing kept: ${(err as Error).message}`);
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
      'where to write it (default: <database>-<backup id>.dump); an existing file is never overwritten',
    )
    .option('--json', 'machine-readable output')
    .action((name: string, id: string, o: { output?: string; json?: boolean }) =>
      runCommand(o.json, async () => {
        const file = path.resolve(o.output ?? `${name}-${id}.dump`);
        const r = await downloadBackup(clientFromCredentials(), name, id, file, {
          progress: !o.json && process.stderr.isTTY === true,
        });
        print(
          o.json,
          r,
          `wrote ${r.file} (${formatBytes(r.bytes)} in ${r.seconds.toFixed(1)} s, sha256 ${r.sha256}); restore with pg_restore`,
        );
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
