import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { databaseHandlers } from '../../src/agent/jobs/database-handlers.ts';
import type { JobHandler } from '../../src/agent/jobs/job-context.ts';
import {
  ensureTenantTemplate,
  refuseMaintenanceLogins,
} from '../../src/agent/postgres/catalog-visibility.ts';
import { DEFAULT_LIMITS } from '../../src/shared/contracts/jobs.ts';
import { roleNames } from '../../src/shared/identifiers.ts';
import { scramVerifier } from '../../src/shared/scram.ts';
import {
  databaseJobKit,
  newPassword,
  type PrivatePooler,
  startPrivatePooler,
  uniqueName,
} from '../pooler-harness.ts';
import { testEnv } from './env.ts';

/** A tenant database made by the agent's `database.create` job, and its owner's login. */
export type Tenant = {
  name: string;
  id: string;
  user: string;
  roles: ReturnType<typeof roleNames>;
  password: string;
};

export type TenantKit = {
  pooler: PrivatePooler;
  kit: ReturnType<typeof databaseJobKit>;
  jobs: Map<string, JobHandler>;
  /** Runs database.create with a fresh name (from `prefix`), id, password and verifier. */
  create(prefix: string): Promise<Tenant>;
  /** A connected client (straight to postgres) as the tenant owner. */
  loginOwner(t: { name: string; user: string; password: string }): Promise<pg.Client>;
  close(): Promise<void>;
};

/**
 * A private pooler, the agent's database job handlers, and what the agent does at start: the
 * tenant template and the maintenance databases closed.
 */
export async function startTenantKit(): Promise<TenantKit> {
  const p = await startPrivatePooler();
  const pooler = p.manager();
  await pooler.start();
  const kit = databaseJobKit(p, pooler);
  const jobs = new Map<string, JobHandler>(databaseHandlers(kit.deps));
  await ensureTenantTemplate(kit.admin, kit.connectAdmin);
  await refuseMaintenanceLogins(kit.admin);

  const create = async (prefix: string): Promise<Tenant> => {
    const name = uniqueName(prefix);
    const id = randomUUID();
    const password = newPassword();
    await jobs.get('database.create')!(
      {
        database_id: id,
        name,
        verifier: scramVerifier(password),
        allowlist: [{ cidr: '127.0.0.1/32', expires_at: null }],
        limits: DEFAULT_LIMITS,
      },
      kit.ctx(password),
    );
    const roles = roleNames(name);
    return { name, id, user: roles.owner, roles, password };
  };

  const loginOwner = async (t: { name: string; user: string; password: string }): Promise<pg.Client> => {
    const c = new pg.Client({
      host: '127.0.0.1',
      port: testEnv().pgPort,
      database: t.name,
      user: t.user,
      password: t.password,
    });
    c.on('error', () => {});
    await c.connect();
    return c;
  };

  const close = async () => {
    await kit.close();
    await p.stop();
  };

  return { pooler: p, kit, jobs, create, loginOwner, close };
}
