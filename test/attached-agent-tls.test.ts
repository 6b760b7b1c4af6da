/**
 * Attached databases over TLS (ADR 0031): a PostgreSQL cluster started here with a self-signed
 * certificate. `sslmode: require` reads (explorer), writes (governed execution) and cancels
 * through TLS — the sessions are encrypted on the server's own view (pg_stat_ssl), the cancel is
 * sent inside TLS; `verify-full` refuses the untrusted certificate, for the login and the cancel.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import pg from 'pg';
import type { AttachedDatabase } from '../src/agent/attached/attached-config.ts';
import { cancelAttachedBackend } from '../src/agent/attached/attached-connect.ts';
import { createAgentVerifier } from '../src/agent/execution/agent-verifier.ts';
import { openPinnedKeys } from '../src/agent/execution/execution-keys.ts';
import { createExecutionRoles } from '../src/agent/execution/execution-role.ts';
import { REPLAY_CACHE_FILE } from '../src/agent/execution/execution-setup.ts';
import { createExecutionExecutor } from '../src/agent/execution/executor.ts';
import { createReplayCache, type ReplayCache } from '../src/agent/execution/replay-cache.ts';
import { type DataPlane, startDataPlane } from '../src/embedded/data-plane.ts';
import { dataLayout } from '../src/embedded/layout.ts';
import { chownToService, resolveServiceUser } from '../src/embedded/service-user.ts';
import { createLogger } from '../src/shared/logger.ts';
import { loadExplorerParser } from '../src/shared/sql/explorer-validator.ts';
import { testEnv } from './helpers/env.ts';
import { createExecutionHarness, signedRequest, TEST_NODE } from './helpers/execution-agent.ts';
import { adminPool, queryPayload, TEST_AGENT_KEY, type Tenant, testExecutor } from './helpers/explorer.ts';
import { freePort } from './helpers/ports.ts';

const run = promisify(execFile);
const log = createLogger('attached-tls-test', 'silent');
const pw = { reader: randomBytes(18).toString('base64url'), migrator: randomBytes(18).toString('base64url') };
const ID = randomUUID();
let plane: DataPlane;
let root: string;
let pgPort: number;
let admin: pg.Pool;
let h: Awaited<ReturnType<typeof createExecutionHarness>>;
let replay: ReplayCache | null = null;

async function asAdmin(db: string, sql: string): Promise<pg.QueryResult> {
  const c = new pg.Client({ connectionString: plane.adminUrl.replace(/\/[^/]*$/, `/${db}`) });
  await c.connect();
  try {
    return await c.query(sql);
  } finally {
    await c.end();
  }
}

const entry = (sslmode: AttachedDatabase['sslmode']): AttachedDatabase => ({
  name: 'vault',
  account_id: randomUUID(),
  host: '127.0.0.1',
  port: pgPort,
  database: 'app',
  sslmode,
  reader: { user: 'app_reader', password: pw.reader },
  migrator: { user: 'app_migrator', password: pw.migrator },
});
const only = (db: AttachedDatabase) => ({ get: (id: string) => (id === ID ? db : null) });
const permissive = () => ({ ok: true as const, kind: 'select' as const, redacted: '' });

before(async () => {
  await loadExplorerParser();
  const env = testEnv();
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-attached-tls-'));
  await fs.chmod(root, 0o711);
  pgPort = await freePort();
  const user = resolveServiceUser();
  plane = await startDataPlane({
    layout: dataLayout(path.join(root, 'cluster')),
    ports: { postgres: pgPort, pooler: await freePort() },
    user,
    unsafeFast: true,
    binaries: { pgBin: env.pgBin, pgbouncerBin: env.pgbouncerBin },
    log: () => {},
  });
  // A self-signed certificate for 127.0.0.1: encrypts, but no public CA vouches for it.
  const tlsDir = path.join(root, 'tls');
  await fs.mkdir(tlsDir, { mode: 0o711 });
  const crt = path.join(tlsDir, 'server.crt');
  const key = path.join(tlsDir, 'server.key');
  await run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    key,
    '-out',
    crt,
    '-days',
    '1',
    '-subj',
    '/CN=127.0.0.1',
    '-addext',
    'subjectAltName=IP:127.0.0.1',
  ]);
  await fs.chmod(key, 0o600);
  await fs.chmod(crt, 0o644);
  await chownToService(key, user);
  await chownToService(crt, user);
  for (const sql of [
    `ALTER SYSTEM SET ssl_cert_file = '${crt}'`,
    `ALTER SYSTEM SET ssl_key_file = '${key}'`,
    'ALTER SYSTEM SET ssl = on',
  ])
    await asAdmin('postgres', sql);
  await asAdmin('postgres', 'SELECT pg_reload_conf()');
  const deadline = Date.now() + 10_000;
  while ((await asAdmin('postgres', 'SHOW ssl')).rows[0]?.ssl !== 'on') {
    assert.ok(Date.now() < deadline, 'ssl did not come on');
    await new Promise((r) => setTimeout(r, 100));
  }
  await asAdmin(
    'postgres',
    `CREATE ROLE app_owner NOLOGIN;
     CREATE ROLE app_reader LOGIN PASSWORD '${pw.reader}';
     CREATE ROLE app_migrator LOGIN PASSWORD '${pw.migrator}';`,
  );
  await asAdmin('postgres', 'CREATE DATABASE app OWNER app_owner');
  await asAdmin(
    'app',
    `REVOKE CREATE ON SCHEMA public FROM PUBLIC;
     CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL);
     INSERT INTO items SELECT g, 0 FROM generate_series(1, 5) g;
     ALTER TABLE items OWNER TO app_owner;
     GRANT USAGE ON SCHEMA public TO app_reader, app_migrator;
     GRANT SELECT ON items TO app_reader;
     GRANT SELECT, UPDATE ON items TO app_migrator;`,
  );
  admin = adminPool();
  h = await createExecutionHarness(admin);
});

after(async () => {
  replay?.close();
  await h?.close();
  await admin?.end();
  await plane?.stop();
  if (root) await fs.rm(root, { recursive: true, force: true });
});

/** Sessions of `user` on the private cluster, and how many of them are encrypted. */
async function sessions(user: string): Promise<{ all: number; tls: number }> {
  const r = await asAdmin(
    'postgres',
    `SELECT count(*)::int AS all, count(*) FILTER (WHERE s.ssl)::int AS tls
       FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = '${user}'`,
  );
  return r.rows[0] as { all: number; tls: number };
}

