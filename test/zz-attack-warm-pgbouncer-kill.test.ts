// KNOWN OPEN ISSUE (found by the review of ADR 0035, older than it): a tenant's connection churn
// racing the agent's `KILL <db>` / `RESUME <db>` on PgBouncer's console (what database.rotate,
// database.allowlist when a range is removed, database.delete and a warm create with other limits
// do) crashes PgBouncer 1.18 (segfault) after 1–41 of them with 8 clients reconnecting: a
// wildcard auto-database is freed by KILL while a client is logging in to it. `DISABLE` first
// does not help. Ending the sessions in PostgreSQL and `RECONNECT` instead do not crash it, but
// leave a connected client that has not yet sent a query (PgBouncer links a server lazily)
// attached — a rotation or a narrowed allowlist would then not cut it — so KILL stays for now.
// Skipped unless BULWARK_KNOWN_ISSUES=1 (docs/security.md, "Known open issues"). Own PgBouncer:
// when it dies, nothing else is hit.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { databaseHandlers } from '../src/agent/jobs/database-handlers.ts';
import type { PoolerManager } from '../src/agent/pgbouncer/pooler-manager.ts';
import { ensureTenantTemplate } from '../src/agent/postgres/catalog-visibility.ts';
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

let p: PrivatePooler;
let pooler: PoolerManager;
let kit: ReturnType<typeof databaseJobKit>;
before(async () => {
  p = await startPrivatePooler();
  pooler = p.manager();
  await pooler.start();
  kit = databaseJobKit(p, pooler);
  await ensureTenantTemplate(kit.admin, kit.connectAdmin);
});
after(async () => {
  await kit.close();
  await p.stop().catch(() => {});
});

const alive = () =>
  pooler.admin('SHOW VERSION').then(
    () => true,
    () => false,
  );
const poolerLog = () =>
  fs.readFile(path.join(path.dirname(p.dir), 'pgbouncer.log'), 'utf8').then((t) => t.slice(-1500), String);

async function coldCreate() {
  const password = newPassword();
  const name = uniqueName('zk');
  const h = new Map(databaseHandlers({ ...kit.deps, platform: { databases: ['bulwark'], roles: [] } }));
  await h.get('database.create')!(
    {
      database_id: randomUUID(),
      name,
      verifier: scramVerifier(password),
      allowlist: [{ cidr: '127.0.0.1/32', expires_at: null }],
      limits: DEFAULT_LIMITS,
    },
    kit.ctx(password),
  );
  return { database: name, user: roleNames(name).owner, password };
}

const known = process.env.BULWARK_KNOWN_ISSUES === '1';
test('zz-attack: tenant connection churn racing KILL/RESUME of its database does not crash PgBouncer', {
  skip: known ? false : 'known open issue: PgBouncer 1.18 crashes on KILL of an auto-database during logins',
}, async () => {
  const l = await coldCreate();
  assert.equal(await tryLogin(clientFrom('127.0.0.1', { port: p.port, ...l })), null);
  let stop = false;
  const loops = Array.from({ length: 8 }, async () => {
    while (!stop) await tryLogin(clientFrom('127.0.0.1', { port: p.port, ...l }));
  });
  const deadline = Date.now() + 6_000;
  let kills = 0;
  let up = true;
  while (Date.now() < deadline && up) {
    await pooler.disconnect(l.database).catch(() => {});
    kills++;
    await new Promise((res) => setTimeout(res, 20));
    up = await alive();
  }
  stop = true;
  await Promise.all(loops);
  assert.ok(up, `PgBouncer died after ${kills} cuts; its log ends:\n${await poolerLog()}`);
  assert.ok(kills > 20, `only ${kills} cuts in 6 s`);
  // And the tenant gets in again afterwards.
  assert.equal(await tryLogin(clientFrom('127.0.0.1', { port: p.port, ...l })), null);
});
