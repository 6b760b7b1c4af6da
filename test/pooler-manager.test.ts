import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import { after, before, test } from 'node:test';
import { PoolerConfigError } from '../src/agent/pgbouncer/pooler-manager.ts';
import { scramVerifier } from '../src/shared/scram.ts';
import { type PrivatePooler, startPrivatePooler } from './pooler-harness.ts';

let p: PrivatePooler;
before(async () => {
  p = await startPrivatePooler();
});
after(async () => {
  await p.stop();
});

const entry = (name: string, cidr: string) => ({
  name,
  owner: `${name}_owner`,
  verifier: scramVerifier('pw'),
  allowlist: [{ cidr, expires_at: null }],
});

test('apply writes private files, reloads, proves the reload, and survives a restart of the manager', async () => {
  const m = p.manager();
  await m.start();
  const { ms } = await m.update((s) => ({ ...s, databases: { pm_a: entry('pm_a', '127.0.0.1/32') } }));
  assert.ok(ms < 1_000, `apply took ${ms} ms`);
  for (const f of [m.files.ini, m.files.auth, m.files.hba]) {
    const st = await fs.stat(f);
    assert.equal(st.mode & 0o077, 0, `${f} is private`);
  }
  const hba = await fs.readFile(m.files.hba, 'utf8');
  assert.match(hba, /^host pgbouncer "bulwark_pooler_admin" 127\.0\.0\.1\/32 scram-sha-256$/m);
  assert.match(hba, /^host "pm_a" "pm_a_owner" 127\.0\.0\.1\/32 scram-sha-256$/m);
  const auth = await fs.readFile(m.files.auth, 'utf8');
  assert.ok(!auth.includes('"pw"'), 'no clear password in the auth file');
  // The probe user of this render is the one PgBouncer runs with.
  const cfg = await m.admin('SHOW CONFIG');
  const stats = cfg.rows.find((r: { key: string }) => r.key === 'stats_users') as { value: string };
  assert.match(stats.value, /^bulwark_probe_[0-9a-f]{12}$/);
  assert.ok(hba.trimEnd().endsWith(`host pgbouncer "${stats.value}" 127.0.0.1/32 scram-sha-256`));
  m.stop();

  const again = p.manager();
  await again.start();
  assert.deepEqual(Object.keys(again.state().databases), ['pm_a']);
  again.stop();
});

test('a bad hba render (invalid CIDR) is refused and the live config is unchanged', async () => {
  const m = p.manager();
  await m.start();
  const before = await fs.readFile(m.files.hba, 'utf8');
  const liveBefore = await m.admin('SHOW CONFIG');
  await assert.rejects(
    m.update((s) => ({ ...s, databases: { ...s.databases, pm_bad: entry('pm_bad', '10.0.0.300/32') } })),
    PoolerConfigError,
  );
  await assert.rejects(
    m.update((s) => ({ ...s, databases: { ...s.databases, pm_bad: entry('pm_bad', '10.0.0.1/33') } })),
    PoolerConfigError,
  );
  assert.equal(await fs.readFile(m.files.hba, 'utf8'), before, 'hba file untouched');
  assert.ok(!('pm_bad' in m.state().databases));
  const liveAfter = await m.admin('SHOW CONFIG');
  assert.deepEqual(liveAfter.rows, liveBefore.rows);
  m.stop();
});

test('a reload PgBouncer does not take (it still answers RELOAD with success) is detected and undone', async () => {
  const m = p.manager();
  await m.start();
  const good = {
    ini: await fs.readFile(m.files.ini, 'utf8'),
    hba: await fs.readFile(m.files.hba, 'utf8'),
    auth: await fs.readFile(m.files.auth, 'utf8'),
  };
  m.stop();
  // A value PgBouncer refuses makes it keep its old config while RELOAD still succeeds.
  const bad = p.manager({ settings: { poolMode: 'bogus' as 'session' } });
  await bad.start().then(
    () => assert.fail('the apply must fail'),
    (err: Error) => assert.match(err.message, /did not take effect/),
  );
  assert.deepEqual(
    {
      ini: await fs.readFile(m.files.ini, 'utf8'),
      hba: await fs.readFile(m.files.hba, 'utf8'),
      auth: await fs.readFile(m.files.auth, 'utf8'),
    },
    good,
    'last good files restored',
  );
  const cfg = await bad.admin('SHOW CONFIG');
  assert.equal(
    (cfg.rows.find((r: { key: string }) => r.key === 'pool_mode') as { value: string }).value,
    'session',
  );
  // The restored config is live: a fresh good manager applies and proves again.
  const again = p.manager();
  await again.start();
  again.stop();
});
