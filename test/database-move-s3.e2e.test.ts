/**
 * A move between nodes that share no directory, only an S3 bucket (ADR 0031, the multi-host way):
 * each agent has its own backup directory and off-site copies to the same bucket (s3rver on
 * loopback). The source's archive reaches the target through the bucket; the move switches, the
 * rows are on B, and neither backup directory nor the bucket keeps the move's archive.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { CreateBucketCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import pg from 'pg';
import S3rver from 's3rver';
import { startTwoNodes, type TwoNodes } from './helpers/two-nodes.ts';
import { waitUntil } from './helpers/wait.ts';

const BUCKET = 'bulwark-moves';
let nodes: TwoNodes;
let s3: S3rver;
let s3dir: string;
let client: S3Client;
const dirs: string[] = [];

before(async () => {
  s3dir = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-move-s3-'));
  s3 = new S3rver({ address: '127.0.0.1', port: 0, directory: s3dir, silent: true });
  const endpoint = `http://127.0.0.1:${(await s3.run()).port}`;
  client = new S3Client({
    endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
  });
  await client.send(new CreateBucketCommand({ Bucket: BUCKET }));
  const backup = async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-move-own-'));
    dirs.push(dir);
    return dir;
  };
  const own = { 'move-a': await backup(), 'move-b': await backup() };
  nodes = await startTwoNodes({
    account: 'moves-s3',
    backup: (node) => ({
      backupDir: own[node],
      backupS3Endpoint: endpoint,
      backupS3Bucket: BUCKET,
      backupS3AccessKeyId: 'S3RVER',
      backupS3SecretAccessKey: 'S3RVER',
      backupS3ForcePathStyle: true,
    }),
  });
});

after(async () => {
  await nodes?.stop();
  client?.destroy();
  s3?.httpServer?.closeAllConnections();
  await s3?.close();
  for (const d of [s3dir, ...dirs]) if (d) await fs.rm(d, { recursive: true, force: true });
});

test('a database moves to a node that shares only the S3 bucket with its source', async () => {
  const { api, poolerA, portB } = nodes;
  const name = `mv_${randomBytes(4).toString('hex')}`;
  assert.equal((await api('POST', '/v1/databases', { name, node: 'move-a' })).statusCode, 202);
  await waitUntil('ready', async () => {
    const d = (await api('GET', `/v1/databases/${name}`)).json();
    assert.notEqual(d.status, 'failed', d.failure_reason);
    return d.status === 'ready' ? true : undefined;
  });
  const { password } = (await api('POST', `/v1/databases/${name}/credentials/reveal`)).json();
  // Its name on the node is generated (ADR 0039), never the label; the move keeps it.
  const { database, user } = (await api('GET', `/v1/databases/${name}/connection`)).json();
  assert.notEqual(database, name);
  assert.equal(user, `${database}_owner`);
  const login = async (port: number) => {
    const c = new pg.Client({ host: '127.0.0.1', port, user, database, password });
    c.on('error', () => {});
    await c.connect();
    return c;
  };
  const a = await login(poolerA.port);
  await a.query(`CREATE TABLE t (id serial PRIMARY KEY, v text);
                 INSERT INTO t (v) SELECT md5(g::text) FROM generate_series(1, 1000) g;`);
  const rows = (await a.query('SELECT * FROM t ORDER BY id')).rows;
  await a.end();

  const r = await api('POST', `/v1/databases/${name}/move`, { node: 'move-b' });
  assert.equal(r.statusCode, 202, r.body);
  const move = await waitUntil('move finished', async () => {
    const m = (await api('GET', `/v1/databases/${name}/move`)).json();
    return m.status === 'switched' || m.status === 'failed' ? m : undefined;
  });
  assert.equal(move.status, 'switched', move.error);
  const b = await login(portB);
  try {
    assert.deepEqual((await b.query('SELECT * FROM t ORDER BY id')).rows, rows);
  } finally {
    await b.end();
  }
  // The move's archive is gone from both directories (the source's once its clean-up ran) and
  // from the bucket.
  await waitUntil('archives removed', async () => {
    for (const dir of dirs) {
      const files = await fs.readdir(dir, { recursive: true });
      if (files.some((f) => String(f).includes(move.id))) return undefined;
    }
    return true;
  });
  const listed = await client.send(new ListObjectsV2Command({ Bucket: BUCKET }));
  assert.ok(!(listed.Contents ?? []).some((o) => o.Key?.includes(move.id)));
});
