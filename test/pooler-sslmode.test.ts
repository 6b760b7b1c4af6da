import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { ensurePoolerTls } from '../src/agent/pgbouncer/pooler-tls.ts';
import { POOLER_ADMIN } from '../src/embedded/layout.ts';
import { pgBinDir } from '../src/embedded/postgres-cluster.ts';
import { callerFor, enrollFakeAgent } from './helpers/databases.ts';
import { testEnv } from './helpers/env.ts';
import { createTestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { type PrivatePooler, startPrivatePooler } from './pooler-harness.ts';

const run = promisify(execFile);
let p: PrivatePooler;
let s: TestServer;
before(async () => {
  p = await startPrivatePooler();
  // As the agent runs it on loopback: its self-signed certificate, TLS offered (not required).
  const tls = await ensurePoolerTls({ dir: p.dir, listenAddr: '127.0.0.1' });
  assert.equal(tls.sslmode, 'prefer');
  await p
    .manager({
      settings: { tls: { certFile: tls.certFile, keyFile: tls.keyFile, sslmode: tls.sslmode } },
      clientSsl: tls.clientSsl,
    })
    .start();
  // The server's own default sslmode (no override).
  s = await createTestServer({ poolerPort: p.port });
  await enrollFakeAgent(s, 'n1');
});
after(async () => {
  await s?.stop();
  await p?.stop();
});

/** psql (libpq's sslmode semantics) to the pooler console, at the host, port and sslmode of `uri`. */
async function psqlLogin(uri: string): Promise<string> {
  const u = new URL(uri);
  u.username = POOLER_ADMIN;
  u.pathname = '/pgbouncer';
  const { stdout } = await run(
    path.join(pgBinDir(testEnv().pgBin), 'psql'),
    [u.toString(), '-XAt', '-c', 'SHOW VERSION'],
    {
      env: { ...process.env, PGPASSWORD: p.adminPassword, PGCONNECT_TIMEOUT: '5' },
    },
  );
  return stdout;
}

test('connection info says sslmode=require, and a login with exactly that works through the loopback pooler', async () => {
  const k = await createTestKey(s, { account: 'acme' });
  await s.databases.create(callerFor(k.accountId), { name: 'ssl_db' });
  const res = await s.app.inject({ url: '/v1/databases/ssl_db/connection', headers: k.headers });
  assert.equal(res.statusCode, 200, res.body);
  const conn = res.json() as { sslmode: string; uri: string; port: number };
  assert.equal(conn.sslmode, 'require');
  assert.equal(new URL(conn.uri).searchParams.get('sslmode'), 'require');
  assert.equal(conn.port, p.port);

  // libpq refuses sslmode=require without TLS: this login proves the pooler served TLS.
  assert.match(await psqlLogin(conn.uri), /PgBouncer/);
});
