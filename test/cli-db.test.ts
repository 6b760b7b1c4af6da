import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import { type AddressInfo, createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { roleNames } from '../src/shared/identifiers.ts';
import { enrollFakeAgent } from './helpers/databases.ts';
import { createTestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

const CLI = path.resolve(import.meta.dirname, '../src/cli/index.ts');

let s: TestServer;
let tmp: string;
let dataDir: string;
let env: Record<string, string>;
before(async () => {
  s = await createTestServer();
  const url = (await s.app.listen({ host: '127.0.0.1', port: 0 })).replace('localhost', '127.0.0.1');
  await enrollFakeAgent(s, 'n1');
  const key = await createTestKey(s, { account: 'acme' });
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-cli-db-'));
  dataDir = path.join(tmp, 'data');
  await fs.mkdir(path.join(dataDir, 'secrets'), { recursive: true, mode: 0o700 });
  await fs.writeFile(path.join(dataDir, 'secrets', 'control-database-url'), `${s.db.url}\n`, { mode: 0o600 });
  env = { BULWARK_URL: url, BULWARK_KEY: key.key };
});
after(async () => {
  s.app.server.closeAllConnections();
  await s.stop();
  await fs.rm(tmp, { recursive: true, force: true });
});

type Run = { code: number; stdout: string; stderr: string };
function cli(args: string[], over: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      {
        env: { PATH: process.env.PATH ?? '', HOME: tmp, XDG_CONFIG_HOME: tmp, ...env, ...over },
        timeout: 90_000,
      },
      (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
      },
    );
  });
}

