import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { generateToken } from '../shared/api-key.ts';
import { BACKUP_JOB_KINDS } from '../shared/contracts/backups.ts';
import { createLogger } from '../shared/logger.ts';
import { createExplorerValidator, loadExplorerParser } from '../shared/sql/explorer-validator.ts';
import { VERSION } from '../shared/version.ts';
import { buildApp } from './app.ts';
import type { ServerConfig } from './config.ts';
import { createExecutionKeyRing, type ExecutionKeyRing } from './crypto/execution-key-ring.ts';
import { createKeyringFileBox } from './crypto/keyring-box.ts';
import { loadKeyringFile } from './crypto/secret-box.ts';
import { migrate } from './db/migrate.ts';
import { createPgListener } from './db/pg-listener.ts';
import { createPool, type Db } from './db/pool.ts';
import { createCsrf } from './http/csrf.ts';
import { createRedisRateLimitStore } from './http/rate-limit-redis.ts';
import { type AuditService, createAuditService } from './modules/audit/audit.service.ts';
import { createAuditStack } from './modules/audit/audit.stack.ts';
import { createBackupDownloads } from './modules/backups/backups.download.ts';
import { createBackupJobs } from './modules/backups/backups.jobs.ts';
import { registerBackupCollectors } from './modules/backups/backups.metrics.ts';
import { createDownloadRelay } from './modules/backups/backups.relay.ts';
import { createBackupScheduler } from './modules/backups/backups.scheduler.ts';
import { createBackupsService, minuteOf } from './modules/backups/backups.service.ts';
import { createRestoresService } from './modules/backups/restores.service.ts';
import { createAttachedService } from './modules/databases/databases.attached.ts';
import { createAllowlistExpiry } from './modules/databases/databases.expiry.ts';
import { createDatabaseJobs, DATABASE_STATUS_CHANNEL } from './modules/databases/databases.jobs.ts';
import { createReserveKeeper, type ReserveKeeper } from './modules/databases/databases.reserves.ts';
import { createSamplesService } from './modules/databases/databases.samples.ts';
import { createDatabasesService, type DatabasesService } from './modules/databases/databases.service.ts';
import { readOperatorToken } from './modules/drift/drift.routes.ts';
import { createDriftService, driftJobFinished } from './modules/drift/drift.service.ts';
import { createExplorerChannels, type ExplorerChannels } from './modules/explorer/explorer.channel.ts';
import { createExplorerService, type ExplorerService } from './modules/explorer/explorer.service.ts';
import { takeInvite } from './modules/invites/invites.repo.ts';
import { createInvitesService } from './modules/invites/invites.service.ts';
import { createJobHooks } from './modules/jobs/job-hooks.ts';
import { createJobNotifier } from './modules/jobs/job-notifier.ts';
import { createJobsService } from './modules/jobs/jobs.service.ts';
import { createKeyAuthenticator, type KeyAuthenticator } from './modules/keys/keys.authenticator.ts';
import { createKeysService, type KeysService } from './modules/keys/keys.service.ts';
import { registerCoreCollectors } from './modules/metrics/collectors.ts';
import { readMetricsToken } from './modules/metrics/metrics-token.ts';
import { createMetricsRegistry } from './modules/metrics/registry.ts';
import { createServerMetrics } from './modules/metrics/server-metrics.ts';
import { createNodesAdmin } from './modules/nodes/nodes.admin.ts';
import { createNodesFleet } from './modules/nodes/nodes.fleet.ts';
import { createNodesHealth, type NodesHealth } from './modules/nodes/nodes.health.ts';
import { createMoves } from './modules/nodes/nodes.move.ts';
import { createNodesService, type NodesService } from './modules/nodes/nodes.service.ts';
import { installSecret } from './modules/oidc/install-secret.ts';
import { createOidcService } from './modules/oidc/oidc.service.ts';
import { createLoginThrottle, usernameKeyFrom } from './modules/people/login-throttle.ts';
import { createPasswordGate } from './modules/people/password-gate.ts';
import { createReauth } from './modules/people/reauth.ts';
import { createLocalUser, createUsersService } from './modules/people/users.service.ts';
import { createPoliciesService } from './modules/policies/policies.service.ts';
import { createAccessExpiry } from './modules/requests/access.expiry.ts';
import { type AccessService, createAccessService } from './modules/requests/access.service.ts';
import { createDispatch } from './modules/requests/requests.dispatch.ts';
import { createOutcomeApplier } from './modules/requests/requests.outcome.ts';
import { activePolicyOf } from './modules/requests/requests.policy.ts';
import { createResultStore } from './modules/requests/requests.results.ts';
import { createRequestsService, type RequestsService } from './modules/requests/requests.service.ts';
import { createRequestSweeper } from './modules/requests/requests.sweeper.ts';
import { createSessionAuthenticator, type SessionAuthenticator } from './modules/sessions/session-auth.ts';
import { createSessionTokens } from './modules/sessions/session-tokens.ts';
import { createSessionsService, type SessionsService } from './modules/sessions/sessions.service.ts';
import { createStepUp } from './modules/sessions/step-up.ts';
import { createSlackInteractions } from './modules/slack/slack.interactions.ts';
import { createSlackOutbox, type SlackOutbox } from './modules/slack/slack.outbox.ts';
import { createSlackService } from './modules/slack/slack.service.ts';
import { createUsersAdminService } from './modules/users-admin/users-admin.service.ts';
import type { Resolver } from './modules/webhooks/ssrf.ts';
import { createWebhooksStack, type WebhooksStack } from './modules/webhooks/webhooks.stack.ts';

