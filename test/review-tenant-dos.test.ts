import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type pg from 'pg';
import {
  accountApi,
  operatorKey,
  sleep,
  startUpStack,
  type TenantDatabase,
  type UpStack,
} from './helpers/up-stack.ts';

// Outside review (second round): one tenant denies service to every other tenant, with nothing
// but its own owner passwords and its own account's API.
//
// 1. Connection exhaustion. Each database's owner may hold 50 sessions (owner_connection_limit)
//    and tenant roles may log in on the loopback PostgreSQL port (or through PgBouncer, 20 server
//    connections per pool, no max_db_connections / max_user_connections). Six databases of one
//    account fill max_connections = 300: another account's database creation then fails for good
//    ("remaining connection slots are reserved for non-replication superuser connections"), and
//    so do the steward, the explorer, PgBouncer's server logins and the control database.
// 2. A stalled job loop. The agent runs jobs one at a time. A tenant owner that keeps its own
//    pg_authid row locked (`BEGIN; ALTER ROLE <self> PASSWORD …` left open, with
//    idle_in_transaction_session_timeout set to 0 in its own session) and asks for a rotation
//    blocks the agent's `ALTER ROLE` for the whole lock_timeout (60 s), during which no other
//    account's job runs; a create of another account took 58.5 s instead of < 1 s.

let stack: UpStack;
/** The API as the second account. */
let otherApi: ReturnType<typeof accountApi>;
before(async () => {
  stack = await startUpStack();
  otherApi = accountApi(stack, await operatorKey(stack, 'other'));
});
after(async () => {
  await stack?.destroy();
});

/** Creates a database of the second account; resolves with its final status and the time taken. */
async function otherCreate(
  name: string,
  timeoutMs: number,
): Promise<{ status: string; ms: number; reason?: string }> {
  const t0 = Date.now();
  const created = await otherApi('POST', '/v1/databases', { name });
  assert.equal(created.status, 202, JSON.stringify(created.json));
  for (;;) {
    const d = (await otherApi('GET', `/v1/databases/${name}`)).json;
    if (d.status === 'ready' || d.status === 'failed')
      return { status: d.status, ms: Date.now() - t0, reason: d.failure_reason };
    if (Date.now() - t0 > timeoutMs) return { status: d.status, ms: Date.now() - t0 };
    await sleep(200);
  }
}

test("one account's owners cannot use up the cluster's connections for every other account", async () => {
  const dbs: TenantDatabase[] = [];
  for (let i = 0; i < 6; i++) dbs.push(await stack.createDatabase(`hog${i}`));
  const held: pg.Client[] = [];
  try {
    // Every owner opens as many sessions as its role allows, on the loopback PostgreSQL port.
    for (const db of dbs) {
      const batch = await Promise.allSettled(
        Array.from({ length: 50 }, () => stack.connectTenant(db, { port: stack.ports.pg })),
      );
      for (const b of batch) if (b.status === 'fulfilled') held.push(b.value);
    }
    // Another account creates a database meanwhile: it must become ready.
    const victim = await otherCreate('victim', 45_000);
    assert.equal(
      victim.status,
      'ready',
      `another account's database was not created while one account held ${held.length} sessions: ${victim.status} ${victim.reason ?? ''}`,
    );
  } finally {
    await Promise.all(held.map((c) => c.end().catch(() => {})));
  }
});

test("a tenant holding its own role's row lock does not stall other accounts' jobs", async () => {
  const db = await stack.createDatabase('locker');
  const c = await stack.connectTenant(db, { port: stack.ports.pg });
  try {
    await c.query('SET idle_in_transaction_session_timeout = 0');
    await c.query('BEGIN');
    await c.query(`ALTER ROLE ${db.user} PASSWORD 'tenant-chosen-password'`);
    // The tenant's own API asks for a rotation: the agent's ALTER ROLE waits on the lock.
    const rot = await stack.api('POST', `/v1/databases/${db.name}/credentials/rotate`);
    assert.ok(rot.status < 300, `rotate: ${rot.status} ${JSON.stringify(rot.json)}`);
    // Wait until the agent is stuck: a session waits on a lock (pg_locks spans the cluster).
    const control = await stack.control();
    try {
      const deadline = Date.now() + 30_000;
      for (;;) {
        const r = await control.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM pg_locks WHERE NOT granted AND locktype IN ('transactionid', 'tuple')",
        );
        if (r.rows[0]!.n > 0) break;
        assert.ok(Date.now() < deadline, "the agent's ALTER ROLE never waited on the tenant's lock");
        await sleep(50);
      }
    } finally {
      await control.end();
    }
    // Another account's create must not wait for the tenant's lock (a create takes < 1 s here).
    const victim = await otherCreate('victim2', 40_000);
    assert.equal(
      victim.status,
      'ready',
      `another account's create was still ${victim.status} after ${victim.ms} ms behind one tenant's row lock ${victim.reason ?? ''}`,
    );
    assert.ok(
      victim.ms < 15_000,
      `another account's create waited ${victim.ms} ms behind one tenant's row lock`,
    );
  } finally {
    await c.query('ROLLBACK').catch(() => {});
    await c.end().catch(() => {});
  }
});
