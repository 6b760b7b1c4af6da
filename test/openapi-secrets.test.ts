import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createTestServer, type TestServer } from './helpers/server.ts';

let s: TestServer;
before(async () => {
  s = await createTestServer();
});
after(() => s.stop());

/** Property names that must never leave the server, unless explicitly allowed below. */
const SECRET_NAME = /hash|secret|passw|token|private|^key$|credential_value/i;

/** `METHOD path status property`: the only places a secret may appear (each shown once, by design). */
const ALLOWED = new Set([
  'post /v1/keys 201 key', // the new API key, on its creation response only
  'post /v1/agent/enroll 200 agent_token', // the agent's token, on enrollment only
  'post /v1/nodes/enrollments 201 token', // a new node's one-time enrollment token, to the platform admin who asked
  'post /v1/databases/{name}/credentials/reveal 200 password', // explicit, audited reveal
  'post /v1/databases 201 password', // a create that waited with `reveal`: checked and audited as a reveal
  // Just-in-time credentials: the temporary login's password, once, to whoever executed the access request.
  'post /v1/databases/{name}/requests/{id}/execute 200 password',
  'post /v1/agent/jobs/{id}/secret 200 password', // a job's secret, to the agent holding its lease
  'post /v1/audit/checkpoints 200 hash', // the audit chain head: a public digest, not a secret
  'post /v1/audit/checkpoints 201 hash', // the same, signed by this call
  'get /v1/auth/oidc/callback 200 access_token', // a new session's tokens, to the browser that signed in at the IdP
  'get /v1/auth/oidc/callback 200 refresh_token',
  'post /v1/auth/login 200 access_token', // a new session's tokens, to whoever proved the password
  'post /v1/auth/login 200 refresh_token',
  'post /v1/me/totp 200 secret', // the TOTP secret, shown once to the user enrolling it
  'post /v1/auth/refresh 200 access_token', // a session's next tokens, to the holder of its refresh token
  'post /v1/auth/refresh 200 refresh_token',
  // The dashboard's CSRF token: bound to the caller's own session, given to its own page (by cookie).
  'post /v1/auth/login 200 csrf_token',
  'post /v1/auth/refresh 200 csrf_token',
  'post /v1/auth/invites/redeem 201 csrf_token',
  'get /v1/me 200 csrf_token',
  // A webhook's signing secret, once, on creation and on rotation (docs/api.md "Webhooks").
  'post /v1/webhooks 201 secret',
  'post /v1/webhooks/{id}/rotate-secret 200 secret',
  // About a webhook's secret, not the secret: its last 4 characters, when it was rotated, when the
  // previous one stops signing.
  ...[
    'post /v1/webhooks 201',
    'get /v1/webhooks 200',
    'get /v1/webhooks/{id} 200',
    'patch /v1/webhooks/{id} 200',
    'post /v1/webhooks/{id}/rotate-secret 200',
  ].flatMap((at) =>
    ['secret_hint', 'secret_rotated_at', 'previous_secret_expires_at'].map((p) => `${at} ${p}`),
  ),
]);

/** Numbers, booleans and containers cannot carry a secret themselves (containers are walked). */
const NOT_A_VALUE = new Set(['integer', 'number', 'boolean', 'object', 'array', 'null']);

type Schema = {
  $ref?: string;
  type?: string | string[];
  properties?: Record<string, Schema>;
  items?: Schema | Schema[];
  additionalProperties?: Schema | boolean;
  anyOf?: Schema[];
  oneOf?: Schema[];
  allOf?: Schema[];
  prefixItems?: Schema[];
};

function walk(
  schema: Schema | undefined,
  doc: { components?: { schemas?: Record<string, Schema> } },
  visit: (name: string, path: string, schema: Schema) => void,
  path = '',
  seen = new Set<Schema>(),
): void {
  if (!schema || typeof schema !== 'object' || seen.has(schema)) return;
  seen.add(schema);
  if (schema.$ref) {
    const name = schema.$ref.replace('#/components/schemas/', '');
    walk(doc.components?.schemas?.[name], doc, visit, path, seen);
  }
  for (const [name, sub] of Object.entries(schema.properties ?? {})) {
    visit(name, `${path}.${name}`, sub);
    walk(sub, doc, visit, `${path}.${name}`, seen);
  }
  const subs = [
    ...(Array.isArray(schema.items) ? schema.items : schema.items ? [schema.items] : []),
    ...(typeof schema.additionalProperties === 'object' ? [schema.additionalProperties] : []),
    ...(schema.anyOf ?? []),
    ...(schema.oneOf ?? []),
    ...(schema.allOf ?? []),
    ...(schema.prefixItems ?? []),
  ];
  for (const sub of subs) walk(sub, doc, visit, path, seen);
}

test('no response schema of any route names a hash, secret, password or token (except the allowlist)', async () => {
  const doc = (await s.app.inject({ url: '/v1/openapi.json' })).json() as {
    paths: Record<
      string,
      Record<string, { responses?: Record<string, { content?: Record<string, { schema: Schema }> }> }>
    >;
    components?: { schemas?: Record<string, Schema> };
  };
  const offending: string[] = [];
  let walked = 0;
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      for (const [status, res] of Object.entries(op.responses ?? {})) {
        for (const media of Object.values(res.content ?? {})) {
          walk(media.schema, doc, (name, at, schema) => {
            walked++;
            const types = Array.isArray(schema.type) ? schema.type : schema.type ? [schema.type] : [];
            const carriesValue = types.length === 0 || types.some((t) => !NOT_A_VALUE.has(t));
            if (
              carriesValue &&
              SECRET_NAME.test(name) &&
              !ALLOWED.has(`${method} ${path} ${status} ${name}`)
            ) {
              offending.push(`${method.toUpperCase()} ${path} ${status} ${at}`);
            }
          });
        }
      }
    }
  }
  assert.ok(walked > 50, `walked ${walked} properties`);
  assert.deepEqual(offending, []);
  // The walker does find what it looks for (so the test can fail).
  const found: string[] = [];
  walk({ properties: { a: { items: { properties: { key_hash: { type: 'string' } } } } } }, {}, (n) =>
    found.push(n),
  );
  assert.ok(found.includes('key_hash'));
});
