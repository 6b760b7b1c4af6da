import { Readable } from 'node:stream';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { AppError } from '../../../shared/errors.ts';
import { requireCaller } from '../../http/caller.ts';
import { errorResponses } from '../../http/errors.ts';
import { cursorSchema } from '../../http/pagination.ts';
import { plainText } from '../../http/text.schemas.ts';
import type { AuditAdminService } from './audit-admin.service.ts';

const MAX_PAGE = 100;

const eventSchema = z.object({
  id: z.string().max(20),
  seq: z.string().max(20).nullable(),
  chained: z.boolean(),
  occurred_at: z.string().max(40),
  actor_type: z.enum(['user', 'key', 'agent', 'system', 'operator']),
  actor_id: z.string().max(200).nullable(),
  action: z.string().max(100),
  target_type: z.string().max(100).nullable(),
  target_id: z.string().max(200).nullable(),
  account_id: z.string().max(36).nullable(),
  source_ip: z.string().max(100).nullable(),
  outcome: z.enum(['success', 'failure', 'denied']),
  request_id: z.string().max(100).nullable(),
  details: z.record(z.string(), z.unknown()),
});

/** The filters of the listing and the export: each optional, all must hold. */
const eventFilters = z.object({
  action: plainText(100).min(1).optional().describe('Exactly this action, e.g. database.created'),
  actor: plainText(200).min(1).optional().describe("The actor's id (a user, key or node id; or system)"),
  target: plainText(200).min(1).optional().describe("The target's id (e.g. a database id)"),
  outcome: z.enum(['success', 'failure', 'denied']).optional(),
  since: z.iso.datetime({ offset: true }).max(40).optional().describe('From this time (inclusive)'),
  until: z.iso.datetime({ offset: true }).max(40).optional().describe('Before this time (exclusive)'),
});

const checkpointSchema = z.object({
  seq: z.string().max(20),
  hash: z.string().max(64),
  at: z.string().max(64),
  key_id: z.string().max(16),
  signature: z.string().max(200),
});

const publicKeySchema = z.object({
  key_id: z.string().max(16),
  public_key_pem: z.string().max(1000),
  active: z.boolean(),
});

/** Admin-level, account-scoped keys only: the audit log is the account's, not one database's. */
/** An Ed25519 public JWK of the execution-token keys (issue 14). */
const executionJwkSchema = z.object({
  kty: z.literal('OKP'),
  crv: z.literal('Ed25519'),
  x: z.string().max(64),
  kid: z.string().max(64),
  use: z.literal('sig'),
  alg: z.literal('EdDSA'),
});

