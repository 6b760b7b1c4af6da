import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { POOLER_LIMITS } from '../src/agent/pgbouncer/pgbouncer.config.ts';
import { POOLER_ADMIN } from '../src/embedded/layout.ts';
import { openFileLimits } from '../src/embedded/pgbouncer-process.ts';
import { sleep, startUpStack, type TenantDatabase, type UpStack } from './helpers/up-stack.ts';

// Findings of the outside review against a real `bulwark up`: strangers' idle sockets cannot
// lock tenants out of PgBouncer, no tenant SQL or literal reaches a log, and tenant roles are
// refused on the maintenance databases.
let stack: UpStack;
let shop: TenantDatabase;
before(async () => {
  stack = await startUpStack();
  shop = await stack.createDatabase('shop');
});
after(async () => {
  await stack?.destroy();
});

/** Resolves once `file` holds `text`; fails after `timeoutMs`. */
async function waitForText(file: string, text: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (readFileSync(file, 'utf8').includes(text)) return;
    await sleep(50);
  }
  assert.fail(`${path.basename(file)} did not show ${text} within ${timeoutMs} ms`);
}

type IdleSocket = { socket: net.Socket; connectedAt: number; closedAt: number | null };

/**
 * Opens `count` TCP connections from `from` that never send a byte, 100 at a time (below the
 * listen backlog), each bounded in time; records when each was connected and closed.
 */
async function idleSockets(port: number, from: string, count: number): Promise<IdleSocket[]> {
  const out: IdleSocket[] = [];
  for (let i = 0; i < count; i += 100) {
    const batch = Array.from({ length: Math.min(100, count - i) }, () => {
      const socket = net.connect({ host: '127.0.0.1', port, localAddress: from });
      const entry: IdleSocket = { socket, connectedAt: 0, closedAt: null };
      out.push(entry);
      socket.on('error', () => {});
      socket.resume(); // read (and discard) what PgBouncer sends, so its close is seen
      socket.once('close', () => {
        entry.closedAt = Date.now();
      });
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('connect timed out')), 10_000);
        socket.once('connect', () => {
          entry.connectedAt = Date.now();
          clearTimeout(timer);
          resolve();
        });
        socket.once('close', () => {
          clearTimeout(timer);
          resolve();
        });
      });
    });
    await Promise.all(batch);
  }
  return out;
}

/** PgBouncer's count of client slots in use (its admin console). */
async function usedClients(stack: UpStack): Promise<number> {
  const password = readFileSync(path.join(stack.dir, 'secrets', 'pooler-admin-password'), 'utf8').trim();
  const admin = new pg.Client({
    host: '127.0.0.1',
    port: stack.ports.pooler,
    user: POOLER_ADMIN,
    password,
    database: 'pgbouncer',
  });
  admin.on('error', () => {});
  await admin.connect();
  try {
    const lists = await admin.query<{ list: string; items: number }>('SHOW LISTS');
    return Number(lists.rows.find((r) => r.list === 'used_clients')?.items ?? -1);
  } finally {
    await admin.end();
  }
}

test('idle unauthenticated sockets beyond the old limit do not lock tenants out, and are closed at the login timeout', async (t) => {
  const pgbouncerPid = stack.pids().pgbouncer as number;
  const limits = openFileLimits(pgbouncerPid);
  assert.ok(
    limits && limits.soft >= POOLER_LIMITS.maxClientConn + 400,
    `PgBouncer may open ${limits?.soft} files`,
  );

  // 2,500 idle sockets from an address on no allowlist: the old max_client_conn was 2,000.
  const sockets = await idleSockets(stack.ports.pooler, '127.0.0.2', 2_500);
  try {
    assert.equal(sockets.filter((s) => s.closedAt !== null).length, 0, 'every socket was accepted and kept');
    const held = await usedClients(stack);
    assert.ok(held > 2_000, `PgBouncer holds ${held} client slots, more than the old limit`);
    const tenant = await stack.connectTenant(shop);
    assert.equal((await tenant.query('SELECT 1 AS one')).rows[0].one, 1, 'the tenant still logs in');
    await tenant.end();

    // Each idle socket is cut once the login timeout has passed (PgBouncer's default: 60 s).
    const timeoutMs = POOLER_LIMITS.clientLoginTimeoutS * 1_000;
    const deadline = Math.max(...sockets.map((s) => s.connectedAt)) + timeoutMs + 10_000;
    while (sockets.some((s) => s.closedAt === null) && Date.now() < deadline) await sleep(100);
    assert.equal(sockets.filter((s) => s.closedAt === null).length, 0, 'every idle socket was closed');
    const lifetimes = sockets.map((s) => (s.closedAt as number) - s.connectedAt);
    const shortest = Math.min(...lifetimes);
    const longest = Math.max(...lifetimes);
    t.diagnostic(`${held} idle sockets held; each closed ${shortest}–${longest} ms after it connected`);
    assert.ok(shortest >= timeoutMs - 1_000, `none closed before the timeout (${shortest} ms)`);
    assert.ok(longest <= timeoutMs + 8_000, `each closed soon after the timeout (${longest} ms)`);
  } finally {
    for (const s of sockets) s.socket.destroy();
  }
});

