import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { databaseHandlers } from '../src/agent/jobs/database-handlers.ts';
import type { JobHandler } from '../src/agent/jobs/job-context.ts';
import type { DriftFinding } from '../src/agent/postgres/drift.ts';
import { DEFAULT_LIMITS } from '../src/shared/contracts/jobs.ts';
import { scramVerifier } from '../src/shared/scram.ts';
import {
  databaseJobKit,
  newPassword,
  type PrivatePooler,
  startPrivatePooler,
  uniqueName,
} from './pooler-harness.ts';

let p: PrivatePooler;
let kit: ReturnType<typeof databaseJobKit>;
let jobs: Map<string, JobHandler>;
const cleanup: string[] = [];
before(async () => {
  p = await startPrivatePooler();
  const pooler = p.manager();
  await pooler.start();
  kit = databaseJobKit(p, pooler);
  jobs = new Map(databaseHandlers(kit.deps));
});
after(async () => {
  for (const sql of cleanup.reverse()) await kit.admin.query(sql).catch(() => {});
  await kit.close();
  await p.stop();
});

test('drift finds what we did not make, and the fix repairs only what is ours', async () => {
  const name = uniqueName('dr');
  const password = newPassword();
  await jobs.get('database.create')!(
    {
      database_id: randomUUID(),
      name,
      verifier: scramVerifier(password),
      allowlist: [{ cidr: '127.0.0.1/32', expires_at: null }],
      limits: DEFAULT_LIMITS,
    },
    kit.ctx(password),
  );
  const drift = async (kind = 'node.drift') =>
    (await jobs.get(kind)!({ known_databases: [name] }, kit.ctx())) as {
      findings: DriftFinding[];
      fixed?: string[];
    };
  const mine = (f: DriftFinding[], extra: string[]) =>
    f.filter((x) => x.object === name || x.object === `${name}.public` || extra.includes(x.object));

  assert.deepEqual(mine((await drift()).findings, []), [], 'a fresh database has no drift');

  const stray = uniqueName('stray');
  const sneaky = uniqueName('sneaky');
  const unknown = uniqueName('unk');
  cleanup.push(
    `DROP ROLE IF EXISTS ${stray}`,
    `DROP ROLE IF EXISTS ${sneaky}`,
    `DROP DATABASE IF EXISTS ${unknown}`,
  );
  await kit.admin.query(`CREATE ROLE ${stray} LOGIN`);
  await kit.admin.query(`CREATE ROLE ${sneaky} SUPERUSER`);
  await kit.admin.query(`CREATE DATABASE ${unknown}`);
  await kit.admin.query(`GRANT CONNECT ON DATABASE ${name} TO PUBLIC`);
  await kit.admin.query(`GRANT CONNECT, TEMP ON DATABASE ${name} TO ${stray}`);
  const c = await kit.connectAdmin(name);
  await c.query('GRANT USAGE, CREATE ON SCHEMA public TO PUBLIC');
  await c.end();

  const found = mine((await drift()).findings, [stray, sneaky, unknown]);
  const kinds = (f: DriftFinding[]) => [...new Set(f.map((x) => `${x.kind}:${x.object}`))].sort();
  assert.deepEqual(
    kinds(found),
    [
      `public_database_privilege:${name}`,
      `public_schema_privilege:${name}.public`,
      `unexpected_grant:${name}`,
      `unexpected_role:${sneaky}`,
      `unexpected_role:${stray}`,
      `unexpected_superuser:${sneaky}`,
      `unknown_database:${unknown}`,
    ].sort(),
  );

  const fix = await drift('node.drift_fix');
  assert.deepEqual(fix.fixed, [name]);
  assert.deepEqual(
    kinds(mine(fix.findings, [stray, sneaky, unknown])),
    [
      `unexpected_role:${sneaky}`,
      `unexpected_role:${stray}`,
      `unexpected_superuser:${sneaky}`,
      `unknown_database:${unknown}`,
    ].sort(),
    'ours repaired; foreign objects only reported',
  );
});
