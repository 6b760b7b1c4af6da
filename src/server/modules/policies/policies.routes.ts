import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { requireCaller } from '../../http/caller.ts';
import { errorResponses, errorResponsesWith } from '../../http/errors.ts';
import {
  applyPolicyBody,
  policySchema,
  policyVersionsQuery,
  policyVersionsSchema,
} from './policies.schemas.ts';
import type { PoliciesService } from './policies.service.ts';

const tags = ['policy'];

/** The account's governance policy as code: read it, apply a new version, list the versions. */
export function policyRoutes(deps: { policies: PoliciesService }): FastifyPluginAsyncZod {
  const svc = deps.policies;
  return async (app) => {
    app.get(
      '/v1/policy',
      {
        config: { action: 'policy.read' },
        schema: {
          tags,
          summary:
            'The active governance policy: the file as applied and its validated rules (version 0: none; the built-in rules decide). A database-scoped caller sees only its databases’ part, without the file.',
          response: { 200: policySchema, ...errorResponses },
        },
      },
      async (req) => svc.current(requireCaller(req)),
    );

    app.put(
      '/v1/policy',
      {
        config: { action: 'policy.write' },
        // A 256 KiB file, JSON-escaped.
        bodyLimit: 2 * 1024 * 1024,
        schema: {
          tags,
          summary:
            'Apply a governance policy file (YAML) as the next version (owners, admins, admin keys of the whole account; signed-in users need step-up). A file that does not validate is a 400 policy_invalid with details.errors [{line, column, field, message}]; nothing is stored.',
          body: applyPolicyBody,
          response: {
            200: policySchema,
            ...errorResponsesWith('policy_invalid', 'reauth_required'),
          },
        },
      },
      async (req) => svc.apply(requireCaller(req), req.body.source, String(req.id)),
    );

    app.get(
      '/v1/policy/versions',
      {
        config: { action: 'policy.read' },
        schema: {
          tags,
          summary: 'Applied policy versions, newest first (at most 100 per call; `before` pages back)',
          querystring: policyVersionsQuery,
          response: { 200: policyVersionsSchema, ...errorResponses },
        },
      },
      async (req) => ({
        items: await svc.versions(requireCaller(req), { limit: req.query.limit, before: req.query.before }),
      }),
    );
  };
}