/** The dashboard this installation builds (scripts/build-web.ts), unless dashboardDir says otherwise. */
const DEFAULT_DASHBOARD_DIR = fileURLToPath(new URL('../../web/dist', import.meta.url));

export type ServerContext = {
  app: FastifyInstance;
  nodes: NodesService;
  databases: DatabasesService;
  /** API key authentication (the hot path: cache, revocation listener, usage). */
  keyAuth: KeyAuthenticator;
  /** API key management (create, revoke, the idle-key sweeper). */
  keys: KeysService;
  /** Signed-in users' sessions: issue (sign-in), refresh, logout, suspension. */
  sessions: SessionsService;
  /** Access-token authentication (the session cache, evicted by the shared listener). */
  sessionAuth: SessionAuthenticator;
  /** This process's audit writer (tests record events with it). */
  audit: AuditService;
  explorer: ExplorerService;
  /** Agents' explorer channels held by this process (tests, benches). */
  explorerChannels: ExplorerChannels;
  /** Governed requests (tests drive the expiry sweeper and read the key ring through it). */
  requests: RequestsService;
  requestSweeper: ReturnType<typeof createRequestSweeper>;
  /** Reserved databases per node (ADR 0037; tests drive a pass). */
  reserveKeeper: ReserveKeeper;
  /** Enrollment expiry and node health (tests drive a sweep). */
  nodesHealth: NodesHealth;
  /** Slack's message outbox (tests wait for it to drain). */
  slackOutbox: SlackOutbox;
  /** Just-in-time credentials (tests grant and sweep through it). */
  access: AccessService;
  /** Webhooks: the service, the dispatcher and the delivery worker (tests flush them). */
  webhooks: WebhooksStack;
  /** The execution-token key ring (in the data dir; made at its first use). */
  executionKeys: () => ExecutionKeyRing;
  /** Stops background work (listeners, long-polls) and closes the app; the pool is the caller's. */
  close(): Promise<void>;
};

/**
 * The one wiring point of the server: every service is built here from the config and
 * the control DB pool, and handed to the app. Tests use it with a throwaway database.
 */
