/**
 * The platform's own role and database names in the cluster: the embedded stack creates them,
 * the agent and the server log in as them. The data directory's layout stays in
 * `src/embedded/layout.ts`, which re-exports these.
 */
export const ADMIN_ROLE = 'bulwark_admin';
export const CONTROL_ROLE = 'bulwark_server';
export const CONTROL_DB = 'bulwark';
export const POOLER_ADMIN = 'bulwark_pooler_admin';
