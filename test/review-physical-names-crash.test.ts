// Security review (ADR 0034): an agent killed between a spare's claim and the create's report,
// whose job then ends dead (the server marks the database failed, pg_name never set). The
// tenant's delete is sent with the label: what happens to the claimed spare? Real cluster and PgBouncer.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { databaseHandlers } from '../src/agent/jobs/database-handlers.ts';
import type { JobContext, JobHandler } from '../src/agent/jobs/job-context.ts';
import type { PoolerManager } from '../src/agent/pgbouncer/pooler-manager.ts';
import type { WarmPool } from '../src/agent/pool/warm-pool.ts';
import { SPARE_PREFIX, spareOwnerPassword } from '../src/agent/postgres/spare-sql.ts';
import { DEFAULT_LIMITS } from '../src/shared/contracts/jobs.ts';
import { roleNames } from '../src/shared/identifiers.ts';
import { scramVerifier } from '../src/shared/scram.ts';
import { testEnv } from './helpers/env.ts';
import {
  clientFrom,
  type databaseJobKit,
  newPassword,
  type PrivatePooler,
  startNodeKit,
  startWarmPool,
  tryLogin,
  uniqueName,
} from './pooler-harness.ts';

let p: PrivatePooler;
let pooler: PoolerManager;
let kit: ReturnType<typeof databaseJobKit>;
let pool: WarmPool;
let crashAt: string | null = null;
class Killed extends Error {}

before(async () => {
  ({ p, pooler, kit } = await startNodeKit());
  pool = await startWarmPool(kit, pooler, { size: 1 });
});
after(async () => {
  await pool.drain().catch(() => {});
  // The orphan (a claimed spare, tenant-marked) is nobody's: the test removes it by hand.
  const left = await kit.admin.query<{ n: string }>(
    `SELECT datname::text AS n FROM pg_database WHERE starts_with(datname::text, $1)`,
    [`${SPARE_PREFIX}${pool.tag}_`],
  );
  for (const { n } of left.rows) {
    await kit.admin.query(`DROP DATABASE IF EXISTS "${n}" WITH (FORCE)`).catch(() => {});
    for (const r of Object.values(roleNames(n)))
      await kit.admin.query(`DROP ROLE IF EXISTS "${r}"`).catch(() => {});
  }
  await kit.close();
  await p.stop();
});

function handlers(): Map<string, JobHandler> {
  return new Map(
    databaseHandlers({
      ...kit.deps,
      warmPool: pool,
      platform: { databases: ['bulwark'], roles: [] },
      onStep: (kind: string, step: string) => {
        if (crashAt === `${kind}/${step}`) {
          crashAt = null;
          throw new Killed(`killed at ${step}`);
        }
      },
    }),
  );
}

const ctx = (password: string, attempt = 1): JobContext => ({
  ...kit.ctx(password),
  attempt,
  afterReport: () => {},
});

test('a create that dies after its claim and ends dead: the delete (with the label) finds the claimed spare by its marker and removes it all', async () => {
  const label = uniqueName('zzc');
  const password = newPassword();
  const id = randomUUID();
  const payload = {
    database_id: id,
    name: label,
    verifier: scramVerifier(password),
    allowlist: [{ cidr: '127.0.0.1/32', expires_at: null }],
    limits: DEFAULT_LIMITS,
  };
  const before = await kit.admin.query<{ n: string }>(
    `SELECT datname::text AS n FROM pg_database WHERE starts_with(datname::text, $1)
        AND shobj_description(oid, 'pg_database') LIKE 'bulwark:spare:ready:%'`,
    [`${SPARE_PREFIX}${pool.tag}_`],
  );
  assert.equal(before.rowCount, 1);
  const spare = before.rows[0]!.n;
  // Every attempt dies right after the claim's commit (e.g. the agent killed, or PgBouncer down
  // so the proving login keeps failing); the fifth is the job's last: dead, database failed.
  crashAt = 'database.create/claimed';
  await assert.rejects(handlers().get('database.create')!(payload, ctx(password, 1)), Killed);
  for (let attempt = 2; attempt <= 5; attempt++) {
    crashAt = 'database.create/claimed';
    await assert.rejects(handlers().get('database.create')!(payload, ctx(password, attempt)), Killed);
  }
  // The server never learnt the physical name (pg_name stays NULL): the tenant's delete of the
  // failed record reaches the agent with the label. The agent finds the claimed spare by its
  // marker for this id and removes it: database, roles, PgBouncer entry.
  const del = (await handlers().get('database.delete')!({ database_id: id, name: label }, ctx(password))) as {
    dropped: boolean;
  };
  assert.equal(del.dropped, true);
  const db = await kit.admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [spare]);
  assert.equal(db.rowCount, 0, 'the claimed spare is gone');
  const roles = await kit.admin.query('SELECT 1 FROM pg_roles WHERE rolname = ANY($1)', [
    Object.values(roleNames(spare)),
  ]);
  assert.equal(roles.rowCount, 0, 'its roles are gone');
  assert.equal(pooler.state().databases[spare], undefined, 'its PgBouncer entry is gone');
  const direct = await tryLogin(
    clientFrom('127.0.0.1', {
      port: testEnv().pgPort,
      user: roleNames(spare).owner,
      password: spareOwnerPassword(kit.deps.cluster.key, spare),
      database: spare,
    }),
  );
  assert.notEqual(direct, null);
});
