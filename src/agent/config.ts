import { isIP } from 'node:net';
import { z } from 'zod';
import { type ConfigResult, type EnvBinding, loadConfig } from '../shared/config-loader.ts';
import { EXECUTION_CAPABILITIES, type ExecutionCapability } from '../shared/execution-token.ts';
import type { S3StorageOptions } from './backups/s3-storage.ts';

/** Object-key prefixes of off-site copies: path characters only, no `..`, no leading `/`. */
export const S3_PREFIX_PATTERN = /^(?!\/)(?!.*\.\.)[A-Za-z0-9._\-/]{0,200}$/;

/**
 * The capabilities governed SQL may use on this node, whatever the server signs: `reader,migrator`
 * (default), `reader` (no writes or DDL here), or `none` (no governed SQL at all). A list or a
 * comma-separated string.
 */
const executionCapabilitiesSchema = z
  .union([
    z.array(z.enum(EXECUTION_CAPABILITIES)).max(2),
    z
      .string()
      .max(64)
      .transform((v, ctx): ExecutionCapability[] => {
        const items = v
          .split(',')
          .map((x) => x.trim())
          .filter((x) => x !== '');
        if (items.length === 1 && items[0] === 'none') return [];
        const out: ExecutionCapability[] = [];
        for (const item of items) {
          if (item !== 'reader' && item !== 'migrator') {
            ctx.addIssue({
              code: 'custom',
              message: `unknown capability ${JSON.stringify(item.slice(0, 20))} (reader, migrator or none)`,
            });
            return z.NEVER;
          }
          if (!out.includes(item)) out.push(item);
        }
        if (out.length === 0) {
          ctx.addIssue({ code: 'custom', message: 'name reader, migrator, or none' });
          return z.NEVER;
        }
        return out;
      }),
  ])
  .default(['reader', 'migrator']);

