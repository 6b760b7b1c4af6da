import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import type pg from 'pg';
import { alive, sleep, startUpStack, type UpStack } from './helpers/up-stack.ts';

// `bulwark up` restarts a crashed server or agent and never stops PostgreSQL or PgBouncer for
// it: a tenant's open session through PgBouncer keeps working through both outages.
let stack: UpStack;
before(async () => {
  stack = await startUpStack();
});
after(async () => {
  await stack?.destroy();
});

/**
 * Runs a query on the tenant's open session every 100 ms until `until` resolves (bounded);
 * returns how many ran and the first failure, if any.
 */
async function queriesDuring(
  tenant: pg.Client,
  until: Promise<unknown>,
): Promise<{ ok: number; failed: string | null }> {
  let done = false;
  let failure: unknown = null;
  void until.then(
    () => {
      done = true;
    },
    (err: unknown) => {
      failure = err;
      done = true;
    },
  );
  let ok = 0;
  let failed: string | null = null;
  const deadline = Date.now() + 120_000;
  while (!done && Date.now() < deadline) {
    try {
      const r = await tenant.query<{ n: number }>('SELECT count(*)::int AS n FROM notes');
      assert.equal(r.rows[0]?.n, 1);
      ok += 1;
    } catch (err) {
      failed ??= (err as Error).message;
    }
    await sleep(100);
  }
  if (failure) throw failure;
  assert.ok(done, 'the restart finished within 120 s');
  return { ok, failed };
}

test('a SIGKILLed agent and server are restarted (audited, token reused) while tenant sessions never drop; a dead PgBouncer is restarted too', async (t) => {
  const db = await stack.createDatabase('shop');
  const tenant = await stack.connectTenant(db);
  await tenant.query('CREATE TABLE notes (id int PRIMARY KEY, body text)');
  await tenant.query("INSERT INTO notes VALUES (1, 'kept')");
  const before = stack.pids();
  const token = readFileSync(path.join(stack.dir, 'agent', 'agent-token'), 'utf8');

  // The agent dies: it comes back (its own token, no enrollment), the data plane never blinks.
  process.kill(before.agent!, 'SIGKILL');
  const agentOutage = await queriesDuring(tenant, stack.waitForOutput(/agent is running again/, 90_000));
  assert.equal(agentOutage.failed, null, 'no tenant query failed while the agent was down');
  assert.ok(agentOutage.ok >= 1);
  assert.match(stack.output(), /agent exited unexpectedly \(SIGKILL\); restarting in 500 ms/);

  // The server dies: it is counted as running again only once /ready answers.
  process.kill(before.server!, 'SIGKILL');
  const serverOutage = await queriesDuring(tenant, stack.waitForOutput(/server is running again/, 90_000));
  assert.equal(serverOutage.failed, null, 'no tenant query failed while the server was down');
  assert.ok(serverOutage.ok >= 1);
  assert.equal((await fetch(`http://127.0.0.1:${stack.ports.server}/ready`)).status, 200);

  const now = stack.pids();
  assert.notEqual(now.agent, before.agent);
  assert.notEqual(now.server, before.server);
  assert.ok(alive(now.agent!) && alive(now.server!));
  assert.equal(now.postgres, before.postgres, 'PostgreSQL was never restarted');
  assert.equal(now.pgbouncer, before.pgbouncer, 'PgBouncer was never restarted');
  assert.equal(readFileSync(path.join(stack.dir, 'agent', 'agent-token'), 'utf8'), token);

  // A database job runs end to end after both restarts, and the first session still works.
  const second = await stack.createDatabase('blog');
  const other = await stack.connectTenant(second);
  assert.equal((await other.query('SELECT 1 AS one')).rows[0].one, 1);
  await other.end();
  assert.equal((await tenant.query('SELECT body FROM notes')).rows[0].body, 'kept');
  await tenant.end();

  // PgBouncer itself dies: its sessions go with it, but it is back at once on the agent's files.
  process.kill(now.pgbouncer!, 'SIGKILL');
  await stack.waitForOutput(/pgbouncer is running again/, 60_000);
  const again = await stack.connectTenant(db);
  assert.equal((await again.query('SELECT body FROM notes')).rows[0].body, 'kept');
  await again.end();
  assert.equal(stack.pids().postgres, before.postgres, 'PostgreSQL was not restarted for it');

  const control = await stack.control();
  try {
    const events = await control.query<{ action: string; target_id: string; actor_type: string }>(
      `SELECT action, target_id, actor_type FROM audit_events
        WHERE action LIKE 'supervisor.%' ORDER BY id`,
    );
    assert.deepEqual(
      events.rows.map((r) => `${r.actor_type} ${r.action} ${r.target_id}`),
      [
        'system supervisor.process_crashed agent',
        'system supervisor.process_restarted agent',
        'system supervisor.process_crashed server',
        'system supervisor.process_restarted server',
        'system supervisor.process_crashed pgbouncer',
        'system supervisor.process_restarted pgbouncer',
      ],
    );
    const crash = await control.query<{ details: Record<string, unknown> }>(
      "SELECT details FROM audit_events WHERE action = 'supervisor.process_crashed' AND target_id = 'agent'",
    );
    assert.equal(crash.rows[0]?.details.signal, 'SIGKILL');
    const enrollments = await control.query(
      "SELECT 1 FROM audit_events WHERE action = 'node.enrollment_created'",
    );
    assert.equal(enrollments.rowCount, 1, 'the restarted agent did not enroll again');
    assert.equal((await control.query('SELECT 1 FROM nodes')).rowCount, 1);
  } finally {
    await control.end();
  }

  t.diagnostic(
    `tenant queries while the agent was down: ${agentOutage.ok}, while the server was down: ${serverOutage.ok}`,
  );
  for (const line of stack.output().match(/supervisor: .*/g) ?? []) t.diagnostic(line);

  // Ctrl-C still stops everything, the restarted children included.
  const last = stack.pids();
  assert.equal(await stack.stop('SIGINT'), 0);
  for (const [name, pid] of Object.entries(last)) assert.equal(alive(pid), false, `${name} (${pid}) is gone`);
});

test('a second signal forces every process down, a restarted child included', async () => {
  const other = await startUpStack();
  try {
    process.kill(other.pids().agent!, 'SIGKILL');
    await other.waitForOutput(/agent is running again/, 90_000);
    const pids = other.pids();
    other.child.kill('SIGINT');
    // The second signal only once the first one is being handled (up says it is stopping).
    await other.waitForOutput(/stopping Bulwark/, 15_000);
    assert.equal(await other.stop('SIGINT'), 130);
    const deadline = Date.now() + 15_000;
    while (Object.values(pids).some(alive) && Date.now() < deadline) await sleep(50);
    for (const [name, pid] of Object.entries(pids))
      assert.equal(alive(pid), false, `${name} (${pid}) is gone`);
  } finally {
    await other.destroy();
  }
});