test('no tenant SQL text or literal reaches postgres.log, server.log or agent.log', async () => {
  const secrets = Array.from({ length: 4 }, () => `Sekrit${randomBytes(6).toString('hex')}`);
  // A failing explorer query (a runtime error that quotes the literal) and one that does not parse.
  const explorerA = await stack.api('POST', '/v1/databases/shop/explorer/query', {
    sql: `select '${secrets[0]}'::int`,
  });
  assert.notEqual(explorerA.status, 200);
  const explorerB = await stack.api('POST', '/v1/databases/shop/explorer/query', {
    sql: `select 1 from pg_class where relname = '${secrets[1]}' and`,
  });
  assert.notEqual(explorerB.status, 200);
  // The same from the tenant's own session through PgBouncer.
  const tenant = await stack.connectTenant(shop);
  await assert.rejects(tenant.query(`SELECT '${secrets[2]}'::int`), /invalid input syntax/);
  await assert.rejects(tenant.query(`SELECT 1 FROM nowhere_${secrets[3]} WHERE x = '${secrets[3]}'`));
  await tenant.end();

  // Wait for the logs to catch up, on markers sent after the queries: a refused login (a FATAL
  // line, which postgres.log keeps) through the logging collector, and a request with a known id
  // through the server's pipe. The agent logs synchronously before it answers the server.
  const marker = `logmark${randomBytes(6).toString('hex')}`;
  await assert.rejects(
    stack.connectTenant({ ...shop, user: marker, password: 'wrong-password' }, { port: stack.ports.pg }),
  );
  const ready = await fetch(`http://127.0.0.1:${stack.ports.server}/ready`, {
    headers: { 'x-request-id': marker },
  });
  assert.equal(ready.status, 200);
  await waitForText(path.join(stack.dir, 'logs', 'postgres.log'), `user "${marker}"`, 15_000);
  await waitForText(path.join(stack.dir, 'logs', 'server.log'), marker, 15_000);
  const logs = ['postgres.log', 'server.log', 'agent.log', 'pgbouncer.log'];
  for (const name of logs) {
    const text = readFileSync(path.join(stack.dir, 'logs', name), 'utf8');
    for (const s of secrets) assert.equal(text.includes(s), false, `${name} holds a tenant literal`);
  }
  const pgLog = readFileSync(path.join(stack.dir, 'logs', 'postgres.log'), 'utf8');
  assert.doesNotMatch(pgLog, /STATEMENT:/);
  // The prefix and the useful lines stay: timestamps, pids, start-up and shutdown.
  assert.match(pgLog, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \S+ \[\d+\] .*database system is ready/m);

  // Applied to existing clusters at every start, not only written at initdb.
  const auto = readFileSync(path.join(stack.dir, 'pg', 'data', 'postgresql.auto.conf'), 'utf8');
  assert.match(auto, /log_min_error_statement = 'panic'/);
  assert.match(auto, /log_min_messages = 'log'/);
});

test('tenant roles are refused on the maintenance databases on the loopback PostgreSQL port', async () => {
  for (const database of ['postgres', 'template1']) {
    await assert.rejects(
      stack.connectTenant(shop, { port: stack.ports.pg, database }),
      (err: pg.DatabaseError) => {
        assert.equal(err.code, '42501', `${database}: ${err.message}`);
        assert.match(err.message, new RegExp(`permission denied for database "${database}"`));
        return true;
      },
    );
  }
  // The owner's own database is still open to it there (the refusal is about the maintenance ones).
  const own = await stack.connectTenant(shop, { port: stack.ports.pg });
  assert.equal((await own.query('SELECT current_database() AS d')).rows[0].d, shop.database);
  await own.end();
});
