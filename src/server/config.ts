import { z } from 'zod';
import { type ConfigResult, type EnvBinding, loadConfig } from '../shared/config-loader.ts';

const logLevel = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

export const serverConfigSchema = z
  .object({
    host: z.string().min(1).max(255).default('127.0.0.1'),
    port: z.coerce.number().int().min(0).max(65535).default(8080),
    publicUrl: z.url().max(2048).optional(),
    databaseUrl: z
      .string()
      .max(4096)
      .refine((v) => /^postgres(ql)?:\/\//.test(v), 'must be a postgres:// URL'),
    dataDir: z.string().min(1).max(4096),
    logLevel: logLevel.default('info'),
    trustProxy: z
      .union([z.boolean(), z.enum(['true', 'false']).transform((v) => v === 'true'), z.string().max(1024)])
      .default(false),
    bodyLimitBytes: z.coerce
      .number()
      .int()
      .min(1024)
      .max(64 * 1024 * 1024)
      .default(1024 * 1024),
    dbPoolMax: z.coerce.number().int().min(1).max(200).default(20),
    agentPollMaxMs: z.coerce.number().int().min(100).max(120_000).default(25_000),
    jobLeaseMs: z.coerce.number().int().min(1_000).max(3_600_000).default(120_000),
    enrollmentTtlMinutes: z.coerce
      .number()
      .int()
      .min(1)
      .max(7 * 24 * 60)
      .default(60),
  })
  .strict();

export type ServerConfig = z.infer<typeof serverConfigSchema>;

export const serverEnv: Record<string, EnvBinding> = {
  host: { env: 'BULWARK_HOST' },
  port: { env: 'BULWARK_PORT' },
  publicUrl: { env: 'BULWARK_PUBLIC_URL' },
  databaseUrl: { env: 'BULWARK_DATABASE_URL', secret: true },
  dataDir: { env: 'BULWARK_SERVER_DATA_DIR' },
  logLevel: { env: 'BULWARK_LOG_LEVEL' },
  trustProxy: { env: 'BULWARK_TRUST_PROXY' },
  bodyLimitBytes: { env: 'BULWARK_BODY_LIMIT_BYTES' },
  dbPoolMax: { env: 'BULWARK_DB_POOL_MAX' },
  agentPollMaxMs: { env: 'BULWARK_AGENT_POLL_MAX_MS' },
  jobLeaseMs: { env: 'BULWARK_JOB_LEASE_MS' },
  enrollmentTtlMinutes: { env: 'BULWARK_ENROLLMENT_TTL_MINUTES' },
};

export function loadServerConfig(sources: {
  env: NodeJS.ProcessEnv;
  file?: string | undefined;
  overrides?: Record<string, unknown>;
}): ConfigResult<ServerConfig> {
  return loadConfig(serverConfigSchema, serverEnv, sources);
}
