// Found by the review of ADR 0035 (older than it): a tenant's connection churn racing the agent's
// `KILL <db>` on PgBouncer's console (what database.rotate, database.allowlist when a range is
// removed and database.delete do) crashed PgBouncer 1.18 (segfault) after 1–41 cuts with 8
// clients reconnecting: PgBouncer ties a client to the database's pool when it names database and
// user, before authenticating it, and KILL frees the pool under a client still authenticating.
// The cut now refuses the database's logins first (hba reject, reload proven), waits until no
// client of it is authenticating, and only then kills (pooler-manager.ts, `disconnect`).
// Own PgBouncer: were it to die, nothing else is hit.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { databaseHandlers } from '../src/agent/jobs/database-handlers.ts';
import type { PoolerManager } from '../src/agent/pgbouncer/pooler-manager.ts';
import { ensureTenantTemplate } from '../src/agent/postgres/catalog-visibility.ts';
import { DEFAULT_LIMITS } from '../src/shared/contracts/jobs.ts';
import { roleNames } from '../src/shared/identifiers.ts';
import { scramVerifier } from '../src/shared/scram.ts';
import {
  clientFrom,
  databaseJobKit,
  newPassword,
  type PrivatePooler,
  startPrivatePooler,
  tryLogin,
  uniqueName,
} from './pooler-harness.ts';

let p: PrivatePooler;
let pooler: PoolerManager;
let kit: ReturnType<typeof databaseJobKit>;
before(async () => {
  p = await startPrivatePooler();
  pooler = p.manager();
  await pooler.start();
  kit = databaseJobKit(p, pooler);
  await ensureTenantTemplate(kit.admin, kit.connectAdmin);
});
after(async () => {
  await kit.close();
  await p.stop().catch(() => {});
});

const alive = () =>
  pooler.admin('SHOW VERSION').then(
    () => true,
    () => false,
  );
const poolerLog = () =>
  fs.readFile(path.join(path.dirname(p.dir), 'pgbouncer.log'), 'utf8').then((t) => t.slice(-1500), String);

async function coldCreate() {
  const password = newPassword();
  const name = uniqueName('zk');
  const h = new Map(databaseHandlers({ ...kit.deps, platform: { databases: ['bulwark'], roles: [] } }));
  await h.get('database.create')!(
    {
      database_id: randomUUID(),
      name,
      verifier: scramVerifier(password),
      allowlist: [{ cidr: '127.0.0.1/32', expires_at: null }],
      limits: DEFAULT_LIMITS,
    },
    kit.ctx(password),
  );
  return { database: name, user: roleNames(name).owner, password };
}

test('zz-attack: tenant connection churn racing cuts of its database does not crash PgBouncer', async () => {
  const l = await coldCreate();
  assert.equal(await tryLogin(clientFrom('127.0.0.1', { port: p.port, ...l })), null);
  let stop = false;
  const loops = Array.from({ length: 12 }, async () => {
    while (!stop) await tryLogin(clientFrom('127.0.0.1', { port: p.port, ...l }));
  });
  // Until 30 cuts or 12 s (the crash came within 1–41 cuts with 8 clients; a loaded host makes
  // the clients' SCRAM exchanges, and so each cut's wait for them, slower).
  const deadline = Date.now() + 12_000;
  let kills = 0;
  let up = true;
  while (Date.now() < deadline && up && kills < 30) {
    // Every other cut holds new clients (a move's freeze, a restore's swap) until RESUME.
    const hold = kills % 2 === 1;
    await pooler.disconnect(l.database, { hold }).catch(() => {});
    if (hold) await pooler.resume(l.database).catch(() => {});
    kills++;
    await new Promise((res) => setTimeout(res, 20));
    up = await alive();
  }
  stop = true;
  await Promise.all(loops);
  assert.ok(up, `PgBouncer died after ${kills} cuts; its log ends:\n${await poolerLog()}`);
  assert.ok(kills >= 8, `only ${kills} cuts in 12 s`);
  // And the tenant gets in again afterwards.
  assert.equal(await tryLogin(clientFrom('127.0.0.1', { port: p.port, ...l })), null);
});