export function auditRoutes(deps: {
  audit: AuditAdminService;
  /** The execution-token public keys (JWKS) agents pin; absent: none published. */
  executionJwks?: () => { keys: z.infer<typeof executionJwkSchema>[] };
}): FastifyPluginAsyncZod {
  return async (app) => {
    app.get(
      '/v1/audit/events',
      {
        config: { action: 'audit.read' },
        schema: {
          tags: ['audit'],
          summary: "The account's audit events, newest first",
          security: [{ apiKey: [] }],
          querystring: eventFilters.extend({
            limit: z.coerce.number().int().min(1).max(MAX_PAGE).default(50),
            cursor: cursorSchema(100).optional(),
          }),
          response: {
            200: z.object({ items: z.array(eventSchema), next_cursor: z.string().max(100).nullable() }),
            ...errorResponses,
          },
        },
      },
      async (req) => {
        const caller = requireCaller(req);
        return deps.audit.listEvents(caller, req.query);
      },
    );

    app.get(
      '/v1/audit/export',
      {
        config: { action: 'audit.export' },
        schema: {
          tags: ['audit'],
          summary: "Export the account's chained events as JSON Lines (with checkpoints and public keys)",
          description:
            "Takes the listing's filters; a filtered export names them in its header (`filter`), and each " +
            'event in it still verifies on its own.',
          security: [{ apiKey: [] }],
          querystring: eventFilters,
          response: {
            200: {
              description: 'JSON Lines: one event, checkpoint or public key per line',
              content: { 'application/x-ndjson': { schema: z.string().max(2 ** 30) } },
            },
            ...errorResponses,
          },
        },
      },
      async (req, reply) => {
        const caller = requireCaller(req);
        // Recorded (durable) before the first line: no record, no export.
        const lines = await deps.audit.exportAccount(caller, String(req.id), req.query);
        const body = Readable.from(
          (async function* () {
            for await (const line of lines) yield `${line}\n`;
          })(),
        );
        return (
          reply
            .type('application/x-ndjson; charset=utf-8')
            .header('content-disposition', 'attachment; filename="bulwark-audit.jsonl"')
            // A stream bypasses the serializer; the schema above only documents the body type.
            .send(body as unknown as string)
        );
      },
    );

    app.get(
      '/v1/audit/verify',
      {
        config: { action: 'audit.read' },
        schema: {
          tags: ['audit'],
          summary: 'Verify the whole (global) chain and its signed checkpoints: ok or the first broken seq',
          description:
            'The chain is global to the platform, so the answer is only ok/broken with the seq; ' +
            'operators get the details with `bulwark audit verify` on the server host.',
          security: [{ apiKey: [] }],
          response: {
            200: z.object({
              ok: z.boolean(),
              head_seq: z.string().max(20),
              pending: z.number().int(),
              broken_at_seq: z.string().max(20).nullable(),
              checked_at: z.string().max(40),
            }),
            ...errorResponses,
          },
        },
      },
      async () => {
        const r = await deps.audit.verify();
        return {
          ok: r.ok,
          head_seq: String(r.head_seq),
          pending: r.pending,
          broken_at_seq: r.failure ? String(r.failure.seq) : null,
          checked_at: new Date().toISOString(),
        };
      },
    );

    app.post(
      '/v1/audit/checkpoints',
      {
        config: { action: 'audit.checkpoint' },
        schema: {
          tags: ['audit'],
          summary:
            'A signed checkpoint of the current chain head: 201 when signed now, 200 with the existing one when the head has not moved',
          security: [{ apiKey: [] }],
          response: {
            200: z.object({ checkpoint: checkpointSchema.nullable(), created: z.literal(false) }),
            201: z.object({ checkpoint: checkpointSchema, created: z.literal(true) }),
            ...errorResponses,
          },
        },
      },
      async (req, reply) => {
        const caller = requireCaller(req);
        const out = await deps.audit.checkpoint(caller, String(req.id)).catch((err: unknown) => {
          const retry = err instanceof AppError ? err.details?.retry_after_s : undefined;
          if (typeof retry === 'number') reply.header('retry-after', retry);
          throw err;
        });
        if (!out) return { checkpoint: null, created: false as const };
        const cp = out.checkpoint;
        const body = { seq: cp.seq, hash: cp.hash, at: cp.at, key_id: cp.keyId, signature: cp.signature };
        if (out.created) return reply.status(201).send({ checkpoint: body, created: true as const });
        return { checkpoint: body, created: false as const };
      },
    );

    app.get(
      '/v1/public-key',
      {
        config: { public: true },
        schema: {
          tags: ['audit'],
          summary:
            'The Ed25519 public keys that verify checkpoints (active first, then retired), and the execution-token JWKS',
          description:
            '`keys`: the audit checkpoint keys. `execution_jwks`: the public keys (JWKS, `kid` = RFC 7638 ' +
            'thumbprint) that verify the execution tokens of governed requests — the active key, and retired ' +
            'ones until their last token expired. Agents pin these.',
          response: {
            200: z.object({
              keys: z.array(publicKeySchema),
              execution_jwks: z.object({ keys: z.array(executionJwkSchema).max(50) }),
            }),
            ...errorResponses,
          },
        },
      },
      async () => ({
        keys: deps.audit
          .publicKeys()
          .map((k) => ({ key_id: k.keyId, public_key_pem: k.publicKeyPem, active: k.active })),
        execution_jwks: deps.executionJwks?.() ?? { keys: [] },
      }),
    );
  };
}
