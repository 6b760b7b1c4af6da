import { randomUUID } from 'node:crypto';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import websocket from '@fastify/websocket';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import {
  jsonSchemaTransform,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from 'fastify-type-provider-zod';
import type { Logger } from 'pino';
import { EXPLORER_RESULT_MAX_BYTES } from '../shared/contracts/explorer-channel.ts';
import type { ServerConfig } from './config.ts';
import { migrationsAtHead } from './db/migrate.ts';
import type { Db } from './db/pool.ts';
import { registerAuth } from './http/auth.ts';
import type { Csrf } from './http/csrf.ts';
import { createDashboard } from './http/dashboard.ts';
import { frameworkOptions, registerErrorHandling } from './http/errors.ts';
import { createIdempotency } from './http/idempotency.ts';
import { registerProxyCheck } from './http/proxy-check.ts';
import { createMemoryRateLimitStore, createRateLimiter, type RateLimitStore } from './http/rate-limit.ts';
import { registerSecurityHeaders } from './http/security-headers.ts';
import { SECURITY_SCHEMES } from './http/security-schemes.ts';
import { createBrowserSessions } from './http/session-cookies.ts';
import { auditRoutes } from './modules/audit/audit.routes.ts';
import type { AuditService } from './modules/audit/audit.service.ts';
import type { AuditAdminService } from './modules/audit/audit-admin.service.ts';
import { backupAgentRoutes } from './modules/backups/backups.agent.routes.ts';
import type { BackupDownloads } from './modules/backups/backups.download.ts';
import type { BackupJobs } from './modules/backups/backups.jobs.ts';
import { backupRoutes } from './modules/backups/backups.routes.ts';
import type { BackupsService } from './modules/backups/backups.service.ts';
import type { RestoresService } from './modules/backups/restores.service.ts';
import { attachedRoutes } from './modules/databases/databases.attached.routes.ts';
import type { AttachedService } from './modules/databases/databases.attached.ts';
import { databaseRoutes } from './modules/databases/databases.routes.ts';
import { sampleRoutes } from './modules/databases/databases.samples.routes.ts';
import type { SamplesService } from './modules/databases/databases.samples.ts';
import type { DatabasesService } from './modules/databases/databases.service.ts';
import { driftRoutes } from './modules/drift/drift.routes.ts';
import type { DriftService } from './modules/drift/drift.service.ts';
import type { ExplorerChannels } from './modules/explorer/explorer.channel.ts';
import { explorerRoutes } from './modules/explorer/explorer.routes.ts';
import type { ExplorerService } from './modules/explorer/explorer.service.ts';
import { healthRoutes } from './modules/health/health.routes.ts';
import { homePage } from './modules/health/home.page.ts';
import { invitesRoutes } from './modules/invites/invites.routes.ts';
import type { InvitesService } from './modules/invites/invites.service.ts';
import { jobRoutes } from './modules/jobs/jobs.routes.ts';
import type { JobsService } from './modules/jobs/jobs.service.ts';
import type { KeyAuthenticator } from './modules/keys/keys.authenticator.ts';
import { keysRoutes } from './modules/keys/keys.routes.ts';
import type { KeysService } from './modules/keys/keys.service.ts';
import { metricsRoutes } from './modules/metrics/metrics.routes.ts';
import type { ServerMetrics } from './modules/metrics/server-metrics.ts';
import { agentRoutes } from './modules/nodes/agent.routes.ts';
import { nodesAdminRoutes } from './modules/nodes/nodes.admin.routes.ts';
import type { NodesAdmin } from './modules/nodes/nodes.admin.ts';
import type { NodesFleet } from './modules/nodes/nodes.fleet.ts';
import { moveRelayRoutes } from './modules/nodes/nodes.move.relay.ts';
import { moveRoutes } from './modules/nodes/nodes.move.routes.ts';
import type { Moves } from './modules/nodes/nodes.move.ts';
import type { NodesService } from './modules/nodes/nodes.service.ts';
import { oidcRoutes } from './modules/oidc/oidc.routes.ts';
import type { OidcService } from './modules/oidc/oidc.service.ts';
import { peopleRoutes } from './modules/people/people.routes.ts';
import type { UsersService } from './modules/people/users.service.ts';
import { policyRoutes } from './modules/policies/policies.routes.ts';
import type { PoliciesService } from './modules/policies/policies.service.ts';
import { type ExecutionKeysSource, requestsAgentRoutes } from './modules/requests/requests.agent.routes.ts';
import { requestsRoutes } from './modules/requests/requests.routes.ts';
import type { RequestsService } from './modules/requests/requests.service.ts';
import type { SessionAuthenticator } from './modules/sessions/session-auth.ts';
import { sessionsRoutes } from './modules/sessions/sessions.routes.ts';
import type { SessionsService } from './modules/sessions/sessions.service.ts';
import type { StepUp } from './modules/sessions/step-up.ts';
import type { SlackInteractions } from './modules/slack/slack.interactions.ts';
import { slackRoutes } from './modules/slack/slack.routes.ts';
import type { SlackService } from './modules/slack/slack.service.ts';
import { usersAdminRoutes } from './modules/users-admin/users-admin.routes.ts';
import type { UsersAdminService } from './modules/users-admin/users-admin.service.ts';
import { webhooksRoutes } from './modules/webhooks/webhooks.routes.ts';
import type { WebhooksService } from './modules/webhooks/webhooks.service.ts';

export type AppDeps = {
  config: Pick<
    ServerConfig,
    | 'bodyLimitBytes'
    | 'trustProxy'
    | 'agentPollMaxMs'
    | 'publicUrl'
    | 'rateLimitKeyPerMinute'
    | 'rateLimitIpPerMinute'
    | 'rateLimitAuthFailuresPerMinute'
  >;
  db: Db;
  log: Logger;
  version: string;
  poolerPort: number | null;
  nodes: NodesService;
  /** API key authentication of every /v1 route (see http/auth.ts). */
  keyAuth: Pick<KeyAuthenticator, 'authenticate'>;
  /** API key management: the /v1/keys routes. */
  keys: KeysService;
  /** Signed-in users' access tokens, checked by the auth plugin next to API keys. */
  sessionAuth: Pick<SessionAuthenticator, 'authenticate'>;
  /** Sessions: refresh, logout, /v1/me, suspension (/v1/auth/*, /v1/users/*). */
  sessions: SessionsService;
  /** Step-up re-authentication of a session (POST /v1/auth/reauth). */
  stepUp: Pick<StepUp, 'open' | 'require'>;
  /** CSRF tokens and checks of the dashboard's cookie sessions (http/csrf.ts). */
  csrf: Csrf;
  /** The built dashboard served at / (http/dashboard.ts); null: a plain page says how to build it. */
  dashboardDir: string | null;
  /** Password sign-in (POST /v1/auth/login) and the signed-in user's TOTP enrolment (/v1/me/totp). */
  users: UsersService;
  /** The admin API over people: GET /v1/users, GET /v1/users/:id/sessions, DELETE /v1/sessions/:id. */
  usersAdmin: UsersAdminService;
  /** The account's view of the job queue (/v1/jobs). */
  jobs: JobsService;
  /** Counters (auth failures, rate-limit hits…) and the scrape-time registry behind /metrics. */
  metrics: ServerMetrics;
  /** Bearer token of /metrics; null disables it (404). */
  metricsToken: string | null;
  /** Audit log: listing, export, verification, checkpoints, public keys. */
  audit: AuditAdminService;
  databases: DatabasesService;
  /** Size/connection samples: the agents' reports and the charts' data. */
  samples: SamplesService;
  /** Attached databases: each agent's report of what its own config file attaches. */
  attached: AttachedService;
  /** Nodes for signed-in platform admins: health and drift checks. */
  nodesAdmin: NodesAdmin;
  /** Platform admins' node operations: enrollment tokens, cordons, decommission. */
  nodesFleet: NodesFleet;
  /** Invite-only sign-up: /v1/invites and the public redemption. */
  invites: InvitesService;
  /** OIDC sign-in: /v1/auth/oidc/start and /callback (404 when no issuer is configured). */
  oidc: OidcService;
  /** The account's governance policy as code: /v1/policy (issue 14). */
  policies: PoliciesService;
  /** The SQL explorer (queries and schema through the agent; issue 6). */
  explorer: ExplorerService;
  /** Agents' explorer channels held by this replica (the explorer's fast path; ADR 0009). */
  explorerChannels: ExplorerChannels;
  /** Governed SQL requests: approvals, signed execution, results (issue 14). */
  requests: RequestsService;
  /** The execution-token keys: GET /v1/public-key (JWKS) and GET /v1/agent/execution-keys (agents pin them). */
  executionKeys: () => ExecutionKeysSource;
  /** Node drift (operator routes); `operatorToken` null disables them (404). */
  drift: DriftService;
  operatorToken: string | null;
  /** Backups and restores (issue 15): the API, signed downloads, the agents' data keys. */
  backups: BackupsService;
  restores: RestoresService;
  backupDownloads: BackupDownloads;
  backupJobs: Pick<BackupJobs, 'backupKey'>;
  /** Records events nobody else commits (a download link). */
  auditWriter: Pick<AuditService, 'recordNow'>;
  /** Hands a leased job its secret (databases: the owner password for the login probe). */
  jobSecret: (nodeId: string, jobId: number, attempt: number) => Promise<string>;
  /** Moving databases between nodes and draining nodes (ADR 0031). */
  moves: Moves;
  /** Slack approvals (issue 18): the account's Slack app, people's links, Slack's signed requests. */
  slack: SlackService;
  slackInteractions: SlackInteractions;
  /** Signed webhooks (issue 18): subscriptions, secrets, the delivery log. */
  webhooks: WebhooksService;
  /** Shared counters (Redis) when several replicas run; in-memory when absent. */
  rateLimitStore?: RateLimitStore;
};

const REQUEST_ID = /^[A-Za-z0-9._-]{8,64}$/;

export type RouteInfo = { method: string; url: string; hidden: boolean };
const ROUTES = Symbol('bulwark.registeredRoutes');

/** Every route this app registered (tests check each one against the OpenAPI document). */
export function registeredRoutes(app: FastifyInstance): RouteInfo[] {
  return (app as unknown as { [ROUTES]?: RouteInfo[] })[ROUTES] ?? [];
}

/** Builds the fully wired server without listening (tests call `inject()` on it). */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: deps.log as FastifyBaseLogger,
    bodyLimit: deps.config.bodyLimitBytes,
    trustProxy: deps.config.trustProxy,
    requestIdHeader: false,
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
    },
    routerOptions: { maxParamLength: 200 },
    // Every answer Fastify or Node writes itself is in the API's error shape too.
    ...frameworkOptions,
  }).withTypeProvider<ZodTypeProvider>();

  // Kept on the app itself (no module state): read with registeredRoutes(app).
  const routes: RouteInfo[] = [];
  app.decorate(ROUTES, routes);
  app.addHook('onRoute', (r) => {
    const methods = Array.isArray(r.method) ? r.method : [r.method];
    // WebSocket routes are not in OpenAPI (the plugin hides them; docs/api.md describes the channel).
    const hidden =
      Boolean((r.schema as { hide?: boolean } | undefined)?.hide) ||
      r.url.startsWith('/docs') ||
      r.websocket === true;
    for (const m of methods) if (m !== 'HEAD') routes.push({ method: m, url: r.url, hidden });
  });
  // First of all (it intercepts upgrades, and its hooks must run before ours so that a refused
  // upgrade's socket is closed). Only the agent's explorer channel is a WebSocket route; its largest
  // frame is an explorer result. No compression (CPU cost, and length side channels).
  await app.register(websocket, {
    options: { maxPayload: EXPLORER_RESULT_MAX_BYTES, perMessageDeflate: false },
  });
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.addHook('onRequest', async (req, reply) => {
    reply.header('x-request-id', req.id);
  });
  registerSecurityHeaders(app);
  registerProxyCheck(app, { trustProxy: deps.config.trustProxy, log: deps.log });
  // Route pattern (never the raw URL: unbounded label values); unmatched routes count as one.
  app.addHook('onResponse', async (req, reply) => {
    deps.metrics.httpRequests.inc({
      method: req.method,
      route: req.routeOptions.url ?? 'unmatched',
      status: String(reply.statusCode),
    });
  });
  const dashboard = createDashboard({
    dir: deps.dashboardDir,
    fallbackPage: () => homePage({ version: deps.version, poolerPort: deps.poolerPort }),
  });
  registerErrorHandling(app, { pages: dashboard.page });
  const limiter = createRateLimiter(deps.rateLimitStore ?? createMemoryRateLimitStore(), {
    perKey: { limit: deps.config.rateLimitKeyPerMinute, windowMs: 60_000 },
    perIp: { limit: deps.config.rateLimitIpPerMinute, windowMs: 60_000 },
    authFailuresPerIp: { limit: deps.config.rateLimitAuthFailuresPerMinute, windowMs: 60_000 },
  });
  registerAuth(app, {
    keys: deps.keyAuth,
    sessions: deps.sessionAuth,
    nodes: deps.nodes,
    limiter,
    metrics: deps.metrics,
    browser: { csrf: deps.csrf },
  });
  const browser = createBrowserSessions({
    csrf: deps.csrf,
    // A cookie sign-in ends the browser's previous session (named by its refresh cookie).
    endSession: (token, client) => deps.sessions.endByRefreshToken(token, client),
  });
  const withIdempotency = createIdempotency({ db: deps.db });

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Bulwark API',
        version: deps.version,
        description: 'Self-hosted, security-first PostgreSQL',
      },
      ...(deps.config.publicUrl ? { servers: [{ url: deps.config.publicUrl }] } : {}),
      components: { securitySchemes: SECURITY_SCHEMES },
    },
    transform: jsonSchemaTransform,
  });
  await app.register(swaggerUi, {
    routePrefix: '/docs',
    staticCSP: false,
    // Tags start folded and the (empty) models section is off: the first paint of 128 operations
    // is what a reader waits for.
    uiConfig: { docExpansion: 'none', defaultModelsExpandDepth: -1 },
  });
  app.get('/v1/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  await app.register(dashboard.routes);
  await app.register(
    healthRoutes({ version: deps.version, migrationsAtHead: () => migrationsAtHead(deps.db) }),
  );
  await app.register(keysRoutes({ keys: deps.keys, withIdempotency }));
  await app.register(sessionsRoutes({ sessions: deps.sessions, browser, stepUp: deps.stepUp }));
  await app.register(peopleRoutes({ users: deps.users, browser }));
  await app.register(usersAdminRoutes({ usersAdmin: deps.usersAdmin }));
  await app.register(
    agentRoutes({ nodes: deps.nodes, pollMaxMs: deps.config.agentPollMaxMs, jobSecret: deps.jobSecret }),
  );
  await app.register(databaseRoutes({ databases: deps.databases, withIdempotency }));
  await app.register(sampleRoutes({ samples: deps.samples }));
  await app.register(
    attachedRoutes({
      attached: deps.attached,
    }),
  );
  await app.register(
    backupRoutes({
      backups: deps.backups,
      restores: deps.restores,
      downloads: deps.backupDownloads,
      audit: deps.auditWriter,
      withIdempotency,
    }),
  );
  await app.register(
    backupAgentRoutes({ db: deps.db, jobs: deps.backupJobs, downloads: deps.backupDownloads }),
  );
  await app.register(moveRelayRoutes({ db: deps.db, downloads: deps.backupDownloads }));
  await app.register(nodesAdminRoutes({ nodesAdmin: deps.nodesAdmin, fleet: deps.nodesFleet }));
  await app.register(moveRoutes({ moves: deps.moves }));
  await app.register(jobRoutes({ jobs: deps.jobs }));
  await app.register(invitesRoutes({ invites: deps.invites, browser }));
  await app.register(oidcRoutes({ oidc: deps.oidc, browser }));
  await app.register(policyRoutes({ policies: deps.policies }));
  await app.register(explorerRoutes({ explorer: deps.explorer, channels: deps.explorerChannels }));
  await app.register(requestsRoutes({ requests: deps.requests, withIdempotency }));
  await app.register(requestsAgentRoutes({ keys: deps.executionKeys }));
  await app.register(
    slackRoutes({ slack: deps.slack, interactions: deps.slackInteractions, stepUp: deps.stepUp.require }),
  );
  await app.register(webhooksRoutes({ webhooks: deps.webhooks }));
  await app.register(auditRoutes({ audit: deps.audit, executionJwks: () => deps.executionKeys().jwks() }));
  await app.register(metricsRoutes({ metrics: deps.metrics, token: deps.metricsToken }));
  await app.register(driftRoutes({ drift: deps.drift, token: deps.operatorToken }));
  return app;
}
