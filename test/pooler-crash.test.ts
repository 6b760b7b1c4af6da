import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { CREATE_STEPS } from '../src/agent/jobs/database-create.ts';
import { DELETE_STEPS } from '../src/agent/jobs/database-delete.ts';
import { databaseHandlers } from '../src/agent/jobs/database-handlers.ts';
import { ROTATE_STEPS } from '../src/agent/jobs/database-rotate.ts';
import type { JobHandler } from '../src/agent/jobs/job-context.ts';
import type { PoolerManager } from '../src/agent/pgbouncer/pooler-manager.ts';
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

/**
 * An agent killed at any step of a job and run again ends ready (or, when the job is given
 * up and the database deleted, leaves nothing behind). The kill is the `onStep` hook throwing
 * before the step runs; the rerun is a NEW pooler manager on the same state dir (a restarted
 * agent) with fresh handlers.
 */
let p: PrivatePooler;
let kit: ReturnType<typeof databaseJobKit>;
let crashAt: { kind: string; step: string } | null = null;
class Killed extends Error {}

before(async () => {
  p = await startPrivatePooler();
  const first = p.manager();
  await first.start();
  kit = databaseJobKit(p, first);
});
after(async () => {
  await kit.close();
  await p.stop();
});

/** A freshly started agent: new manager from the saved state, new handlers. */
async function restartedAgent(): Promise<{ jobs: Map<string, JobHandler>; pooler: PoolerManager }> {
  const pooler = p.manager();
  await pooler.start();
  const deps = {
    ...kit.deps,
    pooler,
    onStep: (kind: string, step: string) => {
      if (crashAt && crashAt.kind === kind && crashAt.step === step) {
        crashAt = null;
        throw new Killed(`killed at ${kind}/${step}`);
      }
    },
  };
  return { jobs: new Map(databaseHandlers(deps)), pooler };
}

const login = (name: string, user: string, password: string) =>
  tryLogin(clientFrom('127.0.0.1', { port: p.port, user, password, database: name }));

async function leftovers(name: string): Promise<number> {
  const r = await kit.admin.query(
    'SELECT 1 FROM pg_roles WHERE rolname = ANY($1) UNION ALL SELECT 1 FROM pg_database WHERE datname = $2',
    [Object.values(roleNames(name)), name],
  );
  return r.rowCount ?? 0;
}

test('create killed at each step → rerun ends ready; or a delete leaves nothing behind', async () => {
  for (const step of CREATE_STEPS) {
    for (const ending of ['rerun', 'delete'] as const) {
      const name = uniqueName(`cr_${step}`);
      const id = randomUUID();
      const password = newPassword();
      const payload = {
        database_id: id,
        name,
        verifier: scramVerifier(password),
        allowlist: [{ cidr: '127.0.0.1/32', expires_at: null }],
        limits: DEFAULT_LIMITS,
      };
      crashAt = { kind: 'database.create', step };
      const a = await restartedAgent();
      await assert.rejects(a.jobs.get('database.create')!(payload, kit.ctx(password)), Killed);
      a.pooler.stop();

      const b = await restartedAgent();
      if (ending === 'rerun') {
        const r = await b.jobs.get('database.create')!(payload, kit.ctx(password));
        assert.equal(r.name, name, step);
        assert.equal(await login(name, roleNames(name).owner, password), null, `ready after ${step}`);
        const acl = await kit.admin.query<{ acl: string }>(
          'SELECT datacl::text AS acl FROM pg_database WHERE datname = $1',
          [name],
        );
        assert.ok(!/(^|[{,])=/.test(acl.rows[0]!.acl), `no PUBLIC privileges after ${step}`);
        const schema = await kit.connectAdmin(name);
        const s = await schema.query<{ acl: string; owner: string }>(
          "SELECT nspacl::text AS acl, pg_get_userbyid(nspowner) AS owner FROM pg_namespace WHERE nspname = 'public'",
        );
        await schema.end();
        assert.equal(s.rows[0]!.owner, roleNames(name).owner, step);
        assert.ok(!/(^|[{,])=/.test(s.rows[0]!.acl), `schema public has no PUBLIC grant after ${step}`);
      } else {
        assert.deepEqual(
          await b.jobs.get('database.delete')!({ database_id: id, name }, kit.ctx()),
          { dropped: !['roles', 'database'].includes(step) },
          step,
        );
        assert.equal(await leftovers(name), 0, `nothing left after a crash at ${step} + delete`);
        assert.ok(!b.pooler.state().databases[name]);
      }
      b.pooler.stop();
    }
  }
});

test('delete and rotate killed at each step → rerun finishes them', async () => {
  for (const step of DELETE_STEPS) {
    const a = await restartedAgent();
    const name = uniqueName(`dl_${step}`);
    const id = randomUUID();
    const password = newPassword();
    await a.jobs.get('database.create')!(
      {
        database_id: id,
        name,
        verifier: scramVerifier(password),
        allowlist: [{ cidr: '127.0.0.1/32', expires_at: null }],
        limits: DEFAULT_LIMITS,
      },
      kit.ctx(password),
    );
    crashAt = { kind: 'database.delete', step };
    await assert.rejects(a.jobs.get('database.delete')!({ database_id: id, name }, kit.ctx()), Killed);
    a.pooler.stop();
    const b = await restartedAgent();
    await b.jobs.get('database.delete')!({ database_id: id, name }, kit.ctx());
    assert.equal(await leftovers(name), 0, `delete finished after a crash at ${step}`);
    assert.notEqual(await login(name, roleNames(name).owner, password), null);
    b.pooler.stop();
  }

  const a = await restartedAgent();
  const name = uniqueName('rot');
  const id = randomUUID();
  let password = newPassword();
  await a.jobs.get('database.create')!(
    {
      database_id: id,
      name,
      verifier: scramVerifier(password),
      allowlist: [{ cidr: '127.0.0.1/32', expires_at: null }],
      limits: DEFAULT_LIMITS,
    },
    kit.ctx(password),
  );
  a.pooler.stop();
  for (const step of ROTATE_STEPS) {
    const next = newPassword();
    const payload = { database_id: id, name, verifier: scramVerifier(next) };
    crashAt = { kind: 'database.rotate', step };
    const x = await restartedAgent();
    await assert.rejects(x.jobs.get('database.rotate')!(payload, kit.ctx(next)), Killed);
    x.pooler.stop();
    const y = await restartedAgent();
    await y.jobs.get('database.rotate')!(payload, kit.ctx(next));
    assert.equal(await login(name, roleNames(name).owner, next), null, `rotated after a crash at ${step}`);
    assert.notEqual(await login(name, roleNames(name).owner, password), null);
    password = next;
    y.pooler.stop();
  }
});
