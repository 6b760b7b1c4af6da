import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import pg from 'pg';
import {
  createExplorerExecutor,
  type ExplorerExecutor,
  type ExplorerExecutorDeps,
} from '../../src/agent/explorer/explorer-executor.ts';
import { connectSteward } from '../../src/agent/postgres/steward.ts';
import {
  dropDatabase,
  dropOurRoles,
  ensureDatabase,
  ensureRoles,
  grantDatabase,
  setupSchema,
  terminateSessions,
} from '../../src/agent/postgres/tenant-sql.ts';
import type { QueryPayload } from '../../src/shared/contracts/explorer-channel.ts';
import { DEFAULT_LIMITS } from '../../src/shared/contracts/jobs.ts';
import { type RoleNames, roleNames } from '../../src/shared/identifiers.ts';
import { createLogger } from '../../src/shared/logger.ts';
import { scramVerifier } from '../../src/shared/scram.ts';
import { createExplorerValidator } from '../../src/shared/sql/explorer-validator.ts';
import { testEnv } from './env.ts';

export type Tenant = {
  id: string;
  name: string;
  roles: RoleNames;
  /** Runs SQL in the tenant database as its owner role (admin connection + SET ROLE). */
  asOwner(sql: string, params?: unknown[]): Promise<pg.QueryResult>;
  /** Runs SQL in the tenant database as the cluster admin. */
  asAdmin(sql: string, params?: unknown[]): Promise<pg.QueryResult>;
  drop(): Promise<void>;
};

function adminUrlFor(database: string): string {
  const u = new URL(testEnv().adminUrl);
  u.pathname = `/${database}`;
  return u.toString();
}

export async function connectAdmin(database: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: adminUrlFor(database) });
  c.on('error', () => {});
  await c.connect();
  return c;
}

/** The agent key of the test agents built here (steward and explorer passwords derive from it). */
export const TEST_AGENT_KEY = randomBytes(32);

export function clusterAccess(key: Buffer = TEST_AGENT_KEY) {
  const u = new URL(testEnv().adminUrl);
  return { pgHost: u.hostname, pgPort: Number(u.port), key };
}

/**
 * A tenant database made with the databases agent's own SQL (tenant-sql.ts: five roles with
 * markers, the database owned by the steward, REVOKE from PUBLIC, schema public owned by the
 * owner, set up in a steward session) — no pooler needed.
 */
export async function createTenant(admin: pg.Pool, prefix = 'ex'): Promise<Tenant> {
  const name = `${prefix}_${randomBytes(5).toString('hex')}`;
  const id = randomUUID();
  const roles = roleNames(name);
  await ensureRoles(admin, {
    databaseId: id,
    roles,
    verifier: scramVerifier(randomBytes(16).toString('hex')),
    limits: DEFAULT_LIMITS,
    key: TEST_AGENT_KEY,
  });
  await ensureDatabase(admin, name, roles, id);
  await grantDatabase(admin, name, roles);
  const c = await connectSteward(clusterAccess(), { databaseId: id, name, roles });
  try {
    await setupSchema(c, roles);
  } finally {
    await c.end();
  }
  let adminClient: Promise<pg.Client> | null = null;
  const run = async (sql: string, params: unknown[], owner: boolean) => {
    if (!owner) {
      adminClient ??= connectAdmin(name);
      return (await adminClient).query(sql, params);
    }
    const client = await connectAdmin(name);
    try {
      if (owner) await client.query(`SET ROLE ${roles.owner}`);
      return await client.query(sql, params);
    } finally {
      await client.end();
    }
  };
  return {
    id,
    name,
    roles,
    asOwner: (sql, params = []) => run(sql, params, true),
    asAdmin: (sql, params = []) => run(sql, params, false),
    async drop() {
      if (adminClient) await (await adminClient).end().catch(() => {});
      await terminateSessions(admin, { roles: Object.values(roles), database: name });
      await dropDatabase(admin, name, roles, id);
      await dropOurRoles(admin, roles, id);
    },
  };
}

export function adminPool(): pg.Pool {
  const pool = new pg.Pool({ connectionString: testEnv().adminUrl, max: 4 });
  pool.on('error', () => {});
  return pool;
}

/** An executor as the agent builds it, on the test cluster. */
export function testExecutor(
  admin: pg.Pool,
  overrides: Partial<ExplorerExecutorDeps> = {},
): ExplorerExecutor {
  return createExplorerExecutor({
    admin,
    connectAdmin,
    ...clusterAccess(),
    log: createLogger('explorer-test', 'silent'),
    validate: createExplorerValidator().validate,
    ...overrides,
  });
}