export async function createServerContext(opts: {
  config: ServerConfig;
  db: Db;
  log: Logger;
  poolerPort?: number | null;
  /** Webhook destinations' DNS answers (tests); default: dns.lookup. */
  webhookResolver?: Resolver;
}): Promise<ServerContext> {
  const { config, db, log } = opts;
  const stopping = new AbortController();
  // One LISTEN connection per process, shared by the job wake-ups and key revocations.
  const listener = createPgListener(config.databaseUrl, log, 'server-listen');
  const notifier = createJobNotifier(listener, log);
  // Wakes requests that wait for a database's status (a create with `wait_ms`).
  const databaseStatus = createJobNotifier(listener, log, DATABASE_STATUS_CHANNEL);
  // The audit writer of this process: every module that records gets it from here.
  const audit = createAuditService({ db });
  const keyAuth = createKeyAuthenticator({ db, log, audit, databaseUrl: config.databaseUrl, listener });
  const metrics = createServerMetrics(createMetricsRegistry());
  registerCoreCollectors(metrics.registry, db);
  const metricsToken = readMetricsToken(config);
  // Audit events redact SQL with the explorer's parser (WASM, loaded once).
  await loadExplorerParser();
  // Tenant database passwords are sealed with the master keyring (followed across rotations).
  const box = config.masterKeyFile ? createKeyringFileBox(config.masterKeyFile) : null;
  if (!box) log.warn('no master key file (BULWARK_MASTER_KEY_FILE): database routes answer 503');
  // Access tokens are signed with a key sealed by the master keyring, shared through the control DB.
  const sessionTokens = createSessionTokens({
    db,
    box,
    issuer: config.sessionIssuer,
    audience: config.sessionAudience,
    accessTokenTtlSeconds: config.sessionAccessTokenMinutes * 60,
  });
  const sessionAuth = createSessionAuthenticator({ db, log, tokens: sessionTokens, listener });
  const sessions = createSessionsService({
    db,
    log,
    audit,
    tokens: sessionTokens,
    auth: sessionAuth,
    keys: keyAuth,
    refreshTokenTtlDays: config.sessionRefreshTokenDays,
    suspendedUsers: config.suspendedUsers,
  });
  // One bound on this process's argon2 work, shared by sign-in and invite redemption.
  const passwordGate = createPasswordGate();
  // Password sign-in of local users (throttled per username and address), TOTP enrolment.
  const loginThrottle = createLoginThrottle({
    usernameKey: usernameKeyFrom(config.masterKeyFile ? loadKeyringFile(config.masterKeyFile) : null),
  });
  // Step-up re-authentication ("sudo mode"): the password or a TOTP code again, under the sign-in
  // throttle, opens a 5-minute window on the session; minting keys and invites, starting TOTP
  // enrolment and revealing a password need it when the caller is a signed-in user.
  const reauth = createReauth({ db, log, audit, box, throttle: loginThrottle, gate: passwordGate });
  const stepUp = createStepUp({ db, reauth, audit });
  const keys = createKeysService({ db, log, audit, authenticator: keyAuth, stepUp: stepUp.require });
  const users = createUsersService({
    passwordGate,
    db,
    log,
    audit,
    box,
    sessions,
    throttle: loginThrottle,
    stepUp: stepUp.require,
  });
  // OIDC sign-in (its routes answer 404 unless an issuer is configured); sessions as for a login.
  const oidc = createOidcService({ db, log, box, config, audit, sessions, invites: { take: takeInvite } });
  // The dashboard's cookie sessions: CSRF tokens keyed by an install secret shared by every replica.
  const csrf = createCsrf({
    key: installSecret({ db, box, name: 'csrf-key' }),
    publicUrl: config.publicUrl,
  });
  if (config.poolerSslmode === 'disable' || config.poolerSslmode === 'prefer')
    log.warn(
      { sslmode: config.poolerSslmode },
      'BULWARK_POOLER_SSLMODE lets clients connect without TLS; PgBouncer always serves TLS, so use require (the default)',
    );
  const jobHooks = createJobHooks();
  // Expired allowlist entries leave the stored rows (and the nodes) at their expiry.
  const allowlistExpiry = createAllowlistExpiry({ db, log, audit });
  // Backups (issue 15): records and keys here, archives on the nodes; a minute clock for the
  // daily backups, drills, retention and freshness alerts.
  const backupDefaults = {
    enabled: true,
    schedule_minute: minuteOf(config.backupScheduleTime),
    retention_days: config.backupRetentionDays,
    rpo_hours: config.backupRpoHours,
    drill_interval_days: config.backupDrillIntervalDays,
  };
  const backups = createBackupsService({ db, box, log, audit, defaults: backupDefaults });
  const restores = createRestoresService({
    db,
    box,
    log,
    audit,
    config,
    defaults: backupDefaults,
    backups,
    stepUp: stepUp.require,
  });
  const backupJobs = createBackupJobs({ db, box, log, audit });
  jobHooks.register('backup.', backupJobs.onJobFinished);
  const backupDownloads = createBackupDownloads({
    db,
    box,
    log,
    linkKey: installSecret({ db, box, name: 'backup-download-key' }),
    // The backup's agent sends the archive; this process decrypts it (ADR 0023).
    relay: createDownloadRelay(),
    connectTimeoutMs: config.backupDownloadWaitMs,
    deadlines: { idleMs: config.backupDownloadIdleMs, maxMs: config.backupDownloadMaxMs },
    perAccount: config.backupDownloadsPerAccount,
    stepUp: stepUp.require,
  });
  // A download job its agent failed (the archive missing there…): its waiting download ends now.
  jobHooks.register(BACKUP_JOB_KINDS.download, backupDownloads.onJobFinished);
  const backupScheduler = createBackupScheduler({ db, box, log, audit, defaults: backupDefaults });
  registerBackupCollectors(metrics.registry, db);
  // Reserved databases (ADR 0037): made ahead per node, taken by a create in its transaction.
  const reserveKeeper = createReserveKeeper({ db, box, config, log, audit });
  const databases = createDatabasesService({
    db,
    box,
    config,
    log,
    audit,
    onReserveTaken: () => reserveKeeper.kick(),
    onJobQueued: (nodeId) => notifier.wake(nodeId),
    onAllowlistChanged: () => allowlistExpiry.poke(),
    // A signed-in user re-authenticates before a reveal (inline, or the session's window).
    stepUp,
    backupFreshness: (id) => backups.freshness(id),
    statusWaiter: databaseStatus,
    stopping: stopping.signal,
  });
  const samples = createSamplesService({
    db,
    log,
    databases,
    retentionDays: config.sampleRetentionDays,
  });
  const attached = createAttachedService({ db, audit, log });
  const databaseJobs = createDatabaseJobs({ db, box, log, audit, wake: (id) => databaseStatus.wake(id) });
  jobHooks.register('database.', databaseJobs.onJobFinished, {
    check: databaseJobs.checkResult,
    committed: databaseJobs.committed,
  });
  // Moves between nodes (ADR 0031): their own secrets and archive keys, and what each step drives.
  const moves = createMoves({
    db,
    box,
    log,
    audit,
    config,
    // A move ends the database's just-in-time logins (they exist only on the source).
    endAccess: (tx, id) => access.revokeForDatabase(tx, id, 'moved'),
  });
  jobHooks.register('database.move_', moves.onJobFinished);
  jobHooks.register('node.', driftJobFinished);
  const drift = createDriftService({ db });
  // Invite-only sign-up: redemption creates the user through the people module.
  const invites = createInvitesService({
    db,
    log,
    audit,
    people: { createLocalUser },
    passwordGate,
    suspendedUsernames: new Set(config.suspendedUsers),
    sessions,
    stepUp: stepUp.require,
  });
  const operatorToken = readOperatorToken(config);
  const auditStack = createAuditStack({ config, db, log, audit });
  const nodes = createNodesService({
    db,
    notifier,
    log,
    audit,
    leaseMs: config.jobLeaseMs,
    generateToken,
    shutdown: stopping.signal,
    hooks: jobHooks,
    metrics,
    // A re-enrolled node's old channel closes at once on this replica (others: at their next ping).
    onTokenReplaced: (nodeId) => explorerChannels.closeNode(nodeId),
  });
  const explorerChannels = createExplorerChannels({ log, tokenCurrent: nodes.tokenCurrent });
  // Issue 17: platform admins' node operations, and the sweep of enrollments and node health.
  const nodesFleet = createNodesFleet({
    db,
    audit,
    generateToken,
    enrollmentTtlMinutes: config.enrollmentTtlMinutes,
    capacity: config,
    onRevoked: (nodeId) => explorerChannels.closeNode(nodeId),
  });
  const nodesHealth = createNodesHealth({
    db,
    log,
    audit,
    unhealthyAfterSeconds: config.nodeUnhealthyAfterSeconds,
    moveDeadlines: {
      startMinutes: config.moveStartTimeoutMinutes,
      stepMinutes: config.moveStepTimeoutMinutes,
    },
  });
  const explorer = createExplorerService({
    db,
    notifier,
    log,
    audit,
    // This process's SQL validator and its verdict cache (the parser was loaded above).
    validator: createExplorerValidator(),
    channels: explorerChannels,
    maxInProcess: config.explorerMaxInFlight,
  });
  jobHooks.register('explorer.', explorer.onJobFinished);
  // Governed requests (issue 14): execution tokens are signed with a key of their own in the data
  // dir (created at its first use, 0600), delivered down the agent channel or as jobs.
  let keyRing: ExecutionKeyRing | null = null;
  const executionKeys = () => {
    keyRing ??= createExecutionKeyRing({ dir: config.dataDir });
    return keyRing;
  };
  const results = createResultStore({ db, box, log });
  const applier = createOutcomeApplier({ audit, results });
  const dispatch = createDispatch({
    db,
    notifier,
    log,
    signer: { sign: (claims) => executionKeys().sign(claims) },
    channels: explorerChannels,
    applier,
    stopping: stopping.signal,
  });
  jobHooks.register('request.', dispatch.onJobFinished);
  // Just-in-time credentials: logins made by the nodes under access tokens, ended at their expiry
  // (the nodes end them on their own clock too), with their request, or with their database.
  const access = createAccessService({
    db,
    log,
    audit,
    signer: { sign: (claims) => executionKeys().sign(claims) },
    config,
    onChanged: () => accessExpiry.poke(),
  });
  const accessExpiry = createAccessExpiry({ access, log });
  jobHooks.register('access.', access.onJobFinished);
  jobHooks.register('database.delete', access.onDatabaseJobFinished);
  // Slack approvals (issue 18): requests queue their messages in their own transaction; the
  // outbox sends them after commit.
  const slack = createSlackService({ db, log, audit, box });
  const slackOutbox = createSlackOutbox({ db, log, listener, apiUrl: config.slackApiUrl, api: slack });
  const requests = createRequestsService({
    db,
    log,
    audit,
    dispatch,
    results,
    stepUp: stepUp.require,
    policyOf: activePolicyOf,
    access,
    onChange: slack.onRequestChange,
  });
  const slackInteractions = createSlackInteractions({ db, log, audit, box, requests });
  const requestSweeper = createRequestSweeper({ db, log, audit, applier });
  // Webhooks (issue 18): committed events (the chained audit log, the event outbox) → deliveries.
  const webhooks = createWebhooksStack({
    config,
    db,
    box,
    log,
    audit,
    chainer: auditStack.chainer,
    listener,
    ...(opts.webhookResolver ? { resolver: opts.webhookResolver } : {}),
  });
  const rateLimitStore = config.redisUrl ? createRedisRateLimitStore(config.redisUrl, log) : undefined;
  try {
    const app = await buildApp({
      rateLimitStore,
      config,
      db,
      log,
      version: VERSION,
      poolerPort: opts.poolerPort ?? null,
      nodes,
      keyAuth,
      keys,
      sessionAuth,
      sessions,
      stepUp,
      users,
      usersAdmin: createUsersAdminService({
        db,
        log,
        audit,
        auth: sessionAuth,
        keys: keyAuth,
        stepUp: stepUp.require,
      }),
      jobs: createJobsService({ db, leaseMs: config.jobLeaseMs }),
      metrics,
      metricsToken,
      audit: auditStack.admin,
      databases,
      samples,
      attached,
      nodesAdmin: createNodesAdmin({ db, drift, audit }),
      nodesFleet,
      invites,
      oidc,
      policies: createPoliciesService({ db, audit, stepUp: stepUp.require }),
      csrf,
      dashboardDir: config.dashboardDir ?? DEFAULT_DASHBOARD_DIR,
      explorer,
      explorerChannels,
      requests,
      executionKeys,
      jobSecret: async (nodeId, jobId, attempt) =>
        (await moves.jobSecret(nodeId, jobId, attempt)) ?? databaseJobs.jobSecret(nodeId, jobId, attempt),
      moves,
      backups,
      restores,
      backupDownloads,
      backupJobs: {
        ...backupJobs,
        backupKey: async (nodeId: string, jobId: number, attempt: number) =>
          (await moves.moveKey(nodeId, jobId, attempt)) ?? backupJobs.backupKey(nodeId, jobId, attempt),
      },
      auditWriter: audit,
      webhooks: webhooks.service,
      slack,
      slackInteractions,
      drift,
      operatorToken,
    });
    void allowlistExpiry.start();
    backupScheduler.start();
    requestSweeper.start();
    webhooks.start();
    nodesHealth.start();
    reserveKeeper.start();
    slackOutbox.start();
    void accessExpiry.start();
    // Users the configuration keeps suspended are suspended again at every start.
    await sessions.applyConfigSuspensions();
    return {
      app,
      nodes,
      databases,
      keyAuth,
      keys,
      sessions,
      sessionAuth,
      audit,
      explorer,
      explorerChannels,
      requests,
      requestSweeper,
      nodesHealth,
      reserveKeeper,
      slackOutbox,
      access,
      executionKeys,
      webhooks,
      async close() {
        stopping.abort();
        await webhooks.close();
        explorer.close();
        results.close();
        await requestSweeper.stop();
        await nodesHealth.stop();
        await slackOutbox.stop();
        await accessExpiry.stop();
        await notifier.close();
        await databaseStatus.close();
        // Graceful, but bounded: requests in flight get a few seconds, then every
        // connection is cut (a client that vanished mid-request must not hold shutdown).
        const force = setTimeout(() => app.server.closeAllConnections(), 3_000);
        await app.close();
        clearTimeout(force);
        await allowlistExpiry.stop();
        await reserveKeeper.stop();
        await backupScheduler.stop();
        await auditStack.close();
        keys.close();
        await keyAuth.close();
        await listener.close();
        await rateLimitStore?.close?.();
      },
    };
  } catch (err) {
    explorer.close();
    results.close();
    await notifier.close();
    await databaseStatus.close();
    keys.close();
    await keyAuth.close();
    await auditStack.close();
    await listener.close();
    await rateLimitStore?.close?.();
    throw err;
  }
}

export type RunningServer = { app: FastifyInstance; db: Db; url: string; close(): Promise<void> };

/** Config in, listening server out: pool, migrations, wiring, listen. */
export async function startServer(
  config: ServerConfig,
  opts: { log?: Logger; poolerPort?: number | null; migrate?: boolean } = {},
): Promise<RunningServer> {
  const log = opts.log ?? createLogger('bulwark-server', config.logLevel);
  const db = createPool(config.databaseUrl, config.dbPoolMax, log);
  try {
    if (opts.migrate !== false) {
      const applied = await migrate(db);
      if (applied.length) log.info({ applied }, 'migrations applied');
    }
    const ctx = await createServerContext({ config, db, log, poolerPort: opts.poolerPort ?? null });
    const url = await ctx.app.listen({ host: config.host, port: config.port });
    return {
      app: ctx.app,
      db,
      url,
      async close() {
        await ctx.close();
        await db.end();
      },
    };
  } catch (err) {
    await db.end().catch(() => {});
    throw err;
  }
}
