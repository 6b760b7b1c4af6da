import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { agentEnv as agentBindings, loadAgentConfig } from '../agent/config.ts';
import { loadServerConfig, serverEnv as serverBindings } from '../server/config.ts';
import type { ConfigResult, EnvBinding } from '../shared/config-loader.ts';
import type { DataLayout } from './layout.ts';
import { childEnvironment } from './up-config.ts';

/** Where `up` puts what it hands its children (ports, the data dir's files). */
export type ChildPlacement = {
  layout: DataLayout;
  host: string;
  port: number;
  poolerPort: number;
};

export const serverUrlOf = (p: Pick<ChildPlacement, 'host' | 'port'>): string =>
  `http://${p.host.includes(':') ? `[${p.host}]` : p.host}:${p.port}`;

export const controlUrlFile = (layout: DataLayout) => path.join(layout.secrets, 'control-database-url');
export const adminUrlFile = (layout: DataLayout) => path.join(layout.secrets, 'admin-database-url');
export const metricsTokenFile = (layout: DataLayout) => path.join(layout.secrets, 'metrics-token');

/** The server's settings `up` sets itself (they win over the operator's). */
export function serverOwnEnv(p: ChildPlacement): NodeJS.ProcessEnv {
  return {
    BULWARK_HOST: p.host,
    BULWARK_PORT: String(p.port),
    BULWARK_DATABASE_URL_FILE: controlUrlFile(p.layout),
    BULWARK_SERVER_DATA_DIR: p.layout.server,
    BULWARK_METRICS_TOKEN_FILE: metricsTokenFile(p.layout),
    BULWARK_POOLER_PORT: String(p.poolerPort),
    BULWARK_MASTER_KEY_FILE: p.layout.masterKeyring,
  };
}

/** The agent's settings `up` sets itself (the enrollment token is added when one is made). */
export function agentOwnEnv(p: ChildPlacement): NodeJS.ProcessEnv {
  return {
    BULWARK_SERVER_URL: serverUrlOf(p),
    BULWARK_AGENT_STATE_DIR: p.layout.agent,
    BULWARK_AGENT_ADMIN_DATABASE_URL_FILE: adminUrlFile(p.layout),
    BULWARK_POOLER_DIR: p.layout.pooler,
    BULWARK_POOLER_PORT: String(p.poolerPort),
    BULWARK_POOLER_ADMIN_PASSWORD_FILE: p.layout.poolerAdminPassword,
    BULWARK_BACKUP_DIR: p.layout.backups,
  };
}

/** The agent's environment: the operator's agent settings, then up's own; the enrollment is up's only. */
export function agentEnvironment(operatorEnv: NodeJS.ProcessEnv, own: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const env = childEnvironment(operatorEnv, agentBindings, own).env;
  // Never the operator's token, also once enrolled.
  delete env.BULWARK_ENROLLMENT_TOKEN_FILE;
  if (own.BULWARK_ENROLLMENT_TOKEN === undefined) delete env.BULWARK_ENROLLMENT_TOKEN;
  return env;
}

/** The server's environment: the operator's server settings, then up's own. */
export const serverEnvironment = (
  operatorEnv: NodeJS.ProcessEnv,
  own: NodeJS.ProcessEnv,
): NodeJS.ProcessEnv => childEnvironment(operatorEnv, serverBindings, own).env;

type Child = {
  name: 'server' | 'agent';
  bindings: Record<string, EnvBinding>;
  own: NodeJS.ProcessEnv;
  file: string | undefined;
  environment: (operatorEnv: NodeJS.ProcessEnv, own: NodeJS.ProcessEnv) => NodeJS.ProcessEnv;
  load: (sources: {
    env: NodeJS.ProcessEnv;
    file?: string | undefined;
    overrides?: Record<string, unknown>;
  }) => ConfigResult<unknown>;
};

/**
 * Checks the settings `up` will hand the server and the agent against their own config schemas,
 * before anything is started or created: the operator's `BULWARK_*` environment and config files,
 * with `up`'s own values on top. What `up` writes only once PostgreSQL runs (the database URLs, the
 * secrets' files) is checked with a valid stand-in: those values are `up`'s, never the operator's.
 * Returns one line per problem, naming the child, the setting and where its value came from; no
 * secret's value appears in them.
 */
export function checkChildSettings(args: {
  env: NodeJS.ProcessEnv;
  placement: ChildPlacement;
  serverConfigFile?: string | undefined;
  agentConfigFile?: string | undefined;
}): string[] {
  const children: Child[] = [
    {
      name: 'server',
      bindings: serverBindings,
      own: serverOwnEnv(args.placement),
      file: args.serverConfigFile,
      environment: serverEnvironment,
      load: loadServerConfig,
    },
    {
      name: 'agent',
      bindings: agentBindings,
      own: agentOwnEnv(args.placement),
      file: args.agentConfigFile,
      environment: agentEnvironment,
      load: loadAgentConfig,
    },
  ];
  const problems: string[] = [];
  for (const c of children) {
    const env = c.environment(args.env, c.own);
    const overrides: Record<string, unknown> = {};
    for (const [key, b] of Object.entries(c.bindings)) {
      const fileVar = `${b.env}_FILE`;
      const file = c.own[fileVar];
      if (file === undefined || existsSync(file)) continue;
      delete env[fileVar];
      overrides[key] = standIn(b.env);
    }
    const result = c.load({ env, file: c.file, overrides });
    if (result.ok) continue;
    const secrets = secretValues(env, c.bindings);
    for (const error of result.errors) {
      const binding = Object.values(c.bindings).find((b) => error.includes(`(${b.env})`));
      const from = binding ? ` [${sourceOf(binding, args.env, c.own, c.file)}]` : '';
      problems.push(`${c.name}: ${redact(error, secrets)}${from}`);
    }
  }
  return problems;
}

/** A valid value for a setting `up` fills in itself once the data plane runs. */
function standIn(envName: string): string {
  if (envName.endsWith('DATABASE_URL')) return 'postgres://bulwark@127.0.0.1:5432/bulwark';
  return randomBytes(24).toString('hex');
}

/** Where a setting's value comes from, as the operator would look for it. */
function sourceOf(b: EnvBinding, env: NodeJS.ProcessEnv, own: NodeJS.ProcessEnv, file?: string): string {
  if (own[b.env] !== undefined || own[`${b.env}_FILE`] !== undefined) return 'set by bulwark up';
  const viaFile = env[`${b.env}_FILE`];
  if (viaFile !== undefined) return `from env ${b.env}_FILE (file ${viaFile})`;
  if (env[b.env] !== undefined && env[b.env] !== '') return `from env ${b.env}`;
  if (file) return `from the config file ${file}, or its default`;
  return 'its default';
}

/** The secret values a message must never show (from the environment or the files named in it). */
function secretValues(env: NodeJS.ProcessEnv, bindings: Record<string, EnvBinding>): string[] {
  const out: string[] = [];
  for (const b of Object.values(bindings)) {
    if (!b.secret) continue;
    const direct = env[b.env];
    if (direct) out.push(direct);
    const file = env[`${b.env}_FILE`];
    if (file && existsSync(file)) {
      try {
        out.push(readFileSync(file, 'utf8').trim());
      } catch {}
    }
  }
  return out.filter((v) => v.length >= 4);
}

function redact(message: string, secrets: string[]): string {
  let out = message;
  for (const s of secrets) out = out.split(s).join('(secret, not shown)');
  return out;
}