test('sslmode require: the explorer reads through TLS and its cancel reaches the server inside TLS', async () => {
  const e = testExecutor(admin, { attached: only(entry('require')), validate: permissive });
  try {
    const o = await e.runQuery(
      queryPayload({ id: ID, name: 'vault' }, 'SELECT id FROM items ORDER BY id'),
      new AbortController().signal,
    );
    assert.equal(o.kind, 'rows', JSON.stringify(o));
    if (o.kind === 'rows') assert.equal(o.output.row_count, 5);
    await e.settled();
    const s = await sessions('app_reader');
    assert.ok(s.all >= 1 && s.tls === s.all, JSON.stringify(s));
    const schema = await e.readSchema({ database_id: ID, name: 'vault' });
    assert.deepEqual(
      schema.tables.map((t) => t.name),
      ['items'],
    );
    const ac = new AbortController();
    const started = Date.now();
    setTimeout(() => ac.abort(), 300);
    const slow = await e.runQuery(
      queryPayload({ id: ID, name: 'vault' }, 'SELECT pg_sleep(20)', { statement_timeout_ms: 20_000 }),
      ac.signal,
    );
    assert.equal(slow.kind, 'error', JSON.stringify(slow));
    if (slow.kind === 'error') assert.equal(slow.error.sqlstate, '57014');
    assert.ok(Date.now() - started < 15_000, 'the cancel never reached the statement');
  } finally {
    await e.close();
  }
});

test('sslmode require: governed execution writes as the migrator through TLS', async () => {
  replay = createReplayCache({ file: path.join(h.stateDir, REPLAY_CACHE_FILE), maxEntries: 1_000 });
  const keys = await openPinnedKeys({ stateDir: h.stateDir, fetchKeys: null, log });
  const ex = createExecutionExecutor({
    verifier: createAgentVerifier({ keys, nodeId: TEST_NODE, capabilities: ['reader', 'migrator'], replay }),
    roles: createExecutionRoles({ admin, key: TEST_AGENT_KEY }),
    admin,
    pgHost: '127.0.0.1',
    pgPort: testEnv().pgPort,
    log,
    attached: only(entry('require')),
  });
  try {
    const o = await ex.execute(
      signedRequest(h.ring, { id: ID, name: 'vault' } as Tenant, {
        sql: 'UPDATE items SET qty = 7 WHERE id = 1',
        approvedRows: 1,
      }),
      new AbortController().signal,
    );
    assert.equal(o.kind, 'executed', JSON.stringify(o));
    assert.deepEqual((await asAdmin('app', 'SELECT qty FROM items WHERE id = 1')).rows, [{ qty: 7 }]);
    const s = await sessions('app_migrator');
    assert.ok(s.tls === s.all, JSON.stringify(s));
  } finally {
    await ex.close();
  }
});

test('sslmode verify-full refuses a certificate no CA vouches for: no login, no cancel', async () => {
  const e = testExecutor(admin, { attached: only(entry('verify-full')) });
  try {
    await assert.rejects(
      e.runQuery(queryPayload({ id: ID, name: 'vault' }, 'SELECT 1'), new AbortController().signal),
      /self[- ]signed|certificate/i,
    );
    await assert.rejects(e.readSchema({ database_id: ID, name: 'vault' }), /self[- ]signed|certificate/i);
  } finally {
    await e.close();
  }
  await assert.rejects(
    cancelAttachedBackend({ host: '127.0.0.1', port: pgPort, sslmode: 'verify-full' }, 1, 1),
    /self[- ]signed|certificate/i,
  );
  // `require` takes it (encryption without verification), the cancel is sent.
  await cancelAttachedBackend({ host: '127.0.0.1', port: pgPort, sslmode: 'require' }, 1, 1);
});

test('bytes sent after the TLS answer, before any encryption, fail the connection and the cancel', async () => {
  // A man in the middle answering 'S' with a startup reply of its own in the same segment.
  const server = net.createServer((socket) => {
    socket.once('data', () => socket.write(Buffer.from('SR\0\0\0\x08\0\0\0\0', 'latin1')));
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  try {
    const e = testExecutor(admin, { attached: only({ ...entry('require'), port }) });
    try {
      await assert.rejects(
        e.runQuery(queryPayload({ id: ID, name: 'vault' }, 'SELECT 1'), new AbortController().signal),
        /unencrypted bytes followed the TLS answer/,
      );
    } finally {
      await e.close();
    }
    await assert.rejects(
      cancelAttachedBackend({ host: '127.0.0.1', port, sslmode: 'require' }, 1, 1),
      /unencrypted bytes followed the TLS answer/,
    );
  } finally {
    server.close();
  }
});