test('bulwark db: create, list, show, allow/deny, reveal, delete; bad input exits 2 before any call', async () => {
  const [created, hostile, other] = await Promise.all([
    cli(['db', 'create', 'shop', '--json']),
    cli(['db', 'create', 'a;drop']),
    cli(['db', 'create', 'blog', '--node', 'n1']),
  ]);
  assert.equal(created.code, 0, created.stderr);
  assert.equal(JSON.parse(created.stdout).status, 'provisioning');
  assert.equal(hostile.code, 2);
  assert.equal(other.code, 0, other.stderr);
  assert.match(other.stdout, /database blog is provisioning on node n1/);

  const [list, show, allow, reveal, badConfirm] = await Promise.all([
    cli(['db', 'list', '--json']),
    cli(['db', 'show', 'shop']),
    cli(['db', 'allow', 'shop', '203.0.113.7', '--for', '2h', '--note', 'laptop', '--json']),
    cli(['db', 'reveal', 'shop']),
    cli(['db', 'delete', 'shop', '--confirm', 'shops']),
  ]);
  assert.deepEqual(
    JSON.parse(list.stdout)
      .items.map((d: { name: string }) => d.name)
      .sort(),
    ['blog', 'shop'],
  );
  // Its generated name on the node and that name's owner, never the label (ADR 0039).
  assert.match(show.stdout, /postgresql:\/\/(bulwark_db_p_[0-9a-f]{16})_owner@127\.0\.0\.1:6432\/\1\?/);
  const entries = JSON.parse(allow.stdout).entries as {
    cidr: string;
    expires_at: string | null;
    note: string;
  }[];
  const added = entries.find((e) => e.cidr === '203.0.113.7/32');
  assert.equal(added?.note, 'laptop');
  assert.ok(added?.expires_at && Date.parse(added.expires_at) > Date.now() + 3_500_000);
  assert.equal(reveal.code, 0, reveal.stderr);
  const api = await s.app.inject({
    method: 'POST',
    url: '/v1/databases/shop/credentials/reveal',
    headers: { authorization: `Bearer ${env.BULWARK_KEY}` },
  });
  assert.equal(reveal.stdout.trim(), api.json().password);
  assert.equal(badConfirm.code, 2);

  const deny = await cli(['db', 'deny', 'shop', '203.0.113.7/32']);
  assert.equal(deny.code, 0, deny.stderr);
  // Concurrent allows all survive (each is one atomic add on the server, not read-edit-write).
  const [net, both, ...more] = await Promise.all([
    cli(['db', 'allow', 'shop', '198.51.100.0/24', '--expires-in', '30m', '--json']),
    cli(['db', 'allow', 'shop', '198.51.100.9', '--for', '1h', '--expires-in', '1h']),
    cli(['db', 'allow', 'shop', '192.0.2.10']),
    cli(['db', 'allow', 'shop', '192.0.2.11']),
    cli(['db', 'allow', 'shop', '2001:DB8::7']),
  ]);
  for (const r of more) assert.equal(r.code, 0, r.stderr);
  assert.equal(net.code, 0, net.stderr);
  const netEntry = (JSON.parse(net.stdout).entries as { cidr: string; expires_at: string | null }[]).find(
    (e) => e.cidr === '198.51.100.0/24',
  );
  const left = Date.parse(netEntry?.expires_at ?? '') - Date.now();
  assert.ok(left > 25 * 60_000 && left <= 30 * 60_000, '--expires-in 30m');
  assert.ok(!JSON.parse(net.stdout).entries.some((e: { cidr: string }) => e.cidr === '203.0.113.7/32'));
  assert.equal(both.code, 2, 'not both --for and --expires-in');
  const shown = await cli(['db', 'show', 'shop', '--json']);
  const cidrs = (JSON.parse(shown.stdout).allowlist as { cidr: string }[]).map((e) => e.cidr);
  for (const c of ['198.51.100.0/24', '192.0.2.10/32', '192.0.2.11/32', '2001:db8::7/128'])
    assert.ok(cidrs.includes(c), c);
  const [denyAgain, denyV6, del, missing] = await Promise.all([
    cli(['db', 'deny', 'shop', '203.0.113.7']),
    cli(['db', 'deny', 'shop', '2001:db8::7', '--json']),
    cli(['db', 'delete', 'blog', '--confirm', 'blog']),
    cli(['db', 'show', 'nothere']),
  ]);
  assert.equal(denyAgain.code, 6);
  assert.match(denyAgain.stderr, /203\.0\.113\.7\/32 is not on the allowlist of shop/);
  assert.equal(denyV6.code, 0, denyV6.stderr);
  assert.ok(!JSON.parse(denyV6.stdout).entries.some((e: { cidr: string }) => e.cidr === '2001:db8::7/128'));
  assert.equal(del.code, 0, del.stderr);
  assert.match(del.stdout, /deleting/);
  assert.equal(missing.code, 6);

  // "Before any call": the same bad input, aimed at a listener that counts connections.
  let calls = 0;
  const trap = createServer((socket) => {
    calls++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => trap.listen(0, '127.0.0.1', resolve));
  const at = { BULWARK_URL: `http://127.0.0.1:${(trap.address() as AddressInfo).port}` };
  try {
    const bad = [
      ['db', 'create', 'a;drop'],
      ['db', 'delete', 'shop', '--confirm', 'shops'],
      ['db', 'allow', 'shop', '198.51.100.9', '--for', '1h', '--expires-in', '1h'],
    ];
    const runs = await Promise.all(bad.map((args) => cli(args, at)));
    for (const [i, r] of runs.entries()) assert.equal(r.code, 2, `${bad[i]!.join(' ')}: ${r.stderr}`);
    assert.equal(calls, 0, 'bad input reached the server');
    // The control: well-formed input does call it (and fails, since the trap answers nothing).
    assert.notEqual((await cli(['db', 'show', 'shop'], at)).code, 0);
    assert.ok(calls > 0, 'the trap sees calls');
  } finally {
    await new Promise((resolve) => trap.close(resolve));
  }
});

test('bulwark master-key rotate adds a key and re-seals every password; the server keeps revealing', async () => {
  const headers = { authorization: `Bearer ${env.BULWARK_KEY}` };
  await s.app.inject({ method: 'POST', url: '/v1/databases', headers, payload: { name: 'mk_cli' } });
  const before = await s.app.inject({
    method: 'POST',
    url: '/v1/databases/mk_cli/credentials/reveal',
    headers,
  });
  const r = await cli([
    'master-key',
    'rotate',
    '--data-dir',
    dataDir,
    '--key-file',
    s.config.masterKeyFile!,
    '--json',
  ]);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.active_key, 'k2');
  assert.ok(out.resealed >= 1 && out.resealed === out.checked);
  const sealed = await s.db.pool.query(
    "SELECT count(*)::int AS n FROM databases WHERE password_sealed NOT LIKE 'v1.k2.%'",
  );
  assert.equal(sealed.rows[0].n, 0);
  const afterRotate = await s.app.inject({
    method: 'POST',
    url: '/v1/databases/mk_cli/credentials/reveal',
    headers,
  });
  assert.equal(afterRotate.json().password, before.json().password);
});

