import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import pg from 'pg';
import { freePort } from './helpers/ports.ts';

const CLI = path.resolve(import.meta.dirname, '../src/cli/index.ts');
const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-up-'));
const ports = { server: await freePort(), pooler: await freePort(), pg: await freePort() };
const started: ChildProcess[] = [];

after(async () => {
  // Ctrl-C first: the supervisor stops its PostgreSQL and PgBouncer (a SIGKILL would orphan them
  // when a test failed half-way); SIGKILL only for one that does not stop within 30 s.
  await Promise.all(
    started.map(async (c) => {
      if (c.exitCode !== null || c.signalCode !== null) return;
      c.kill('SIGINT');
      const timer = setTimeout(() => c.kill('SIGKILL'), 30_000);
      await exited(c);
      clearTimeout(timer);
    }),
  );
  await fs.rm(dir, { recursive: true, force: true });
});

function startUp(extra: string[] = []): { child: ChildProcess; output: () => string; ready: Promise<void> } {
  const child = spawn(
    process.execPath,
    [
      CLI,
      'up',
      '--data-dir',
      dir,
      '--port',
      String(ports.server),
      '--pooler-port',
      String(ports.pooler),
      '--pg-port',
      String(ports.pg),
      ...extra,
    ],
    { env: { ...process.env, BULWARK_UNSAFE_FAST: '1' }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  started.push(child);
  let out = '';
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not ready in 90 s:\n${out}`)), 90_000);
    child.stdout?.on('data', () => {
      if (out.includes('Bulwark is ready')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`exited ${code} before ready:\n${out}`));
    });
  });
  return { child, output: () => out, ready };
}

const exited = (c: ChildProcess) =>
  new Promise<number | null>((resolve) => {
    if (c.exitCode !== null || c.signalCode !== null) resolve(c.exitCode);
    else c.once('exit', (code) => resolve(code));
  });

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('bulwark up: start, ready, a job through the agent, Ctrl-C, no orphan, restart reuses the cluster', async () => {
  const first = startUp();
  await first.ready;
  assert.match(first.output(), /initialising the PostgreSQL cluster/);
  assert.match(first.output(), new RegExp(`http://127\\.0\\.0\\.1:${ports.server}`));
  assert.match(first.output(), /bulwark admin create-key/);
  // An empty install: the one-time link of the first platform admin, the code in the URL fragment.
  const link = new RegExp(
    `first admin: open  http://127\\.0\\.0\\.1:${ports.server}/#invite=(bwi_[\\w-]{43})`,
  );
  const firstAdminCode = link.exec(first.output())?.[1];
  assert.ok(firstAdminCode, first.output());
  const redeemed = await fetch(`http://127.0.0.1:${ports.server}/v1/auth/invites/redeem`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      code: firstAdminCode,
      username: 'first.admin',
      password: 'a long enough passphrase',
    }),
  });
  assert.equal(redeemed.status, 201);
  assert.equal(((await redeemed.json()) as { user: { platform_admin: boolean } }).user.platform_admin, true);
  assert.ok(!readFileSync(path.join(dir, 'logs', 'server.log'), 'utf8').includes(firstAdminCode));

  const ready = await fetch(`http://127.0.0.1:${ports.server}/ready`);
  assert.equal(ready.status, 200);
  // The dashboard (web/dist, built by `npm test` and `npm start`), or without a build the plain
  // page that says how to make one and where the API docs are.
  const homeRes = await fetch(`http://127.0.0.1:${ports.server}/`);
  const home = await homeRes.text();
  assert.equal(homeRes.status, 200);
  assert.match(home, /<div id="root">|npm run build:web[\s\S]*\/docs/);
  assert.match(String(homeRes.headers.get('content-security-policy')), /^default-src 'none'/);

  // Secrets are private, and the cluster accepts only SCRAM over loopback.
  for (const f of ['postgres-admin-password', 'control-db-password', 'pooler-admin-password']) {
    const st = await fs.stat(path.join(dir, 'secrets', f));
    assert.equal(st.mode & 0o077, 0, `${f} is 0600`);
  }
  const hba = readFileSync(path.join(dir, 'pg', 'data', 'pg_hba.conf'), 'utf8');
  assert.doesNotMatch(hba.replace(/^#.*$/gm, ''), /\btrust\b|\bmd5\b|^local/m);

  // A real job round trip: control DB → agent (long-poll) → cluster → result.
  const controlUrl = readFileSync(path.join(dir, 'secrets', 'control-database-url'), 'utf8').trim();
  const db = new pg.Client({ connectionString: controlUrl });
  await db.connect();
  const roles = await db.query<{ rolsuper: boolean }>(
    'SELECT rolsuper FROM pg_roles WHERE rolname = current_user',
  );
  assert.equal(roles.rows[0]?.rolsuper, false, 'the control DB role is not a superuser');
  // Its own agent's enrollment is audited like an operator's (the system is the actor).
  const enrolled = await db.query(
    "SELECT actor_type, target_id FROM audit_events WHERE action = 'node.enrollment_created'",
  );
  assert.deepEqual(enrolled.rows, [{ actor_type: 'system', target_id: 'local' }]);
  const job = await db.query<{ id: number }>(
    "INSERT INTO jobs (node_id, kind) SELECT id, 'node.ping' FROM nodes WHERE name = 'local' RETURNING id",
  );
  await db.query("SELECT pg_notify('bulwark_jobs', (SELECT id::text FROM nodes WHERE name = 'local'))");
  let status = '';
  for (let i = 0; i < 100 && status !== 'succeeded'; i++) {
    status = (await db.query('SELECT status FROM jobs WHERE id = $1', [job.rows[0]!.id])).rows[0].status;
    if (status !== 'succeeded') await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(status, 'succeeded');
  await db.end();

  // A second `up` on the same data dir is refused clearly.
  const second = spawn(process.execPath, [CLI, 'up', '--data-dir', dir], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  started.push(second);
  let secondOut = '';
  second.stderr?.on('data', (d: Buffer) => {
    secondOut += d.toString();
  });
  assert.equal(await exited(second), 4);
  assert.match(secondOut, /already running/);

  const info = JSON.parse(readFileSync(path.join(dir, 'up.json'), 'utf8')) as {
    pids: Record<string, number>;
  };
  const pids = Object.values(info.pids);
  assert.equal(pids.length, 4);
  first.child.kill('SIGINT');
  assert.equal(await exited(first.child), 0);
  for (const pid of pids) assert.equal(alive(pid), false, `process ${pid} is gone`);
  assert.equal(existsSync(path.join(dir, 'up.lock')), false);

  const again = startUp();
  await again.ready;
  assert.doesNotMatch(again.output(), /initialising/);
  assert.doesNotMatch(again.output(), /first admin|#invite=/, 'a user exists: no first-admin invite');
  again.child.kill('SIGTERM');
  assert.equal(await exited(again.child), 0);
});

test('bulwark up refuses a data dir from an incompatible version and a port in use', async () => {
  const other = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-up-old-'));
  try {
    await fs.writeFile(path.join(other, 'VERSION'), 'bulwark-data-layout 999\n');
    const c = spawn(process.execPath, [CLI, 'up', '--data-dir', other], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    started.push(c);
    let out = '';
    c.stderr?.on('data', (d: Buffer) => {
      out += d.toString();
    });
    assert.equal(await exited(c), 3);
    assert.match(out, /incompatible/);

    await fs.rm(path.join(other, 'VERSION'));
    const blocker = (await import('node:net')).createServer();
    const port = await freePort();
    await new Promise<void>((r) => blocker.listen(port, '127.0.0.1', () => r()));
    const c2 = spawn(process.execPath, [CLI, 'up', '--data-dir', other, '--port', String(port)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    started.push(c2);
    let out2 = '';
    c2.stdout?.on('data', (d: Buffer) => {
      out2 += d.toString();
    });
    assert.equal(await exited(c2), 4);
    assert.match(out2, new RegExp(`port ${port} \\(server\\).*already in use`));
    blocker.close();
  } finally {
    await fs.rm(other, { recursive: true, force: true });
  }
});

test('after `up` is killed outright, the next start stops the PostgreSQL and PgBouncer it left', async () => {
  const first = startUp();
  await first.ready;
  const info = JSON.parse(readFileSync(path.join(dir, 'up.json'), 'utf8')) as {
    pids: Record<string, number>;
  };
  first.child.kill('SIGKILL');
  await exited(first.child);
  // Server and agent follow their supervisor (IPC disconnect); the data plane cannot.
  for (let i = 0; i < 100 && (alive(info.pids.server!) || alive(info.pids.agent!)); i++) {
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(alive(info.pids.server!), false, 'server exited with its supervisor');
  assert.equal(alive(info.pids.agent!), false, 'agent exited with its supervisor');
  assert.equal(alive(info.pids.postgres!), true);
  const again = startUp();
  await again.ready;
  assert.match(again.output(), /stopped a PostgreSQL left running/);
  assert.match(again.output(), /stopped a PgBouncer left running/);
  assert.equal(alive(info.pids.postgres!), false);
  assert.equal(alive(info.pids.pgbouncer!), false);
  again.child.kill('SIGINT');
  assert.equal(await exited(again.child), 0);
});
