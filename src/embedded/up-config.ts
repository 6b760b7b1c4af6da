import { existsSync, readFileSync } from 'node:fs';
import { z } from 'zod';
import { agentEnv } from '../agent/config.ts';
import { serverEnv } from '../server/config.ts';
import { type ConfigResult, type EnvBinding, loadConfig } from '../shared/config-loader.ts';

/**
 * `bulwark up`'s own settings (the supervisor process). Everything else an operator sets with
 * `BULWARK_*` belongs to the server or the agent and is handed to that child (see
 * `childEnvironment`).
 */
export const upConfigSchema = z
  .object({
    /**
     * TEST CLUSTERS ONLY: PostgreSQL runs with fsync, full_page_writes and synchronous_commit
     * off — a crash loses data. Only the exact value `1` turns it on, and `up` says so loudly.
     */
    unsafeFast: z
      .enum(['0', '1'], { message: 'test-only switch: only 1 (fsync off, data not durable) or 0' })
      .transform((v) => v === '1')
      .default(false),
    /** Directory of the PostgreSQL server binaries (default: the newest /usr/lib/postgresql/N/bin). */
    pgBin: z.string().min(1).max(4096).optional(),
    /** The pgbouncer binary (default: found in /usr/sbin, /usr/bin, /usr/local/bin). */
    pgbouncerBin: z.string().min(1).max(4096).optional(),
    /**
     * Private memory of each PostgreSQL process, in MiB (RLIMIT_DATA on the postmaster, inherited
     * by every backend; shared_buffers is not counted). A query past it fails with "out of
     * memory" on its own; without it one query can grow until the OOM killer restarts the cluster.
     */
    pgBackendMemoryMb: z
      .string()
      .regex(/^[0-9]{1,7}$/, { message: 'a whole number of MiB' })
      .transform(Number)
      .pipe(z.number().int().min(256, { message: 'at least 256 MiB' }).max(1_048_576))
      .default(2048),
    /** When run as root: the system user PostgreSQL and PgBouncer run as. */
    serviceUser: z.string().min(1).max(64).default('postgres'),
  })
  .strict();

export type UpConfig = z.infer<typeof upConfigSchema>;

export const upEnv: Record<string, EnvBinding> = {
  unsafeFast: { env: 'BULWARK_UNSAFE_FAST' },
  pgBin: { env: 'BULWARK_PG_BIN' },
  pgbouncerBin: { env: 'BULWARK_PGBOUNCER_BIN' },
  pgBackendMemoryMb: { env: 'BULWARK_PG_BACKEND_MEMORY_MB' },
  serviceUser: { env: 'BULWARK_SERVICE_USER' },
};

/**
 * Read by the CLI (not a long-running process): where the data dir is, how `bulwark login`
 * credentials are overridden, the control database and keyring of admin commands.
 */
export const cliEnvNames = [
  'BULWARK_DATA_DIR',
  'BULWARK_URL',
  'BULWARK_KEY',
  'BULWARK_ALLOW_INSECURE',
  'BULWARK_DATABASE_URL',
  'BULWARK_DATABASE_URL_FILE',
  'BULWARK_MASTER_KEY_FILE',
];

/** Read only by the test runner and test helpers (never by the product). */
export const testEnvNames = ['BULWARK_TEST_ENV', 'BULWARK_TEST_FILTER', 'BULWARK_FC_SEED'];

/** The variables `up` sets for its children itself: they win over the operator's. */
export const upOwnedServerEnv = [
  'BULWARK_HOST',
  'BULWARK_PORT',
  'BULWARK_DATABASE_URL',
  'BULWARK_SERVER_DATA_DIR',
  'BULWARK_METRICS_TOKEN',
  'BULWARK_POOLER_PORT',
  'BULWARK_MASTER_KEY_FILE',
];
export const upOwnedAgentEnv = [
  'BULWARK_SERVER_URL',
  'BULWARK_AGENT_STATE_DIR',
  'BULWARK_AGENT_ADMIN_DATABASE_URL',
  'BULWARK_POOLER_DIR',
  'BULWARK_POOLER_PORT',
  'BULWARK_POOLER_ADMIN_PASSWORD',
  'BULWARK_ENROLLMENT_TOKEN',
  'BULWARK_BACKUP_DIR',
];

