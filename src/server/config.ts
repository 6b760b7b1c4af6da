import { z } from 'zod';
import { parseCidr } from '../shared/cidr.ts';
import { type ConfigResult, type EnvBinding, loadConfig } from '../shared/config-loader.ts';
import { parseTrustedProxies } from './http/proxy-check.ts';
import {
  checkOidcSettings,
  OIDC_URL_RULE,
  parseOidcRoleMapping,
  secureOrLoopback,
} from './modules/oidc/oidc.config.ts';
import { isAllowedEntry } from './modules/webhooks/ssrf.ts';

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
      .union([z.boolean(), z.string().max(1024)])
      // true/false, or addresses/CIDRs in our strict, canonical spellings (proxy-addr alone would
      // read 010.0.0.5 as 8.0.0.5).
      .transform((v, ctx) => {
        if (typeof v === 'boolean' || v === 'true' || v === 'false') return v === true || v === 'true';
        try {
          return parseTrustedProxies(v);
        } catch (err) {
          ctx.addIssue({ code: 'custom', message: (err as Error).message });
          return z.NEVER;
        }
      })
      .default(false),
    /**
     * Usernames kept suspended whatever the API does (comma-separated in the environment, a list in
     * a config file): suspended at every start, and their reactivation refused.
     */
    suspendedUsers: z
      .union([z.array(z.string().max(100)).max(1000), z.string().max(20_000)])
      .transform((v) =>
        (typeof v === 'string' ? v.split(',') : v)
          .map((u) => u.trim().normalize('NFKC').toLowerCase())
          .filter(Boolean),
      )
      .pipe(z.array(z.string().regex(/^[a-z][a-z0-9._-]{1,62}$/, { message: 'not a username' })).max(1000))
      .default([]),
    bodyLimitBytes: z.coerce
      .number()
      .int()
      .min(1024)
      .max(64 * 1024 * 1024)
      .default(1024 * 1024),
    dbPoolMax: z.coerce.number().int().min(1).max(200).default(20),
    agentPollMaxMs: z.coerce.number().int().min(100).max(120_000).default(25_000),
    jobLeaseMs: z.coerce.number().int().min(1_000).max(3_600_000).default(120_000),
    /** How long database size/connection samples are kept (older ones are pruned). */
    sampleRetentionDays: z.coerce.number().int().min(1).max(90).default(7),
    /** Backups (issue 15): the daily backup's time (HH:MM UTC), unless an account or database sets its own. */
    backupScheduleTime: z
      .string()
      .regex(/^([01][0-9]|2[0-3]):[0-5][0-9]$/, 'must be HH:MM (UTC)')
      .default('02:00'),
    /** How long a backup is kept (days), unless an account or database sets its own. */
    backupRetentionDays: z.coerce.number().int().min(1).max(3650).default(30),
    /** A database whose last good backup is older than this (hours) raises `backup.stale`. */
    backupRpoHours: z.coerce.number().int().min(1).max(8760).default(26),
    /** Restore drills: each database's latest backup is restored into a scratch database this often (days). */
    backupDrillIntervalDays: z.coerce.number().int().min(1).max(365).default(7),
    /**
     * How long a backup download waits for the backup's agent to start sending the archive (ms);
     * the agent sends it, this server decrypts it on the fly (ADR 0023). Past it: 503.
     */
    backupDownloadWaitMs: z.coerce.number().int().min(1_000).max(600_000).default(30_000),
    /** A download with no byte moved for this long (ms; a client that stopped reading) is cut (ADR 0023). */
    backupDownloadIdleMs: z.coerce.number().int().min(1_000).max(600_000).default(30_000),
    /** A download lasting longer than this (ms) is cut. */
    backupDownloadMaxMs: z.coerce.number().int().min(10_000).max(86_400_000).default(1_800_000),
    /** Backup downloads one account may have open at once in one server process; past it: 429. */
    backupDownloadsPerAccount: z.coerce.number().int().min(1).max(100).default(2),
    /** Explorer queries in flight in one server process (each result up to 10 MB); past it: 503. */
    explorerMaxInFlight: z.coerce.number().int().min(1).max(1_024).default(32),
    enrollmentTtlMinutes: z.coerce
      .number()
      .int()
      .min(1)
      .max(7 * 24 * 60)
      .default(60),
    /** A node whose heartbeat is older than this is marked unhealthy (alert `node.unhealthy`). */
    nodeUnhealthyAfterSeconds: z.coerce.number().int().min(3).max(86_400).default(60),
    /** A move step its node has not taken up (or whose lease lapsed) for this long fails the move (ADR 0031). */
    moveStartTimeoutMinutes: z.coerce.number().int().min(1).max(1_440).default(15),
    /** A move step not finished this long after it was queued fails the move (ADR 0031). */
    moveStepTimeoutMinutes: z.coerce
      .number()
      .int()
      .min(5)
      .max(7 * 24 * 60)
      .default(360),
    /** Signed-in users' access tokens (JWT): `iss` and `aud` written and required, and their lifetime. */
    sessionIssuer: z
      .string()
      .regex(/^[A-Za-z0-9._:/-]{1,100}$/)
      .default('bulwark'),
    sessionAudience: z
      .string()
      .regex(/^[A-Za-z0-9._:/-]{1,100}$/)
      .default('bulwark-api'),
    sessionAccessTokenMinutes: z.coerce.number().int().min(1).max(60).default(15),
    /** A session (its refresh-token family) ends this long after sign-in, whatever its use. */
    sessionRefreshTokenDays: z.coerce.number().int().min(1).max(90).default(30),
    /** Keyring file (0600) sealing tenant database passwords at rest; see `bulwark master-key`. */
    masterKeyFile: z.string().min(1).max(4096).optional(),
    /** Allowlist of a new database (CIDRs). The embedded default is loopback only. */
    defaultAllowlist: z
      .array(
        z
          .string()
          .max(64)
          .refine((v) => {
            try {
              parseCidr(v);
              return true;
            } catch {
              return false;
            }
          }, 'must be an IPv4 or IPv6 CIDR'),
      )
      .max(100)
      .default(['127.0.0.1/32', '::1/128']),
    /**
     * Connections of each node kept for the platform (agent admin pool, stewards, explorer pools,
     * the control database's pools, PgBouncer probes): never promised to tenants. A node's tenant
     * budget = max_connections − superuser/reserved slots − this.
     */
    nodeConnectionReserve: z.coerce.number().int().min(0).max(100_000).default(100),
    /**
     * Databases the control plane keeps made and ready on each node, owned by no account, that a
     * create with the default settings takes in its own transaction (ADR 0037): at most the node's
     * warm pool size as its agent reports it (a node with its warm pool off gets none). 0: off.
     */
    reservedDatabases: z.coerce.number().int().min(0).max(20).default(2),
    /** The max_connections assumed for a node whose agent has not reported its own yet. */
    nodeAssumedMaxConnections: z.coerce.number().int().min(1).max(262_143).default(300),
    /** Host clients use to reach PgBouncer (what goes into connection strings). */
    poolerPublicHost: z.string().min(1).max(255).default('127.0.0.1'),
    poolerPort: z.coerce.number().int().min(1).max(65535).default(6432),
    /**
     * The sslmode put into connection strings. PgBouncer always serves TLS (the agent makes a
     * self-signed certificate when none is given; TLS is required beyond loopback, offered on
     * it), so `require` works everywhere; `verify-full` once clients trust the certificate.
     */
    poolerSslmode: z.enum(['disable', 'prefer', 'require', 'verify-ca', 'verify-full']).default('require'),
    /** Rate limits (fixed one-minute windows): per API key, per IP without a key, failed auths per IP. */
    rateLimitKeyPerMinute: z.coerce.number().int().min(1).max(10_000_000).default(1200),
    rateLimitIpPerMinute: z.coerce.number().int().min(1).max(10_000_000).default(300),
    rateLimitAuthFailuresPerMinute: z.coerce.number().int().min(1).max(10_000_000).default(20),
    /** Shared rate-limit counters for several replicas (redis:// or rediss://); in-memory without. */
    redisUrl: z
      .string()
      .max(4096)
      .refine((v) => /^rediss?:\/\//.test(v), 'must be a redis:// or rediss:// URL')
      .optional(),
    /** Audit: sign the chain head this often (seconds), when it moved. */
    auditCheckpointIntervalSeconds: z.coerce.number().int().min(5).max(86_400).default(600),
    /** Audit: also append each signed checkpoint as a JSON line to this file (ideally off-box). */
    auditCheckpointFile: z.string().min(1).max(4096).optional(),
    /** Audit: events older than this are pruned (a signed anchor keeps verification whole). */
    auditRetentionDays: z.coerce.number().int().min(1).max(36_500).default(365),
    /** Bearer token for /metrics (32+ chars); without one (or the file) /metrics is disabled (404). */
    metricsToken: z.string().min(32).max(512).optional(),
    metricsTokenFile: z.string().min(1).max(4096).optional(),
    /** Bearer token of operator routes (GET /v1/nodes/:id/drift); without one they are disabled (404). */
    operatorToken: z.string().min(32).max(512).optional(),
    operatorTokenFile: z.string().min(1).max(4096).optional(),
    /** OIDC sign-in (see modules/oidc): the IdP's issuer URL; without it OIDC routes answer 404. */
    oidcIssuer: z.url().max(500).refine(secureOrLoopback, OIDC_URL_RULE).optional(),
    oidcClientId: z.string().min(1).max(255).optional(),
    oidcClientSecret: z.string().min(8).max(1024).optional(),
    /** The callback registered at the IdP; default: publicUrl + /v1/auth/oidc/callback. */
    oidcRedirectUrl: z.url().max(2048).refine(secureOrLoopback, OIDC_URL_RULE).optional(),
    /** Scopes requested; `openid` always. email/profile only with oidcStoreProfile. */
    oidcScopes: z
      .array(z.string().regex(/^[\x21\x23-\x5B\x5D-\x7E]{1,100}$/, 'must be a scope token'))
      .max(20)
      .default(['openid']),
    /** The ID token claim whose values are mapped to roles (a string or an array of strings). */
    oidcRoleClaim: z
      .string()
      .regex(/^[A-Za-z0-9_.:/-]{1,100}$/)
      .default('groups'),
    /** `claim value=account:role` entries: a new identity with that value becomes a member. */
    oidcRoleMap: z.array(z.string().max(400).transform(parseOidcRoleMapping)).max(100).default([]),
    /** Opt in to requesting and storing the identity's email and name (not by default). */
    oidcStoreProfile: z
      .union([z.boolean(), z.enum(['true', 'false'])])
      .transform((v) => v === true || v === 'true')
      .default(false),
    /** The sign-in button's text for OIDC (GET /v1/auth/providers); default: the dashboard's own. */
    oidcLabel: z
      .string()
      .min(1)
      .max(60)
      .regex(/^[^\x00-\x1f\x7f]+$/, 'must be printable text')
      .optional(),
    /** Slack's Web API base URL (chat.postMessage…); an operator setting (tests point it at a local receiver). */
    slackApiUrl: z.url().max(2048).refine(secureOrLoopback, OIDC_URL_RULE).default('https://slack.com/api'),
    /** The built dashboard (index.html, assets/); default: web/dist of this installation. */
    dashboardDir: z.string().min(1).max(4096).optional(),
    /**
     * Webhooks (issue 18): destinations allowed despite the SSRF rules — host names (exact) or
     * CIDRs (comma-separated in the environment); an allowed destination may use any port.
     */
    webhookAllowedHosts: z
      .array(z.string().max(300).refine(isAllowedEntry, 'must be a host name, an IP address or a CIDR'))
      .max(100)
      .default([]),
    /** Ports a webhook URL may use (unless its destination is allowed above). */
    webhookAllowedPorts: z
      .array(z.coerce.number().int().min(1).max(65535))
      .min(1)
      .max(100)
      .default([80, 443, 8080, 8443]),
    /** One delivery attempt's deadline (connect, send, answer). */
    webhookTimeoutMs: z.coerce.number().int().min(100).max(60_000).default(5_000),
    /** Attempts of a delivery before it is dead. */
    webhookMaxAttempts: z.coerce.number().int().min(1).max(50).default(8),
    /** Retries: a random wait up to min(max, base·2^(attempt-1)) (exponential backoff, full jitter). */
    webhookRetryBaseMs: z.coerce.number().int().min(10).max(3_600_000).default(60_000),
    webhookRetryMaxMs: z.coerce.number().int().min(10).max(86_400_000).default(21_600_000),
    /** A webhook whose deliveries all failed for this long is disabled (audited `webhook.disabled`). */
    webhookDisableAfterSeconds: z.coerce
      .number()
      .int()
      .min(1)
      .max(90 * 86_400)
      .default(3 * 86_400),
    webhookMaxPerAccount: z.coerce.number().int().min(1).max(1_000).default(25),
    /** The dispatcher's and worker's safety poll (NOTIFY and in-process wake-ups are the fast path). */
    webhookPollMs: z.coerce.number().int().min(50).max(60_000).default(1_000),
    /** Deliveries in flight in one server process. */
    webhookConcurrency: z.coerce.number().int().min(1).max(256).default(32),
    /**
     * Deliveries of one account in flight in one server process (the rest of the concurrency stays
     * free for other accounts; ADR 0032). At least one event's burst to 20 webhooks.
     */
    webhookConcurrencyPerAccount: z.coerce.number().int().min(1).max(256).default(20),
    /** Deliveries waiting per webhook past which a test or redelivery is refused (429). */
    webhookPendingPerWebhook: z.coerce.number().int().min(1).max(10_000).default(20),
    /** Finished deliveries (succeeded or dead) older than this are deleted from the delivery log. */
    webhookDeliveryRetentionDays: z.coerce.number().int().min(1).max(3_650).default(30),
  })
  .strict()
  .superRefine(checkOidcSettings);

