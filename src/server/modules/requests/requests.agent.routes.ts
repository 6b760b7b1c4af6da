import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { requireAgent } from '../../http/auth.ts';
import { errorResponses } from '../../http/errors.ts';

const b64url = (n: number) => z.string().regex(new RegExp(`^[A-Za-z0-9_-]{${n}}$`));
const jwk = z.object({
  kty: z.literal('OKP'),
  crv: z.literal('Ed25519'),
  x: b64url(43),
  kid: b64url(43),
  use: z.literal('sig'),
  alg: z.literal('EdDSA'),
});
const endorsement = z.object({ kid: b64url(43), x: b64url(43), by: b64url(43), sig: b64url(86) });

export type ExecutionKeysSource = {
  jwks(): { keys: z.infer<typeof jwk>[] };
  endorsements(): z.infer<typeof endorsement>[];
};

/**
 * The execution-token keys for agents (issue 14; the agent pins them: src/agent/execution/
 * execution-keys.ts): the public keys in use, and each rotation's endorsement of its new key by the
 * old one, so an agent pins a new key only through a chain from a key it already trusts.
 */
export function requestsAgentRoutes(deps: { keys: () => ExecutionKeysSource }): FastifyPluginAsyncZod {
  return async (app) => {
    app.get(
      '/v1/agent/execution-keys',
      {
        config: { agentToken: true },
        schema: {
          tags: ['agent'],
          security: [{ agentToken: [] }],
          summary:
            'The execution-token public keys (JWKS) and their rotation endorsements, with this node id',
          response: {
            200: z.object({
              node_id: z.uuid(),
              keys: z.array(jwk).max(16),
              endorsements: z.array(endorsement).max(256),
            }),
            ...errorResponses,
          },
        },
      },
      async (req, reply) => {
        const agent = requireAgent(req);
        const ring = deps.keys();
        reply.header('cache-control', 'no-store');
        return {
          node_id: agent.nodeId,
          keys: ring.jwks().keys,
          endorsements: ring.endorsements().slice(-256),
        };
      },
    );
  };
}