function namesOf(bindings: Record<string, EnvBinding>): string[] {
  // Any binding may also come from NAME_FILE (config-loader).
  return Object.values(bindings).flatMap((b) => [b.env, `${b.env}_FILE`]);
}

/** Every `BULWARK_*` name some process of Bulwark reads. */
export function knownEnvNames(): Set<string> {
  return new Set([
    ...namesOf(serverEnv),
    ...namesOf(agentEnv),
    ...namesOf(upEnv),
    ...cliEnvNames,
    ...testEnvNames,
  ]);
}

/** The `BULWARK_*` names in `env` that no process reads (a typo does nothing silently otherwise). */
export function unknownEnvNames(env: NodeJS.ProcessEnv): string[] {
  const known = knownEnvNames();
  return Object.keys(env)
    .filter((k) => k.startsWith('BULWARK_') && !known.has(k))
    .sort();
}

export function loadUpConfig(sources: {
  env: NodeJS.ProcessEnv;
  file?: string | undefined;
}): ConfigResult<UpConfig> {
  return loadConfig(upConfigSchema, upEnv, sources);
}

/**
 * The operator's settings for one child: each `BULWARK_*` (and `_FILE`) name of that child's
 * bindings, then what `up` sets itself on top (it wins). `overridden` names the operator's
 * variables `up` replaced, so start-up can say so.
 */
export function childEnvironment(
  env: NodeJS.ProcessEnv,
  bindings: Record<string, EnvBinding>,
  own: NodeJS.ProcessEnv,
): { env: NodeJS.ProcessEnv; overridden: string[] } {
  const out: NodeJS.ProcessEnv = {};
  const overridden: string[] = [];
  const ownBase = new Set(Object.keys(own).map((k) => k.replace(/_FILE$/, '')));
  for (const name of namesOf(bindings)) {
    const v = env[name];
    if (v === undefined) continue;
    if (ownBase.has(name.replace(/_FILE$/, ''))) {
      overridden.push(name);
      continue;
    }
    out[name] = v;
  }
  return { env: { ...out, ...own }, overridden };
}

/**
 * One line per setting given in the environment or a config file: its name and where it
 * came from, with its value unless the binding is secret.
 */
export function describeSources(
  bindings: Record<string, EnvBinding>,
  sources: { env: NodeJS.ProcessEnv; file?: string | undefined },
  skip: readonly string[] = [],
): string[] {
  const lines: string[] = [];
  let fromFile: Record<string, unknown> = {};
  if (sources.file && existsSync(sources.file)) {
    try {
      const parsed: unknown = JSON.parse(readFileSync(sources.file, 'utf8'));
      if (parsed && typeof parsed === 'object' && !Array.isArray(parsed))
        fromFile = parsed as Record<string, unknown>;
    } catch {
      // The child reports a broken file itself, with every other problem.
    }
  }
  const show = (b: EnvBinding, v: unknown) => (b.secret ? '(secret, value not shown)' : `= ${String(v)}`);
  for (const [key, b] of Object.entries(bindings)) {
    if (skip.includes(b.env)) continue;
    const direct = sources.env[b.env];
    const viaFile = sources.env[`${b.env}_FILE`];
    if (viaFile !== undefined) lines.push(`${key} from env ${b.env}_FILE (file ${viaFile})`);
    else if (direct !== undefined && direct !== '') lines.push(`${key} from env ${b.env} ${show(b, direct)}`);
    else if (key in fromFile) lines.push(`${key} from file ${sources.file} ${show(b, fromFile[key])}`);
  }
  return lines;
}