export const agentConfigSchema = z
  .object({
    serverUrl: z.url().max(2048),
    allowInsecure: z
      .union([z.boolean(), z.enum(['true', 'false']).transform((v) => v === 'true')])
      .default(false),
    stateDir: z.string().min(1).max(4096),
    enrollmentToken: z.string().max(200).optional(),
    adminDatabaseUrl: z
      .string()
      .max(4096)
      .refine((v) => /^postgres(ql)?:\/\//.test(v), 'must be a postgres:// URL'),
    poolerDir: z.string().min(1).max(4096).optional(),
    poolerPort: z.coerce.number().int().min(1).max(65535).default(6432),
    /** PgBouncer's listen_addr as the agent renders it (the console is reached on 127.0.0.1). */
    poolerListenAddr: z.string().min(1).max(255).default('127.0.0.1'),
    /**
     * Where tenants reach this node's PgBouncer (a host name or address; issue 17): reported to the
     * server at enrollment and on every heartbeat, and named in the connection info of the node's
     * databases. Unset: the server's own `poolerPublicHost` is used.
     */
    poolerPublicHost: z
      .string()
      .min(1)
      .max(255)
      .regex(/^[A-Za-z0-9.:_-]+$/, 'a host name or an IP address')
      .optional(),
    /** The port tenants use for it (default: poolerPort). */
    poolerPublicPort: z.coerce.number().int().min(1).max(65535).optional(),
    /** The operator's own TLS certificate and key for PgBouncer (else a self-signed one is made). */
    poolerTlsCertFile: z.string().min(1).max(4096).optional(),
    poolerTlsKeyFile: z.string().min(1).max(4096).optional(),
    poolerAdminPassword: z.string().min(16).max(512).optional(),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    pollWaitMs: z.coerce.number().int().min(100).max(120_000).default(25_000),
    /** `backup.download` jobs run at once beside the main job loop (ADR 0023); one more is refused. */
    downloadLaneMax: z.coerce.number().int().min(1).max(16).default(2),
    heartbeatMs: z.coerce.number().int().min(500).max(300_000).default(10_000),
    /** How often the size and connections of each tenant database are sampled and reported. */
    sampleIntervalMs: z.coerce.number().int().min(500).max(3_600_000).default(60_000),
    /**
     * Spare databases kept ready on this node (the warm pool, ADR 0028): a create takes one and
     * is ready without waiting for CREATE DATABASE. 0 turns the pool off (its spares are removed).
     */
    warmPoolSize: z.coerce.number().int().min(0).max(50).default(3),
    /** The explorer channel (a WebSocket to the server; ADR 0009). Off: explorer requests use the job queue. */
    explorerChannel: z
      .union([z.boolean(), z.enum(['true', 'false']).transform((v) => v === 'true')])
      .default(true),
    /**
     * Governed SQL (ADR 0021): the capabilities this node allows. The execution keys it trusts are
     * pinned in `<stateDir>/execution-keys.json` (written by `bulwark up`, else trust on first use
     * of the authenticated agent API; later keys only when endorsed by a pinned one).
     */
    executionCapabilities: executionCapabilitiesSchema,
    /**
     * Where backup archives are kept (issue 15; `<dir>/<database id>/<backup id>.bulwark-backup`,
     * 0700/0600). Default: `<stateDir>/backups`; `bulwark up` puts it under the data dir.
     */
    backupDir: z.string().min(1).max(4096).optional(),
    /** The directory of pg_dump and pg_restore (default: the newest /usr/lib/postgresql/N/bin). */
    pgBinDir: z.string().min(1).max(4096).optional(),
    /**
     * Off-site copies (ADR 0022): every backup is also uploaded to this S3 bucket, and counts as
     * done only once it is there. Set the bucket and both keys (the endpoint for a non-AWS store).
     */
    backupS3Endpoint: z.url().max(2048).optional(),
    backupS3Bucket: z
      .string()
      .regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'must be an S3 bucket name')
      .optional(),
    backupS3Region: z
      .string()
      .regex(/^[a-z0-9-]{1,50}$/)
      .default('us-east-1'),
    backupS3Prefix: z
      .string()
      .max(200)
      .regex(S3_PREFIX_PATTERN, 'letters, digits, . _ - / only; no "..", no leading /')
      .optional(),
    /** Path-style URLs; default: on with an endpoint (S3-compatible stores), off for AWS. */
    backupS3ForcePathStyle: z
      .union([z.boolean(), z.enum(['true', 'false']).transform((v) => v === 'true')])
      .optional(),
    backupS3AccessKeyId: z.string().min(1).max(256).optional(),
    backupS3SecretAccessKey: z.string().min(1).max(256).optional(),
    /**
     * Attached databases (ADR 0031): an absolute path to this agent's JSON file of existing
     * PostgreSQL databases (mode 0600, the agent's user; src/agent/attached/attached-config.ts).
     */
    attachedConfig: z
      .string()
      .min(1)
      .max(4096)
      .refine((v) => v.startsWith('/'), 'must be an absolute path')
      .optional(),
    /**
     * How often the attached-databases file is read again, its roles checked again and the result
     * reported (seconds): a privilege granted later, or a changed file, is seen within this time.
     */
    attachedRecheckSeconds: z.coerce.number().int().min(1).max(86_400).default(600),
  })
  .strict()
  .superRefine((c, ctx) => {
    const s3 = [c.backupS3Bucket, c.backupS3AccessKeyId, c.backupS3SecretAccessKey];
    const anyS3 = s3.some((v) => v !== undefined) || c.backupS3Endpoint || c.backupS3Prefix;
    if (anyS3 && s3.some((v) => v === undefined)) {
      ctx.addIssue({
        code: 'custom',
        path: ['backupS3Bucket'],
        message:
          'off-site copies need the bucket, the access key id and the secret access key (BULWARK_BACKUP_S3_BUCKET, _ACCESS_KEY_ID, _SECRET_ACCESS_KEY)',
      });
    }
    if (c.backupS3Endpoint && !c.allowInsecure && !isSecureServerUrl(c.backupS3Endpoint)) {
      ctx.addIssue({
        code: 'custom',
        path: ['backupS3Endpoint'],
        message: 'plain http:// is refused for a non-loopback S3 endpoint; use https://',
      });
    }
    if (!c.allowInsecure && !isSecureServerUrl(c.serverUrl)) {
      ctx.addIssue({
        code: 'custom',
        path: ['serverUrl'],
        message:
          'plain http:// is refused for a non-loopback server; use https:// (or set allowInsecure when TLS is terminated elsewhere)',
      });
    }
  });

export type AgentConfig = z.infer<typeof agentConfigSchema>;

/** https anywhere; http only to a loopback address (fail closed). */
export function isSecureServerUrl(raw: string): boolean {
  const u = new URL(raw);
  if (u.protocol === 'https:') return true;
  if (u.protocol !== 'http:') return false;
  const host = u.hostname.replace(/^\[|\]$/g, '');
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  if (isIP(host) === 6) return host === '::1';
  return false;
}