/** The attack fixture: canary/orders/customers, a sequence, and owner code that writes when run. */
export async function setupCanary(t: Tenant): Promise<void> {
  await t.asOwner(`
    CREATE TABLE canary (id int PRIMARY KEY, secret text NOT NULL);
    INSERT INTO canary VALUES (1, 'alpha'), (2, 'beta'), (3, 'gamma');
    CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
    INSERT INTO customers VALUES (1, 'ann'), (2, 'bob'), (3, 'cy');
    CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers, amount numeric(10, 2));
    INSERT INTO orders VALUES (1, 1, 10.00), (2, 1, 20.50), (3, 2, 7.25);
    CREATE SEQUENCE seq;
    CREATE FUNCTION evil(c canary) RETURNS int LANGUAGE plpgsql AS
      $$ BEGIN INSERT INTO canary VALUES (1000 + c.id, 'pwned'); RETURN 1; END $$;
    CREATE FUNCTION evil_definer(c canary) RETURNS int LANGUAGE plpgsql SECURITY DEFINER AS
      $$ BEGIN INSERT INTO canary VALUES (2000 + c.id, 'pwned'); RETURN 1; END $$;
    CREATE FUNCTION evil_eq(a int, b int) RETURNS boolean LANGUAGE plpgsql AS
      $$ BEGIN INSERT INTO canary VALUES (3000 + a, 'pwned'); RETURN a = b; END $$;
    CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = evil_eq);
    CREATE FUNCTION evil_check(v text) RETURNS boolean LANGUAGE plpgsql AS
      $$ BEGIN INSERT INTO canary VALUES (4000, v); RETURN true; END $$;
    CREATE DOMAIN dom_evil AS text CHECK (evil_check(VALUE));
    CREATE VIEW v_evil AS SELECT c.id, evil(c) AS e FROM canary c;
    GRANT EXECUTE ON FUNCTION evil(canary), evil_definer(canary) TO PUBLIC;
  `);
}

/** What must not change: the canary's rows and the catalogs (objects created anywhere). */
export async function snapshot(t: Tenant): Promise<string> {
  const r = await t.asAdmin(
    `SELECT (SELECT md5(string_agg(c::text, ',' ORDER BY id)) FROM canary c) AS canary,
            (SELECT md5(string_agg(oid::text, ',' ORDER BY oid)) FROM pg_class) AS classes,
            (SELECT md5(string_agg(oid::text || proacl::text, ',' ORDER BY oid)) FROM pg_proc WHERE oid >= 16384) AS procs,
            (SELECT md5(string_agg(oid::text, ',' ORDER BY oid)) FROM pg_namespace) AS namespaces,
            (SELECT count(*) FROM pg_largeobject_metadata) AS large_objects,
            (SELECT last_value::text || is_called::text FROM seq) AS seq,
            (SELECT count(*) FROM pg_roles WHERE rolname LIKE 'pwn%') AS roles,
            (SELECT count(*) FROM pg_database WHERE datname LIKE 'pwn%') AS databases`,
  );
  return JSON.stringify(r.rows[0]);
}

type AuditRow = { outcome: string; request_id: string | null; details: Record<string, unknown> };

/**
 * The explorer's audit events: `rows` (explorer.query: who asked what, written before any row is
 * returned) and `results` (explorer.query.result: the outcome, written after the response).
 * Waits (bounded) until every accepted query has its result event, linked by request id.
 */
export async function explorerAudit(db: pg.Pool): Promise<{ rows: AuditRow[]; results: AuditRow[] }> {
  const read = async (action: string) =>
    (
      await db.query<AuditRow>(
        'SELECT outcome, request_id, details FROM audit_events WHERE action = $1 ORDER BY id',
        [action],
      )
    ).rows;
  const deadline = Date.now() + 5_000;
  for (;;) {
    const rows = await read('explorer.query');
    const results = await read('explorer.query.result');
    const answered = new Set(results.map((r) => r.request_id));
    const accepted = rows.filter((r) => r.outcome === 'success');
    if (accepted.every((r) => answered.has(r.request_id)) || Date.now() > deadline) return { rows, results };
    await new Promise((res) => setTimeout(res, 20));
  }
}

/** An explorer query job's payload for tenant `t` (defaults: 1,000 rows, 10 MB, 2 s). */
export function queryPayload(
  t: Pick<Tenant, 'id' | 'name'>,
  sql: string,
  over: Partial<QueryPayload> = {},
): QueryPayload {
  return {
    database_id: t.id,
    name: t.name,
    sql,
    sql_redacted: '',
    row_limit: 1_000,
    byte_limit: 10 * 1024 * 1024,
    statement_timeout_ms: 2_000,
    ...over,
  };
}

/** After `settled()`, the pooled explorer connection of `tenant` carries no session state. */
export async function assertSessionClean(e: ExplorerExecutor, tenant: Tenant, label: string): Promise<void> {
  await e.settled();
  const probe = await e.probeSession({ database_id: tenant.id, name: tenant.name });
  assert.deepEqual(
    probe,
    {
      prepared: 0,
      advisory: 0,
      listening: 0,
      cursors: 0,
      temp: 0,
      readOnlyDefault: 'on',
      user: tenant.roles.explorer,
    },
    `${label}: session state survived`,
  );
}