export type ServerConfig = z.infer<typeof serverConfigSchema>;

export const serverEnv: Record<string, EnvBinding> = {
  host: { env: 'BULWARK_HOST' },
  port: { env: 'BULWARK_PORT' },
  publicUrl: { env: 'BULWARK_PUBLIC_URL' },
  databaseUrl: { env: 'BULWARK_DATABASE_URL', secret: true },
  dataDir: { env: 'BULWARK_SERVER_DATA_DIR' },
  logLevel: { env: 'BULWARK_LOG_LEVEL' },
  trustProxy: { env: 'BULWARK_TRUST_PROXY' },
  suspendedUsers: { env: 'BULWARK_SUSPENDED_USERS' },
  bodyLimitBytes: { env: 'BULWARK_BODY_LIMIT_BYTES' },
  dbPoolMax: { env: 'BULWARK_DB_POOL_MAX' },
  agentPollMaxMs: { env: 'BULWARK_AGENT_POLL_MAX_MS' },
  jobLeaseMs: { env: 'BULWARK_JOB_LEASE_MS' },
  sampleRetentionDays: { env: 'BULWARK_SAMPLE_RETENTION_DAYS' },
  explorerMaxInFlight: { env: 'BULWARK_EXPLORER_MAX_IN_FLIGHT' },
  backupScheduleTime: { env: 'BULWARK_BACKUP_SCHEDULE_TIME' },
  backupRetentionDays: { env: 'BULWARK_BACKUP_RETENTION_DAYS' },
  backupRpoHours: { env: 'BULWARK_BACKUP_RPO_HOURS' },
  backupDrillIntervalDays: { env: 'BULWARK_BACKUP_DRILL_INTERVAL_DAYS' },
  backupDownloadWaitMs: { env: 'BULWARK_BACKUP_DOWNLOAD_WAIT_MS' },
  backupDownloadIdleMs: { env: 'BULWARK_BACKUP_DOWNLOAD_IDLE_MS' },
  backupDownloadMaxMs: { env: 'BULWARK_BACKUP_DOWNLOAD_MAX_MS' },
  backupDownloadsPerAccount: { env: 'BULWARK_BACKUP_DOWNLOADS_PER_ACCOUNT' },
  enrollmentTtlMinutes: { env: 'BULWARK_ENROLLMENT_TTL_MINUTES' },
  nodeUnhealthyAfterSeconds: { env: 'BULWARK_NODE_UNHEALTHY_AFTER_SECONDS' },
  moveStartTimeoutMinutes: { env: 'BULWARK_MOVE_START_TIMEOUT_MINUTES' },
  moveStepTimeoutMinutes: { env: 'BULWARK_MOVE_STEP_TIMEOUT_MINUTES' },
  sessionIssuer: { env: 'BULWARK_SESSION_ISSUER' },
  sessionAudience: { env: 'BULWARK_SESSION_AUDIENCE' },
  sessionAccessTokenMinutes: { env: 'BULWARK_SESSION_ACCESS_TOKEN_MINUTES' },
  sessionRefreshTokenDays: { env: 'BULWARK_SESSION_REFRESH_TOKEN_DAYS' },
  rateLimitKeyPerMinute: { env: 'BULWARK_RATE_LIMIT_KEY_PER_MINUTE' },
  rateLimitIpPerMinute: { env: 'BULWARK_RATE_LIMIT_IP_PER_MINUTE' },
  rateLimitAuthFailuresPerMinute: { env: 'BULWARK_RATE_LIMIT_AUTH_FAILURES_PER_MINUTE' },
  redisUrl: { env: 'BULWARK_REDIS_URL', secret: true },
  masterKeyFile: { env: 'BULWARK_MASTER_KEY_FILE' },
  defaultAllowlist: { env: 'BULWARK_DEFAULT_ALLOWLIST', list: true },
  nodeConnectionReserve: { env: 'BULWARK_NODE_CONNECTION_RESERVE' },
  reservedDatabases: { env: 'BULWARK_RESERVED_DATABASES' },
  nodeAssumedMaxConnections: { env: 'BULWARK_NODE_ASSUMED_MAX_CONNECTIONS' },
  poolerPublicHost: { env: 'BULWARK_POOLER_PUBLIC_HOST' },
  poolerPort: { env: 'BULWARK_POOLER_PORT' },
  poolerSslmode: { env: 'BULWARK_POOLER_SSLMODE' },
  auditCheckpointIntervalSeconds: { env: 'BULWARK_AUDIT_CHECKPOINT_INTERVAL_SECONDS' },
  auditCheckpointFile: { env: 'BULWARK_AUDIT_CHECKPOINT_FILE' },
  auditRetentionDays: { env: 'BULWARK_AUDIT_RETENTION_DAYS' },
  metricsToken: { env: 'BULWARK_METRICS_TOKEN', secret: true },
  operatorToken: { env: 'BULWARK_OPERATOR_TOKEN', secret: true },
  oidcIssuer: { env: 'BULWARK_OIDC_ISSUER' },
  oidcClientId: { env: 'BULWARK_OIDC_CLIENT_ID' },
  oidcClientSecret: { env: 'BULWARK_OIDC_CLIENT_SECRET', secret: true },
  oidcRedirectUrl: { env: 'BULWARK_OIDC_REDIRECT_URL' },
  oidcScopes: { env: 'BULWARK_OIDC_SCOPES', list: true },
  oidcRoleClaim: { env: 'BULWARK_OIDC_ROLE_CLAIM' },
  oidcRoleMap: { env: 'BULWARK_OIDC_ROLE_MAP', list: true },
  oidcStoreProfile: { env: 'BULWARK_OIDC_STORE_PROFILE' },
  oidcLabel: { env: 'BULWARK_OIDC_LABEL' },
  dashboardDir: { env: 'BULWARK_DASHBOARD_DIR' },
  webhookAllowedHosts: { env: 'BULWARK_WEBHOOK_ALLOWED_HOSTS', list: true },
  webhookAllowedPorts: { env: 'BULWARK_WEBHOOK_ALLOWED_PORTS', list: true },
  webhookTimeoutMs: { env: 'BULWARK_WEBHOOK_TIMEOUT_MS' },
  webhookMaxAttempts: { env: 'BULWARK_WEBHOOK_MAX_ATTEMPTS' },
  webhookRetryBaseMs: { env: 'BULWARK_WEBHOOK_RETRY_BASE_MS' },
  webhookRetryMaxMs: { env: 'BULWARK_WEBHOOK_RETRY_MAX_MS' },
  webhookDisableAfterSeconds: { env: 'BULWARK_WEBHOOK_DISABLE_AFTER_SECONDS' },
  webhookMaxPerAccount: { env: 'BULWARK_WEBHOOK_MAX_PER_ACCOUNT' },
  webhookPollMs: { env: 'BULWARK_WEBHOOK_POLL_MS' },
  webhookConcurrency: { env: 'BULWARK_WEBHOOK_CONCURRENCY' },
  webhookConcurrencyPerAccount: { env: 'BULWARK_WEBHOOK_CONCURRENCY_PER_ACCOUNT' },
  webhookPendingPerWebhook: { env: 'BULWARK_WEBHOOK_PENDING_PER_WEBHOOK' },
  webhookDeliveryRetentionDays: { env: 'BULWARK_WEBHOOK_DELIVERY_RETENTION_DAYS' },
  slackApiUrl: { env: 'BULWARK_SLACK_API_URL' },
};

export function loadServerConfig(sources: {
  env: NodeJS.ProcessEnv;
  file?: string | undefined;
  overrides?: Record<string, unknown>;
}): ConfigResult<ServerConfig> {
  return loadConfig(serverConfigSchema, serverEnv, sources);
}
