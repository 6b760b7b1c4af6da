/**
 * Off-site copies (ADR 0022) against a real S3-compatible server (s3rver, on loopback, started
 * here) with the real backup jobs, PostgreSQL, pg_dump and pg_restore: a backup is uploaded
 * (multipart) under a key of ids only, byte for byte the local archive; with the local file gone
 * a restore and a drill read the object; a failed upload (a closed port, a connection cut
 * mid-upload) fails the backup and leaves no object and no file; a tampered object is refused
 * before pg_restore starts; delete removes both copies.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  CreateBucketCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
} from '@aws-sdk/client-s3';
import { pino } from 'pino';
import S3rver from 's3rver';
import type { BackupJobDeps } from '../src/agent/backups/backup-deps.ts';
import { backupHandlers } from '../src/agent/backups/backup-handlers.ts';
import { startBackups } from '../src/agent/backups/backup-startup.ts';
import { withOffsiteCopy } from '../src/agent/backups/offsite-storage.ts';
import {
  createS3Client,
  createS3Storage,
  type S3Storage,
  type S3StorageOptions,
} from '../src/agent/backups/s3-storage.ts';
import { backupS3Options, loadAgentConfig } from '../src/agent/config.ts';
import type { BackupCreateResult } from '../src/shared/contracts/backups.ts';
import { DEFAULT_LIMITS } from '../src/shared/contracts/jobs.ts';
import { roleNames } from '../src/shared/identifiers.ts';
import { scramVerifier } from '../src/shared/scram.ts';
import { type BackupKit, rowsOf, startBackupKit } from './helpers/backup-kit.ts';
import { testEnv } from './helpers/env.ts';
import type { Tenant } from './helpers/tenant-kit.ts';
import { newPassword, uniqueName } from './pooler-harness.ts';

const BUCKET = 'bulwark-offsite';
const PREFIX = 'site-a/';
const PART = 5 * 1024 * 1024;

let kit: BackupKit;
let s3dir: string;
let server: S3rver;
let port: number;
let proxy: CountingProxy;
const s3opts = (endpoint: string): S3StorageOptions => ({
  endpoint,
  region: 'us-east-1',
  bucket: BUCKET,
  prefix: PREFIX,
  forcePathStyle: true,
  credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
  partSize: PART,
});
/** Direct to s3rver (for the test's own looks), not through the proxy. */
let direct: ReturnType<typeof createS3Client>;
const opened: S3Storage[] = [];

/** A TCP proxy in front of s3rver that sees the requests and can cut every connection. */
type CountingProxy = {
  port: number;
  requests: string[];
  /** After `bytes` more client bytes, every connection is cut and new ones are refused. */
  cutAfter(bytes: number): void;
  close(): Promise<void>;
};

