// Found by the review of ADR 0035 (older than it): a tenant's connection churn racing the agent's
// `KILL <db>` on PgBouncer's console (what database.rotate, database.allowlist when a range is
// removed and database.delete do) crashed PgBouncer 1.18 (segfault) after 1–41 cuts with 8
// clients reconnecting: PgBouncer ties a client to the database's pool when it names database and
// user, before authenticating it, and KILL frees the pool under a client still authenticating.
// The cut now refuses the database's logins first (hba reject, reload proven), waits until no
// client of it is authenticating, and only then kills (pooler-manager.ts, `disconnect`).
// Own PgBouncer: were it to die, nothing else is hit.
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { alive, coldCreate, cutKitPerFile, poolerLog, startupPacket } from './helpers/pooler-cut-kit.ts';
import { clientFrom, tryLogin } from './pooler-harness.ts';

const rig = cutKitPerFile();

test('zz-attack: tenant connection churn racing cuts of its database does not crash PgBouncer', async () => {
  const l = await coldCreate(rig, 'zk');
  assert.equal(await tryLogin(clientFrom('127.0.0.1', { port: rig.p.port, ...l })), null);
  let stop = false;
  const loops = Array.from({ length: 12 }, async () => {
    while (!stop) await tryLogin(clientFrom('127.0.0.1', { port: rig.p.port, ...l }));
  });
  // Until 30 cuts or 12 s (the crash came within 1–41 cuts with 8 clients; a loaded host makes
  // the clients' SCRAM exchanges, and so each cut's wait for them, slower).
  const deadline = Date.now() + 12_000;
  let kills = 0;
  let up = true;
  while (Date.now() < deadline && up && kills < 30) {
    // Every other cut holds new clients (a move's freeze, a restore's swap) until RESUME.
    const hold = kills % 2 === 1;
    await rig.pooler.disconnect(l.database, { hold }).catch(() => {});
    if (hold) await rig.pooler.resume(l.database).catch(() => {});
    kills++;
    await new Promise((res) => setTimeout(res, 20));
    up = await alive(rig);
  }
  stop = true;
  await Promise.all(loops);
  assert.ok(up, `PgBouncer died after ${kills} cuts; its log ends:\n${await poolerLog(rig)}`);
  assert.ok(kills >= 8, `only ${kills} cuts in 12 s`);
  // And the tenant gets in again afterwards.
  assert.equal(await tryLogin(clientFrom('127.0.0.1', { port: rig.p.port, ...l })), null);
});

/** A client that names the database and user, gets PgBouncer's SCRAM challenge and stalls there. */
async function stalledLogin(database: string, user: string): Promise<net.Socket> {
  const startup = startupPacket(user, database);
  const sock = net.connect({ host: '127.0.0.1', port: rig.p.port });
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
  const l = await coldCreate(rig, 'zk');
  const stalled = await stalledLogin(l.database, l.user);
  const clients = await rig.pooler.admin('SHOW SOCKETS');
  assert.ok(
    clients.rows.some((c) => c.type === 'C' && c.database === l.database && c.state === 'cl_login'),
    `the stalled client is listed as logging in: ${JSON.stringify(clients.rows.map((c) => [c.database, c.state]))}`,
  );
  let done = false;
  const cut = rig.pooler.disconnect(l.database).then((r) => {
    done = true;
    return r;
  });
  await new Promise((res) => setTimeout(res, 600));
  assert.equal(done, false, 'the cut did not KILL while a client was authenticating');
  // Meanwhile the database's logins are refused (by PgBouncer's hba, before any exchange).
  const refused = await tryLogin(clientFrom('127.0.0.1', { port: rig.p.port, ...l }));
  assert.ok(refused, 'a login during the cut is refused');
  const t = performance.now();
  stalled.destroy();
  assert.equal(await cut, true);
  assert.ok(performance.now() - t < 2_000, 'the cut went on once the stalled client was gone');
  assert.ok(await alive(rig));
  // And the database takes logins again.
  assert.equal(await tryLogin(clientFrom('127.0.0.1', { port: rig.p.port, ...l })), null);
});

test("zz-attack: a spare-style reconnect closes the database's PostgreSQL sessions and keeps PgBouncer up", async () => {
  const l = await coldCreate(rig, 'zk');
  const c = clientFrom('127.0.0.1', { port: rig.p.port, ...l });
  await c.connect();
  const pid = (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
  await c.end();
  await rig.pooler.reconnect(l.database);
  // The kept session is never handed out again: the next login gets another backend.
  const c2 = clientFrom('127.0.0.1', { port: rig.p.port, ...l });
  await c2.connect();
  const pid2 = (await c2.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
  await c2.end();
  assert.notEqual(pid2, pid);
  assert.ok(await alive(rig));
});

test('zz-attack: a held cut refuses new logins until resume, then the database serves at once', async () => {
  const l = await coldCreate(rig, 'zk');
  const before = clientFrom('127.0.0.1', { port: rig.p.port, ...l });
  await before.connect();
  before.on('error', () => {});
  assert.equal(await rig.pooler.disconnect(l.database, { hold: true }), true);
  await assert.rejects(before.query('SELECT 1'), 'the session before the cut is gone');
  // Refused at once (not left waiting on a paused database, which would hold the pool's logins
  // for PgBouncer's server_login_retry after the RESUME).
  const t = performance.now();
  assert.ok(await tryLogin(clientFrom('127.0.0.1', { port: rig.p.port, ...l })), 'refused while held');
  assert.ok(performance.now() - t < 2_000);
  await rig.pooler.resume(l.database);
  await rig.pooler.resume(l.database); // idempotent
  assert.equal(await tryLogin(clientFrom('127.0.0.1', { port: rig.p.port, ...l })), null);
  assert.ok(await alive(rig));
});
