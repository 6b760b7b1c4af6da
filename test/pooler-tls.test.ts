import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { clientSslModeFor, ensurePoolerTls } from '../src/agent/pgbouncer/pooler-tls.ts';
import { POOLER_ADMIN } from '../src/embedded/layout.ts';
import { type PrivatePooler, startPrivatePooler } from './pooler-harness.ts';

let p: PrivatePooler;
before(async () => {
  p = await startPrivatePooler();
});
after(async () => {
  await p.stop();
});

test('TLS is required beyond loopback and offered on loopback', () => {
  assert.equal(clientSslModeFor('127.0.0.1'), 'prefer');
  assert.equal(clientSslModeFor('127.0.0.1,::1'), 'prefer');
  assert.equal(clientSslModeFor('0.0.0.0'), 'require');
  assert.equal(clientSslModeFor('*'), 'require');
  assert.equal(clientSslModeFor('127.0.0.1,10.0.0.5'), 'require');
});

test('a self-signed certificate is made once; with sslmode=require plain logins are refused', async () => {
  const tls = await ensurePoolerTls({ dir: p.dir, listenAddr: '0.0.0.0' });
  assert.equal(tls.sslmode, 'require');
  const dirOwner = (await fs.stat(p.dir)).uid;
  for (const f of [tls.certFile, tls.keyFile]) {
    const st = await fs.stat(f);
    assert.equal(st.mode & 0o077, 0, `${f} is private`);
    assert.equal(st.uid, dirOwner, `${f} belongs to PgBouncer's user`);
  }
  const cert = await fs.readFile(tls.certFile, 'utf8');
  const again = await ensurePoolerTls({ dir: p.dir, listenAddr: '0.0.0.0' });
  assert.equal(await fs.readFile(again.certFile, 'utf8'), cert, 'kept across restarts');

  const m = p.manager({
    settings: { tls: { certFile: tls.certFile, keyFile: tls.keyFile, sslmode: tls.sslmode } },
    clientSsl: tls.clientSsl,
  });
  await m.start(); // the apply's proving login ran over TLS
  const login = (ssl: pg.ClientConfig['ssl'] | undefined) => {
    const c = new pg.Client({
      host: '127.0.0.1',
      port: p.port,
      user: POOLER_ADMIN,
      password: p.adminPassword,
      database: 'pgbouncer',
      ...(ssl ? { ssl } : {}),
    });
    c.on('error', () => {});
    return c
      .connect()
      .then(() => c.query('SHOW VERSION'))
      .then(
        () => null,
        (err: Error) => err.message,
      )
      .finally(() => c.end().catch(() => {}));
  };
  assert.match((await login(undefined)) ?? '', /SSL|TLS|ssl/i);
  assert.equal(await login(tls.clientSsl), null);
  const cfg = await m.admin('SHOW CONFIG');
  const mode = cfg.rows.find((r: { key: string }) => r.key === 'client_tls_sslmode') as { value: string };
  assert.equal(mode.value, 'require');
  m.stop();
});