async function startProxy(target: number): Promise<CountingProxy> {
  const sockets = new Set<net.Socket>();
  const requests: string[] = [];
  let budget = Number.POSITIVE_INFINITY;
  let cut = false;
  const cutAll = () => {
    cut = true;
    for (const s of sockets) s.destroy();
  };
  const srv = net.createServer((client) => {
    if (cut) return void client.destroy();
    const up = net.connect(target, '127.0.0.1');
    sockets.add(client);
    sockets.add(up);
    client.on('data', (d: Buffer) => {
      const m = /^(GET|PUT|POST|HEAD|DELETE) (\S+)/.exec(d.subarray(0, 2048).toString('latin1'));
      if (m) requests.push(`${m[1]} ${m[2]}`);
      budget -= d.length;
      if (budget <= 0) return cutAll();
      up.write(d);
    });
    up.on('data', (d) => client.write(d));
    for (const s of [client, up]) {
      s.on('error', () => {});
      s.on('close', () => {
        sockets.delete(s);
        client.destroy();
        up.destroy();
      });
    }
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return {
    port: (srv.address() as net.AddressInfo).port,
    requests,
    cutAfter(bytes) {
      budget = bytes;
    },
    async close() {
      cutAll();
      await new Promise((r) => srv.close(r));
    },
  };
}

before(async () => {
  kit = await startBackupKit();
  s3dir = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-s3-'));
  server = new S3rver({ address: '127.0.0.1', port: 0, directory: s3dir, silent: true });
  port = (await server.run()).port;
  proxy = await startProxy(port);
  direct = createS3Client(s3opts(`http://127.0.0.1:${port}`));
  await direct.send(new CreateBucketCommand({ Bucket: BUCKET }));
});
after(async () => {
  for (const s of opened) s.destroy();
  direct?.destroy();
  await proxy?.close();
  server?.httpServer?.closeAllConnections();
  await server?.close();
  await kit?.close();
  if (s3dir) await fs.rm(s3dir, { recursive: true, force: true });
});

/** The backup handlers with off-site copies to `endpoint` (default: through the proxy). */
function offsiteJobs(endpoint = `http://127.0.0.1:${proxy.port}`, extra: Partial<BackupJobDeps> = {}) {
  const s3 = createS3Storage(s3opts(endpoint));
  opened.push(s3);
  const deps: BackupJobDeps = { ...kit.deps, ...extra, storage: withOffsiteCopy(kit.deps.storage, s3) };
  return { s3, deps, jobs: new Map(backupHandlers(deps)) };
}

async function objectBytes(key: string): Promise<Buffer | null> {
  try {
    const r = await direct.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
    return Buffer.from(await r.Body!.transformToByteArray());
  } catch (err) {
    if ((err as { name?: string }).name === 'NoSuchKey') return null;
    throw err;
  }
}

async function headStatus(key: string): Promise<number> {
  try {
    await direct.send(new HeadObjectCommand({ Bucket: BUCKET, Key: key }));
    return 200;
  } catch (err) {
    return (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode ?? 0;
  }
}

/** Random bytes (incompressible) so that the archive spans more than one multipart part. */
async function fill(t: Tenant, blobs: number): Promise<void> {
  const c = await kit.tenants.loginOwner(t);
  try {
    await c.query(`
      CREATE EXTENSION pgcrypto;
      CREATE TABLE public.items (id int PRIMARY KEY, label text NOT NULL);
      INSERT INTO public.items SELECT g, 'item ' || g FROM generate_series(1, 400) g;
      CREATE TABLE public.blobs (id int PRIMARY KEY, data bytea NOT NULL);
      INSERT INTO public.blobs SELECT g, public.gen_random_bytes(1024) FROM generate_series(1, ${blobs}) g;
      CREATE SEQUENCE public.ticket START 50;
      SELECT nextval('public.ticket') FROM generate_series(1, 3);
    `);
  } finally {
    await c.end();
  }
}

const QUERIES = [
  'SELECT * FROM public.items ORDER BY id',
  "SELECT count(*) AS n, md5(string_agg(encode(data, 'hex'), '' ORDER BY id)) AS h FROM public.blobs",
  'SELECT last_value, is_called FROM public.ticket',
];
async function snapshot(t: Pick<Tenant, 'name' | 'user' | 'password'>): Promise<string[]> {
  const c = await kit.tenants.loginOwner(t);
  try {
    const out: string[] = [];
    for (const q of QUERIES) out.push(await rowsOf(c, q));
    return out;
  } finally {
    await c.end();
  }
}

type Made = { id: string; key: Buffer; result: BackupCreateResult };
async function backup(jobs: Map<string, import('../src/agent/jobs/job-context.ts').JobHandler>, t: Tenant) {
  const id = randomUUID();
  const key = randomBytes(32);
  const result = (await jobs.get('backup.create')!(
    { backup_id: id, database_id: t.id, name: t.name },
    kit.ctx(key),
  )) as BackupCreateResult;
  return { id, key, result } satisfies Made;
}
const expectedOf = (b: Made) => ({
  sha256: b.result.sha256,
  tables: b.result.tables,
  tables_total: b.result.tables_total,
  objects: b.result.objects,
});

let made: { source: Tenant; b: Made; before: string[] };

test('a backup is copied off-site, multipart, under a key of ids only, byte for byte the local archive', async () => {
  const source = await kit.tenants.create('s3');
  await fill(source, 7000);
  const before = await snapshot(source);
  const { jobs, s3 } = offsiteJobs();
  const seen = proxy.requests.length;
  const b = await backup(jobs, source);
  const ref = { databaseId: source.id, backupId: b.id };
  const key = `${PREFIX}${source.id}/${b.id}.bulwark-backup`;
  assert.equal(b.result.offsite_key, key);
  assert.equal(s3.keyOf(ref), key);
  assert.ok(!key.includes(source.name), 'the object key carries no database name');

  const local = await fs.readFile(kit.deps.storage.pathOf(ref));
  assert.ok(local.length > PART, `the archive (${local.length} bytes) spans more than one part`);
  const remote = await objectBytes(key);
  assert.ok(remote, 'the object exists');
  assert.equal(remote.length, b.result.size_bytes);
  assert.ok(remote.equals(local), 'the object holds the local archive');
  // It went up as a multipart upload (created, parts, completed).
  const mine = proxy.requests.slice(seen);
  assert.ok(
    mine.some((r) => r.startsWith('POST ') && r.includes('?uploads')),
    mine.join('\n'),
  );
  assert.ok(mine.filter((r) => r.startsWith('PUT ') && r.includes('partNumber=')).length >= 2);
  assert.ok(mine.some((r) => r.startsWith('POST ') && r.includes('uploadId=')));
  made = { source, b, before };

  // A drill proves both copies: the local one restored, the object read whole and verified.
  const drill = await jobs.get('backup.drill')!(
    { backup_id: b.id, database_id: source.id, name: source.name, expected: expectedOf(b) },
    kit.ctx(b.key),
  );
  assert.equal(drill.verified, true);
  assert.equal(drill.offsite_verified, true);
});

test('a drill refuses a tampered off-site copy before pg_restore starts, though the local one is good', async () => {
  assert.ok(made, 'needs the first test');
  const { source, b } = made;
  const started: string[] = [];
  const { jobs, s3 } = offsiteJobs(undefined, { onTool: (tool) => started.push(tool) });
  const key = s3.keyOf({ databaseId: source.id, backupId: b.id });
  const good = (await objectBytes(key))!;
  const bad = Buffer.from(good);
  bad[Math.floor(bad.length / 3)]! ^= 0x40;
  await direct.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: bad }));
  try {
    await assert.rejects(
      jobs.get('backup.drill')!(
        { backup_id: b.id, database_id: source.id, name: source.name, expected: expectedOf(b) },
        kit.ctx(b.key),
      ),
      /off-site copy refused/,
    );
    assert.deepEqual(started, [], 'pg_restore never started');
  } finally {
    await direct.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: good }));
  }
});

