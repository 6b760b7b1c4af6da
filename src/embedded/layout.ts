import path from 'node:path';

/** The data directory's layout, in one place. Bump LAYOUT_VERSION on incompatible changes. */
export const LAYOUT_VERSION = 1;

export const DEFAULT_PORTS = { server: 8080, pooler: 6432, postgres: 5433, agentHealth: 8421 } as const;

export { ADMIN_ROLE, CONTROL_DB, CONTROL_ROLE, POOLER_ADMIN } from '../shared/platform-names.ts';

export function dataLayout(dataDir: string) {
  const root = path.resolve(dataDir);
  return {
    root,
    versionFile: path.join(root, 'VERSION'),
    lockFile: path.join(root, 'up.lock'),
    secrets: path.join(root, 'secrets'),
    adminPassword: path.join(root, 'secrets', 'postgres-admin-password'),
    controlPassword: path.join(root, 'secrets', 'control-db-password'),
    poolerAdminPassword: path.join(root, 'secrets', 'pooler-admin-password'),
    masterKeyring: path.join(root, 'secrets', 'master-keyring.json'),
    pgParent: path.join(root, 'pg'),
    pgData: path.join(root, 'pg', 'data'),
    pooler: path.join(root, 'pgbouncer'),
    server: path.join(root, 'server'),
    agent: path.join(root, 'agent'),
    /** Backup archives (issue 15), the agent's: `<database id>/<backup id>.bulwark-backup`. */
    backups: path.join(root, 'backups'),
    logs: path.join(root, 'logs'),
  };
}

export type DataLayout = ReturnType<typeof dataLayout>;