/** A client that names the database and user, gets PgBouncer's SCRAM challenge and stalls there. */
async function stalledLogin(database: string, user: string): Promise<net.Socket> {
  const params = Buffer.from(`user\0${user}\0database\0${database}\0\0`);
  const startup = Buffer.alloc(8 + params.length);
  startup.writeInt32BE(startup.length, 0);
  startup.writeInt32BE(196608, 4);
  params.copy(startup, 8);
  const sock = net.connect({ host: '127.0.0.1', port: p.port });
  sock.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', () => sock.write(startup));
    // 'R' = an authentication request: PgBouncer now waits for this client's SASL answer.
    sock.once('data', (d) => (d[0] === 0x52 ? resolve() : reject(new Error(`unexpected ${d[0]}`))));
    setTimeout(() => reject(new Error('no authentication request')), 5_000).unref();
  });
  return sock;
}

test('zz-attack: a cut waits for a client stalled in its login, refusing new logins meanwhile', async () => {
  const l = await coldCreate();
  const stalled = await stalledLogin(l.database, l.user);
  const clients = await pooler.admin('SHOW SOCKETS');
  assert.ok(
    clients.rows.some((c) => c.type === 'C' && c.database === l.database && c.state === 'cl_login'),
    `the stalled client is listed as logging in: ${JSON.stringify(clients.rows.map((c) => [c.database, c.state]))}`,
  );
  let done = false;
  const cut = pooler.disconnect(l.database).then((r) => {
    done = true;
    return r;
  });
  await new Promise((res) => setTimeout(res, 600));
  assert.equal(done, false, 'the cut did not KILL while a client was authenticating');
  // Meanwhile the database's logins are refused (by PgBouncer's hba, before any exchange).
  const refused = await tryLogin(clientFrom('127.0.0.1', { port: p.port, ...l }));
  assert.ok(refused, 'a login during the cut is refused');
  const t = performance.now();
  stalled.destroy();
  assert.equal(await cut, true);
  assert.ok(performance.now() - t < 2_000, 'the cut went on once the stalled client was gone');
  assert.ok(await alive());
  // And the database takes logins again.
  assert.equal(await tryLogin(clientFrom('127.0.0.1', { port: p.port, ...l })), null);
});

test("zz-attack: a spare-style reconnect closes the database's PostgreSQL sessions and keeps PgBouncer up", async () => {
  const l = await coldCreate();
  const c = clientFrom('127.0.0.1', { port: p.port, ...l });
  await c.connect();
  const pid = (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
  await c.end();
  await pooler.reconnect(l.database);
  // The kept session is never handed out again: the next login gets another backend.
  const c2 = clientFrom('127.0.0.1', { port: p.port, ...l });
  await c2.connect();
  const pid2 = (await c2.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
  await c2.end();
  assert.notEqual(pid2, pid);
  assert.ok(await alive());
});

test('zz-attack: a held cut refuses new logins until resume, then the database serves at once', async () => {
  const l = await coldCreate();
  const before = clientFrom('127.0.0.1', { port: p.port, ...l });
  await before.connect();
  before.on('error', () => {});
  assert.equal(await pooler.disconnect(l.database, { hold: true }), true);
  await assert.rejects(before.query('SELECT 1'), 'the session before the cut is gone');
  // Refused at once (not left waiting on a paused database, which would hold the pool's logins
  // for PgBouncer's server_login_retry after the RESUME).
  const t = performance.now();
  assert.ok(await tryLogin(clientFrom('127.0.0.1', { port: p.port, ...l })), 'refused while held');
  assert.ok(performance.now() - t < 2_000);
  await pooler.resume(l.database);
  await pooler.resume(l.database); // idempotent
  assert.equal(await tryLogin(clientFrom('127.0.0.1', { port: p.port, ...l })), null);
  assert.ok(await alive());
});