test('with the local archive gone, a restore and a drill read the object: the same data', async () => {
  assert.ok(made, 'needs the first test');
  const { source, b, before } = made;
  const { jobs } = offsiteJobs();
  await fs.rm(kit.deps.storage.pathOf({ databaseId: source.id, backupId: b.id }));

  const name = uniqueName('s3r');
  const id = randomUUID();
  const password = newPassword();
  const restored = await jobs.get('backup.restore')!(
    {
      backup_id: b.id,
      database_id: id,
      name,
      mode: 'new',
      source: { database_id: source.id, name: source.name },
      expected: expectedOf(b),
      create: {
        database_id: id,
        name,
        verifier: scramVerifier(password),
        allowlist: [{ cidr: '127.0.0.1/32', expires_at: null }],
        limits: DEFAULT_LIMITS,
      },
    },
    kit.ctx(b.key, password),
  );
  assert.equal(restored.verified, true);
  assert.equal(restored.rows_checked, 400 + 7000);
  assert.deepEqual(await snapshot({ name, user: roleNames(name).owner, password }), before);

  const drill = await jobs.get('backup.drill')!(
    { backup_id: b.id, database_id: source.id, name: source.name, expected: expectedOf(b) },
    kit.ctx(b.key),
  );
  assert.equal(drill.verified, true);
  assert.equal(drill.rows_checked, 7400);
  assert.equal(drill.offsite_verified, true);
  // The restore read the bucket; nothing was written back to the backup dir.
  await assert.rejects(fs.stat(kit.deps.storage.pathOf({ databaseId: source.id, backupId: b.id })), {
    code: 'ENOENT',
  });
});

