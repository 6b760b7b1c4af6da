import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { notFound, unauthorized } from '../../../shared/errors.ts';
import type { ServerConfig } from '../../config.ts';
import { errorResponses } from '../../http/errors.ts';
import type { DriftService } from './drift.service.ts';

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/**
 * The operator token (`operatorToken`, env BULWARK_OPERATOR_TOKEN, or the file `operatorTokenFile`):
 * platform-wide operator routes such as node drift. Null: those routes are disabled (404).
 * Deliberately not the metrics token: a scraper must not read every tenant's object names.
 */
export function readOperatorToken(
  config: Pick<ServerConfig, 'operatorToken' | 'operatorTokenFile'>,
): string | null {
  if (config.operatorToken !== undefined) return config.operatorToken;
  if (config.operatorTokenFile === undefined) return null;
  const token = readFileSync(config.operatorTokenFile, 'utf8').trim();
  if (token.length < 32)
    throw new Error(`operator token file ${config.operatorTokenFile}: token shorter than 32 characters`);
  return token;
}

const findingSchema = z.object({
  kind: z.string().max(64),
  object: z.string().max(200),
  detail: z.string().max(1000),
});

/** A drift check's answer (the operator route here, the platform admins' drift-check route). */
export const driftReportSchema = z.object({
  node: z.object({ id: z.uuid(), name: z.string().max(200) }),
  clean: z.boolean(),
  findings: z.array(findingSchema).max(100_000),
});

/** GET /v1/nodes/:id/drift — read-only; the repair is `bulwark doctor --fix` on the server host. */
export function driftRoutes(deps: {
  drift: DriftService;
  token: string | null;
  timeoutMs?: number;
}): FastifyPluginAsyncZod {
  const expected = deps.token === null ? null : digest(deps.token);
  return async (app) => {
    app.get(
      '/v1/nodes/:id/drift',
      {
        // Not an API key route: keys belong to accounts, drift spans every tenant of a node.
        config: { operatorToken: true },
        schema: {
          tags: ['nodes'],
          security: [{ operatorToken: [] }],
          summary: 'Drift between a node and the desired state (operator token)',
          description:
            'Bearer operator token (server config `operatorToken`), not an API key. Queues a ' +
            '`node.drift` job on the node and waits up to 15 s for its findings (503 otherwise).',
          params: z.object({ id: z.uuid() }),
          response: { 200: driftReportSchema, ...errorResponses },
        },
      },
      async (req, reply) => {
        if (expected === null) throw notFound('Route');
        const h = req.headers.authorization;
        const given = typeof h === 'string' && h.startsWith('Bearer ') ? h.slice(7).trim() : '';
        if (!timingSafeEqual(digest(given), expected)) {
          req.log.warn({ reason: given ? 'wrong' : 'missing' }, 'operator token refused');
          reply.header('www-authenticate', 'Bearer realm="operator"');
          throw unauthorized();
        }
        const r = await deps.drift.check(req.params.id, { fix: false, timeoutMs: deps.timeoutMs ?? 15_000 });
        return { node: r.node, clean: r.findings.length === 0, findings: r.findings };
      },
    );
  };
}