test('db create/rotate/delete --wait follow the request: 0 when it took effect, 7 with the reason when not, 8 on timeout', async () => {
  const agent = await enrollFakeAgent(s, 'n2');
  const nextJob = async (kind: string) => {
    for (let i = 0; i < 400; i++) {
      const job = await agent.poll();
      if (job) {
        assert.equal(job.kind, kind);
        return job;
      }
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`no ${kind} job`);
  };
  const rotated = { rotated_at: new Date().toISOString(), terminated_sessions: 0 };

  // create --wait: ready → 0; the create job fails → 7 with the reason.
  const creating = cli(['db', 'create', 'waited', '--node', 'n2', '--wait', '--json']);
  const create = await nextJob('database.create');
  assert.equal(
    await agent.complete(create.id, create.attempt, {
      name: 'waited',
      roles: roleNames('waited'),
      pooler_probe_ms: 1,
    }),
    200,
  );
  const created = await creating;
  assert.equal(created.code, 0, created.stderr);
  assert.equal(JSON.parse(created.stdout).status, 'ready');
  assert.equal(JSON.parse(created.stdout).last_rotation, null, 'never rotated');

  const dooming = cli(['db', 'create', 'doomed', '--node', 'n2', '--wait']);
  const doomedJob = await nextJob('database.create');
  await agent.fail(doomedJob.id, doomedJob.attempt, 'disk full', false);
  const doomed = await dooming;
  assert.equal(doomed.code, 7, doomed.stderr);
  assert.match(doomed.stderr, /database doomed was not created: provisioning failed: disk full/);

  // rotate --wait: the new password live → 0, last_rotation succeeded.
  const rotating = cli(['db', 'rotate', 'waited', '--wait', '--json']);
  const rotate = await nextJob('database.rotate');
  assert.equal(await agent.complete(rotate.id, rotate.attempt, rotated), 200);
  const good = await rotating;
  assert.equal(good.code, 0, good.stderr);
  const goodBody = JSON.parse(good.stdout);
  assert.equal(goodBody.password_version, 2);
  assert.equal(goodBody.last_rotation.status, 'succeeded');

  // A rotation that dies is repaired (the old password re-applied): that is not a rotation that
  // took effect. The CLI waits through the repair and exits 7 with the reason.
  const failing = cli(['db', 'rotate', 'waited', '--wait']);
  const dying = await nextJob('database.rotate');
  await agent.fail(dying.id, dying.attempt, 'pooler reload did not take', false);
  const repair = await nextJob('database.rotate');
  assert.equal(repair.payload.repair, true);
  const midway = await cli(['db', 'show', 'waited', '--json']);
  assert.equal(JSON.parse(midway.stdout).last_rotation.status, 'restoring');
  assert.equal(await agent.complete(repair.id, repair.attempt, rotated), 200);
  const bad = await failing;
  assert.equal(bad.code, 7, bad.stderr);
  assert.match(
    bad.stderr,
    /rotation of waited did not take effect: credential rotation failed: pooler reload did not take; the old password was restored/,
  );
  const shown = JSON.parse((await cli(['db', 'show', 'waited', '--json'])).stdout);
  assert.equal(shown.last_rotation.status, 'failed_restored');
  assert.equal(shown.last_rotation.reason, 'credential rotation failed: pooler reload did not take');
  assert.equal(shown.password_version, 2, 'the restore is not a new password');
  assert.equal(shown.rotated_at, goodBody.rotated_at);
  assert.match(shown.failure_reason, /pooler reload did not take; the previous password was restored/);
  const events = await s.db.pool.query(
    `SELECT action, outcome, details->>'rotation_failure' AS why FROM audit_events
      WHERE target_id = $1 AND action LIKE 'database.rotate%' ORDER BY id`,
    [shown.id],
  );
  assert.deepEqual(
    events.rows.map((e) => e.action),
    ['database.rotate_done', 'database.rotate_failed', 'database.rotate_failed_restored'],
  );
  assert.equal(events.rows[2].why, 'credential rotation failed: pooler reload did not take');

  // The repair dies too: a final `failed`, exit 7, and what to do.
  const failingTwice = cli(['db', 'rotate', 'waited', '--wait', '--json']);
  const second = await nextJob('database.rotate');
  await agent.fail(second.id, second.attempt, 'boom', false);
  const repair2 = await nextJob('database.rotate');
  await agent.fail(repair2.id, repair2.attempt, 'boom again', false);
  const worse = await failingTwice;
  assert.equal(worse.code, 7, worse.stderr);
  assert.match(
    JSON.parse(worse.stderr).error.message,
    /rotation of waited failed: credential rotation failed: boom; restoring the previous password failed: boom again; run `bulwark db rotate waited` again/,
  );

  // --timeout passes before a final state: 8 (the request stays queued).
  const slow = await cli(['db', 'rotate', 'waited', '--wait', '--timeout', '1']);
  assert.equal(slow.code, 8, slow.stderr);
  assert.match(slow.stderr, /gave up waiting after 1 s/);
  const late = await nextJob('database.rotate');
  await agent.complete(late.id, late.attempt, rotated);

  // delete --wait: a failed delete → 7; a good one → 0.
  const deleting = cli(['db', 'delete', 'doomed', '--confirm', 'doomed', '--wait']);
  const del = await nextJob('database.delete');
  await agent.fail(del.id, del.attempt, 'could not drop', false);
  const notDeleted = await deleting;
  assert.equal(notDeleted.code, 7, notDeleted.stderr);
  assert.match(notDeleted.stderr, /database doomed was not deleted: deletion failed: could not drop/);
  const deleting2 = cli(['db', 'delete', 'waited', '--confirm', 'waited', '--wait']);
  const del2 = await nextJob('database.delete');
  await agent.complete(del2.id, del2.attempt, { dropped: true });
  const deleted = await deleting2;
  assert.equal(deleted.code, 0, deleted.stderr);
  assert.match(deleted.stdout, /database waited deleted/);
});