test('with only the object left, a tampered one is refused before anything is made; delete removes it', async () => {
  assert.ok(made, 'needs the first test');
  const { source, b } = made;
  const started: string[] = [];
  const { jobs, s3 } = offsiteJobs(undefined, { onTool: (tool) => started.push(tool) });
  const ref = { databaseId: source.id, backupId: b.id };
  const key = s3.keyOf(ref);
  const bad = Buffer.from((await objectBytes(key))!);
  bad[Math.floor(bad.length / 2)]! ^= 0x01;
  await direct.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: bad }));
  const name = uniqueName('s3t');
  const id = randomUUID();
  const password = newPassword();
  await assert.rejects(
    jobs.get('backup.restore')!(
      {
        backup_id: b.id,
        database_id: id,
        name,
        mode: 'new',
        source: { database_id: source.id, name: source.name },
        expected: expectedOf(b),
        create: {
          database_id: id,
          name,
          verifier: scramVerifier(password),
          allowlist: [{ cidr: '127.0.0.1/32', expires_at: null }],
          limits: DEFAULT_LIMITS,
        },
      },
      kit.ctx(b.key, password),
    ),
    /backup archive refused/,
  );
  assert.deepEqual(started, [], 'pg_restore never started');
  const target = await kit.tenants.kit.admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
  assert.equal(target.rows.length, 0, 'no target database was made');

  const del = jobs.get('backup.delete')!;
  assert.deepEqual(await del({ backup_id: b.id, database_id: source.id }, kit.ctx(b.key)), { deleted: true });
  assert.equal(await headStatus(key), 404);
  assert.deepEqual(await del({ backup_id: b.id, database_id: source.id }, kit.ctx(b.key)), {
    deleted: false,
  });
});