export const agentEnv: Record<string, EnvBinding> = {
  serverUrl: { env: 'BULWARK_SERVER_URL' },
  allowInsecure: { env: 'BULWARK_AGENT_ALLOW_INSECURE' },
  stateDir: { env: 'BULWARK_AGENT_STATE_DIR' },
  enrollmentToken: { env: 'BULWARK_ENROLLMENT_TOKEN', secret: true },
  adminDatabaseUrl: { env: 'BULWARK_AGENT_ADMIN_DATABASE_URL', secret: true },
  poolerDir: { env: 'BULWARK_POOLER_DIR' },
  poolerPort: { env: 'BULWARK_POOLER_PORT' },
  poolerListenAddr: { env: 'BULWARK_POOLER_LISTEN_ADDR' },
  poolerPublicHost: { env: 'BULWARK_POOLER_PUBLIC_HOST' },
  poolerPublicPort: { env: 'BULWARK_POOLER_PUBLIC_PORT' },
  poolerTlsCertFile: { env: 'BULWARK_POOLER_TLS_CERT_FILE' },
  poolerTlsKeyFile: { env: 'BULWARK_POOLER_TLS_KEY_FILE' },
  poolerAdminPassword: { env: 'BULWARK_POOLER_ADMIN_PASSWORD', secret: true },
  logLevel: { env: 'BULWARK_LOG_LEVEL' },
  pollWaitMs: { env: 'BULWARK_AGENT_POLL_WAIT_MS' },
  downloadLaneMax: { env: 'BULWARK_AGENT_DOWNLOAD_LANE_MAX' },
  heartbeatMs: { env: 'BULWARK_AGENT_HEARTBEAT_MS' },
  sampleIntervalMs: { env: 'BULWARK_AGENT_SAMPLE_INTERVAL_MS' },
  warmPoolSize: { env: 'BULWARK_WARM_POOL_SIZE' },
  explorerChannel: { env: 'BULWARK_AGENT_EXPLORER_CHANNEL' },
  backupDir: { env: 'BULWARK_BACKUP_DIR' },
  pgBinDir: { env: 'BULWARK_AGENT_PG_BIN' },
  backupS3Endpoint: { env: 'BULWARK_BACKUP_S3_ENDPOINT' },
  backupS3Bucket: { env: 'BULWARK_BACKUP_S3_BUCKET' },
  backupS3Region: { env: 'BULWARK_BACKUP_S3_REGION' },
  backupS3Prefix: { env: 'BULWARK_BACKUP_S3_PREFIX' },
  backupS3ForcePathStyle: { env: 'BULWARK_BACKUP_S3_FORCE_PATH_STYLE' },
  backupS3AccessKeyId: { env: 'BULWARK_BACKUP_S3_ACCESS_KEY_ID', secret: true },
  backupS3SecretAccessKey: { env: 'BULWARK_BACKUP_S3_SECRET_ACCESS_KEY', secret: true },
  executionCapabilities: { env: 'BULWARK_AGENT_EXECUTION_CAPABILITIES' },
  attachedConfig: { env: 'BULWARK_AGENT_ATTACHED_CONFIG' },
  attachedRecheckSeconds: { env: 'BULWARK_AGENT_ATTACHED_RECHECK_SECONDS' },
};

export function loadAgentConfig(sources: {
  env: NodeJS.ProcessEnv;
  file?: string | undefined;
  overrides?: Record<string, unknown>;
}): ConfigResult<AgentConfig> {
  return loadConfig(agentConfigSchema, agentEnv, sources);
}

/** The off-site storage options of a parsed config, or undefined when none is configured. */
export function backupS3Options(c: AgentConfig): S3StorageOptions | undefined {
  if (!c.backupS3Bucket || !c.backupS3AccessKeyId || !c.backupS3SecretAccessKey) return undefined;
  return {
    endpoint: c.backupS3Endpoint,
    region: c.backupS3Region,
    bucket: c.backupS3Bucket,
    prefix: c.backupS3Prefix,
    forcePathStyle: c.backupS3ForcePathStyle ?? c.backupS3Endpoint !== undefined,
    credentials: { accessKeyId: c.backupS3AccessKeyId, secretAccessKey: c.backupS3SecretAccessKey },
  };
}