test('bulwark status says when it cannot read the job queue, instead of "none"', async () => {
  const dir = path.join(tmp, 'status-data');
  await fs.mkdir(path.join(dir, 'secrets'), { recursive: true, mode: 0o700 });
  await fs.writeFile(
    path.join(dir, 'up.json'),
    JSON.stringify({
      version: 'test',
      pid: process.pid,
      started_at: new Date().toISOString(),
      server_url: 'http://127.0.0.1:9',
      ports: { server: 9, pooler: 9, postgres: 9 },
      pids: {},
    }),
  );
  await fs.writeFile(path.join(dir, 'up.lock'), `${process.pid}\n`);
  const url = (database: string) => {
    const u = new URL(s.db.url);
    u.pathname = `/${database}`;
    return `${u}\n`;
  };
  const secret = path.join(dir, 'secrets', 'control-database-url');
  await fs.writeFile(secret, url(new URL(s.db.url).pathname.slice(1)), { mode: 0o600 });
  const readable = await cli(['status', '--data-dir', dir, '--json']);
  assert.equal(readable.code, 0, readable.stderr);
  const ok = JSON.parse(readable.stdout);
  assert.equal(ok.jobs_error, null);
  assert.equal(typeof ok.jobs, 'object');
  assert.ok(ok.jobs && Object.keys(ok.jobs).length > 0, 'the queue holds the jobs of the tests above');

  await fs.writeFile(secret, url('no_such_database'), { mode: 0o600 });
  const [human, json] = await Promise.all([
    cli(['status', '--data-dir', dir]),
    cli(['status', '--data-dir', dir, '--json']),
  ]);
  assert.equal(human.code, 1);
  assert.match(human.stdout, /jobs {6}unknown: cannot read the job queue \(.*no_such_database/);
  assert.doesNotMatch(human.stdout, /jobs {6}none/);
  assert.equal(json.code, 1);
  const out = JSON.parse(json.stdout);
  assert.equal(out.jobs, null);
  assert.match(out.jobs_error, /no_such_database/);
  assert.ok(!json.stdout.includes(new URL(s.db.url).password || '\u0000'), 'no password in the output');
});