test('a failed upload fails the backup and leaves no object and no file', async () => {
  const source = await kit.tenants.create('s3f');
  await fill(source, 7000);
  const dbDir = path.join(kit.dir, source.id);
  const filesLeft = async () => (await fs.readdir(dbDir).catch(() => [] as string[])).length;

  // A closed port: nothing answers.
  const closed = await new Promise<number>((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  const down = offsiteJobs(`http://127.0.0.1:${closed}`);
  await assert.rejects(down.s3.check(), /ECONNREFUSED/);
  await offsiteJobs().s3.check();
  const b1 = randomUUID();
  await assert.rejects(
    down.jobs.get('backup.create')!(
      { backup_id: b1, database_id: source.id, name: source.name },
      kit.ctx(randomBytes(32)),
    ),
    /ECONNREFUSED/,
  );
  assert.equal(await filesLeft(), 0);
  assert.equal(await headStatus(down.s3.keyOf({ databaseId: source.id, backupId: b1 })), 404);

  // The connection is cut mid-upload (after the first part went through).
  const cutting = await startProxy(port);
  try {
    const mid = offsiteJobs(`http://127.0.0.1:${cutting.port}`);
    const b2 = randomUUID();
    // Let the job's first requests through, then cut while the parts are on the wire.
    cutting.cutAfter(PART + 1024 * 1024);
    await assert.rejects(
      mid.jobs.get('backup.create')!(
        { backup_id: b2, database_id: source.id, name: source.name },
        kit.ctx(randomBytes(32)),
      ),
      /off-site copy failed/,
    );
    assert.ok(
      cutting.requests.some((r) => r.includes('partNumber=')),
      'the upload had begun',
    );
    assert.equal(await filesLeft(), 0, 'no archive, no .partial');
    assert.equal(await headStatus(mid.s3.keyOf({ databaseId: source.id, backupId: b2 })), 404);
  } finally {
    await cutting.close();
  }

  // The same backup id succeeds once the store answers again.
  const { jobs } = offsiteJobs();
  const ok = (await jobs.get('backup.create')!(
    { backup_id: b1, database_id: source.id, name: source.name },
    kit.ctx(randomBytes(32)),
  )) as BackupCreateResult;
  assert.equal(ok.offsite_key, `${PREFIX}${source.id}/${b1}.bulwark-backup`);
  assert.equal(await filesLeft(), 1);
  // Delete removes both copies.
  const key = ok.offsite_key!;
  assert.equal(await headStatus(key), 200);
  assert.deepEqual(
    await jobs.get('backup.delete')!({ backup_id: b1, database_id: source.id }, kit.ctx(randomBytes(32))),
    {
      deleted: true,
    },
  );
  assert.equal(await filesLeft(), 0);
  assert.equal(await headStatus(key), 404);
});

test('an upload abandoned after some parts went up leaves no object; a committed one is whole', async () => {
  const s3 = createS3Storage(s3opts(`http://127.0.0.1:${port}`));
  opened.push(s3);
  const ref = { databaseId: randomUUID(), backupId: randomUUID() };
  const data = randomBytes(2 * PART + 12345);
  const pending = await s3.create(ref, data.length);
  pending.stream.write(data.subarray(0, 2 * PART + 1));
  // Parts are on their way (the upload reads as it comes); then the writer gives up.
  await new Promise((r) => setTimeout(r, 300));
  await pending.abort();
  assert.equal(await headStatus(s3.keyOf(ref)), 404);
  assert.equal(await s3.exists(ref), false);

  const again = await s3.create(ref, data.length);
  again.stream.end(data);
  assert.deepEqual(await again.commit(), { sizeBytes: data.length });
  assert.ok((await objectBytes(s3.keyOf(ref)))?.equals(data));
  await assert.rejects(s3.create(ref), /already exists/);
  assert.equal(await s3.remove(ref), true);
  assert.equal(await s3.remove(ref), false);
});

test('config: the off-site settings, secrets from _FILE, incomplete or plain-http settings refused', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-s3cfg-'));
  try {
    const secretFile = path.join(dir, 's3-secret');
    await fs.writeFile(secretFile, 'a-real-looking-secret-key-0123456789\n', { mode: 0o600 });
    const base = {
      BULWARK_SERVER_URL: 'http://127.0.0.1:1',
      BULWARK_AGENT_STATE_DIR: dir,
      BULWARK_AGENT_ADMIN_DATABASE_URL: 'postgres://x@127.0.0.1/postgres',
    };
    const ok = loadAgentConfig({
      env: {
        ...base,
        BULWARK_BACKUP_S3_ENDPOINT: 'https://s3.example.net',
        BULWARK_BACKUP_S3_BUCKET: 'my-backups',
        BULWARK_BACKUP_S3_PREFIX: 'eu-1/',
        BULWARK_BACKUP_S3_ACCESS_KEY_ID: 'AKIAEXAMPLE0001',
        BULWARK_BACKUP_S3_SECRET_ACCESS_KEY_FILE: secretFile,
      },
    });
    assert.ok(ok.ok, JSON.stringify(!ok.ok && ok.errors));
    assert.deepEqual(backupS3Options(ok.config), {
      endpoint: 'https://s3.example.net',
      region: 'us-east-1',
      bucket: 'my-backups',
      prefix: 'eu-1/',
      forcePathStyle: true,
      credentials: {
        accessKeyId: 'AKIAEXAMPLE0001',
        secretAccessKey: 'a-real-looking-secret-key-0123456789',
      },
    });
    const aws = loadAgentConfig({
      env: {
        ...base,
        BULWARK_BACKUP_S3_BUCKET: 'my-backups',
        BULWARK_BACKUP_S3_REGION: 'eu-west-1',
        BULWARK_BACKUP_S3_ACCESS_KEY_ID: 'AKIAEXAMPLE0001',
        BULWARK_BACKUP_S3_SECRET_ACCESS_KEY: 'a-real-looking-secret-key-0123456789',
      },
    });
    assert.ok(aws.ok);
    assert.equal(backupS3Options(aws.config)?.forcePathStyle, false, 'AWS: virtual-hosted URLs');
    assert.equal(backupS3Options(aws.config)?.region, 'eu-west-1');
    const none = loadAgentConfig({ env: base });
    assert.ok(none.ok);
    assert.equal(backupS3Options(none.config), undefined);

    const bad = (env: Record<string, string>) => {
      const r = loadAgentConfig({ env: { ...base, ...env } });
      assert.equal(r.ok, false, JSON.stringify(env));
      return (r as { errors: string[] }).errors.join('\n');
    };
    assert.match(bad({ BULWARK_BACKUP_S3_BUCKET: 'my-backups' }), /access key id and the secret/);
    assert.match(
      bad({
        BULWARK_BACKUP_S3_ENDPOINT: 'http://s3.example.net',
        BULWARK_BACKUP_S3_BUCKET: 'my-backups',
        BULWARK_BACKUP_S3_ACCESS_KEY_ID: 'AKIAEXAMPLE0001',
        BULWARK_BACKUP_S3_SECRET_ACCESS_KEY: 'a-real-looking-secret-key-0123456789',
      }),
      /plain http/,
    );
    assert.match(bad({ BULWARK_BACKUP_S3_PREFIX: '../x/' }), /backupS3Prefix/);
    assert.match(bad({ BULWARK_BACKUP_S3_BUCKET: 'No_Such' }), /bucket name/);
    assert.match(
      bad({
        BULWARK_BACKUP_S3_BUCKET: 'my-backups',
        BULWARK_BACKUP_S3_ACCESS_KEY_ID: 'AKIAEXAMPLE0001',
        BULWARK_BACKUP_S3_SECRET_ACCESS_KEY: 'changeme',
      }),
      /placeholder/,
    );
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test('the agent wiring: with S3 options, the backup jobs copy off-site and an unreachable store is logged', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-s3wire-'));
  try {
    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(l) });
    const wired = await startBackups({
      database: kit.tenants.kit.deps,
      admin: kit.tenants.kit.admin,
      stateDir: dir,
      backupDir: path.join(dir, 'backups'),
      pgBinDir: testEnv().pgBin,
      offsite: s3opts('http://127.0.0.1:1'),
      log,
    });
    assert.ok(wired?.storage.copyOffsite && wired.storage.offsite, 'off-site copies wired');
    const plain = await startBackups({
      database: kit.tenants.kit.deps,
      admin: kit.tenants.kit.admin,
      stateDir: dir,
      backupDir: path.join(dir, 'backups'),
      pgBinDir: testEnv().pgBin,
      log,
    });
    assert.equal(plain?.storage.copyOffsite, undefined);
    for (let i = 0; i < 100 && !lines.some((l) => l.includes('off-site storage not reachable')); i++)
      await new Promise((r) => setTimeout(r, 50));
    assert.ok(lines.some((l) => l.includes('off-site storage not reachable')));
    assert.ok(!lines.some((l) => l.includes('S3RVER')), 'no credential in the log');
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});
