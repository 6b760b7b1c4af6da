import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, test } from 'node:test';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import fc from 'fast-check';
import { withTx } from '../src/server/db/pool.ts';
import { createLocalUser } from '../src/server/modules/people/users.service.ts';
import { enrollFakeAgent, type FakeAgent } from './helpers/databases.ts';
import { invalidFrom, type JsonSchema, validFrom } from './helpers/json-schema-arbitrary.ts';
import { createTestKey } from './helpers/keys.ts';
import {
  type OpenApiDoc,
  type Operation,
  operationsOf,
  type Sent,
  send,
  sourceAddress,
} from './helpers/openapi-client.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

// Property-based fuzz of every operation of /v1/openapi.json against a listening server on a real
// control database, under the real rate limits: valid and invalid requests are generated from the
// document's own schemas, and every answer must be one the document declares (status, content
// type, body schema). A schema-valid request refused as invalid means the document is looser than
// the server; an invalid one accepted means it is stricter. Seeded (BULWARK_FUZZ_SEED), bounded in
// requests (BULWARK_FUZZ_RUNS per operation and kind) and in time.

const SEED = Number(process.env.BULWARK_FUZZ_SEED ?? 19_2026);
const RUNS = Number(process.env.BULWARK_FUZZ_RUNS ?? 14);
const CONCURRENCY = 6;
const BUDGET_MS = 150_000;
const REQUEST_TIMEOUT_MS = 15_000;
const OPERATOR_TOKEN = 'fuzz-operator-token-0123456789abcdef0123';
const NODE = 'fuzz_node';

let s: TestServer;
let base: URL;
const adminKeys: string[] = [];
let agentToken: string;
/** Signed-in users' access tokens (userSession routes); logout has its own, since it ends them. */
const userTokens: string[] = [];
const logoutTokens: string[] = [];
let fakeAgent: FakeAgent;
let doc: OpenApiDoc;

before(async () => {
  s = await createTestServer({
    // The real limits (the defaults), not the test server's generous ones.
    rateLimitKeyPerMinute: 1200,
    rateLimitIpPerMinute: 300,
    rateLimitAuthFailuresPerMinute: 20,
    operatorToken: OPERATOR_TOKEN,
    agentPollMaxMs: 100,
    logLevel: 'error',
  });
  base = new URL(await s.app.listen({ host: '127.0.0.1', port: 0 }));
  // Several admin keys of one account, taken in turn: each key has its own budget (1,200 a minute).
  for (let i = 0; i < 4; i++)
    adminKeys.push((await createTestKey(s, { account: 'fuzz', explorer: true })).key);
  const password = 'fuzz user password 0123';
  // A platform admin and the owner of the keys' account: the policy lets it reach every userSession
  // operation (platform-wide ones and people-only ones of an account, e.g. the Slack settings), so
  // the inputs decide.
  const fuzzUser = await withTx(s.db.pool, (tx) =>
    createLocalUser(tx, { username: 'fuzz-user', password, platformAdmin: true }),
  );
  const account = await s.db.pool.query<{ id: string }>('SELECT id FROM accounts WHERE name = $1', ['fuzz']);
  await s.db.pool.query("INSERT INTO memberships (account_id, user_id, role) VALUES ($1, $2, 'owner')", [
    account.rows[0]!.id,
    fuzzUser.id,
  ]);
  for (let i = 0; i < 24; i++) {
    const body = JSON.stringify({ username: 'fuzz-user', password });
    const headers = { 'content-type': 'application/json' };
    const r = await send(
      base,
      { method: 'POST', path: '/v1/auth/login', headers, body },
      '127.0.0.1',
      10_000,
    );
    assert.equal(r.status, 200, r.body);
    (i < 4 ? userTokens : logoutTokens).push(JSON.parse(r.body).access_token);
  }
  fakeAgent = await enrollFakeAgent(s, NODE);
  agentToken = fakeAgent.token;
  const res = await send(base, { method: 'GET', path: '/v1/openapi.json', headers: {} }, '127.0.0.1', 10_000);
  assert.equal(res.status, 200);
  doc = JSON.parse(res.body) as OpenApiDoc;
});
after(() => s.stop());

const ajv = new Ajv2020({ strict: false, allErrors: false, validateFormats: true });
addFormats.default(ajv);
/** Parameters travel as text: judged as the server reads them (a number parameter from its digits). */
const ajvText = new Ajv2020({ strict: false, allErrors: false, validateFormats: true, coerceTypes: true });
addFormats.default(ajvText);
const compiled = new Map<JsonSchema, ReturnType<typeof ajv.compile>>();
function validator(schema: JsonSchema) {
  let v = compiled.get(schema);
  if (!v) {
    v = ajv.compile(schema);
    compiled.set(schema, v);
  }
  return v;
}
const accepts = (schema: JsonSchema, value: unknown) => validator(schema)(value) === true;
const acceptsText = (schema: JsonSchema, value: Record<string, unknown>) =>
  ajvText.validate(
    schema,
    Object.fromEntries(Object.entries(value).map(([k, v]) => [k, v === undefined ? v : String(v)])),
  ) === true;

/** Objects the fuzz itself created (destructive operations act on these, never on anything else). */
const pools = {
  databases: [] as string[],
  keys: [] as string[],
  jobs: [] as number[],
  /** Each list's cursors, by path: a cursor belongs to the list that gave it. */
  cursors: new Map<string, string[]>(),
};

type Input = {
  path: Record<string, unknown>;
  query: Record<string, unknown>;
  headers: Record<string, unknown>;
  body?: unknown;
};
type Kind = 'valid' | 'invalid' | 'no-credentials' | 'bad-json' | 'wrong-content-type' | 'long-param';
type Case = { kind: Kind; input: Input };

/**
 * What JSON Schema cannot say, stated by the operation's summary: the rules a valid request must
 * also follow. Each is a relation between two parts of the same request.
 */
const RELATIONS: Record<string, (i: Input) => void> = {
  // "Delete a database (repeat its name in `confirm`)"
  'DELETE /v1/databases/{name}': (i) => {
    (i.body as Record<string, unknown>).confirm = i.path.name;
  },
  // "Reject …" an attached database: repeat its name in `confirm`, as for a delete.
  'POST /v1/databases/{name}/attachment/reject': (i) => {
    (i.body as Record<string, unknown>).confirm = i.path.name;
  },
  // Not a rule: half of the databases go on the node the fuzz enrolled (an unknown node is a 404).
  // "`reveal` needs `wait_ms`" (its description); and not a rule: a wait the fuzz can afford (no
  // agent completes its creates, so every wait runs to its end).
  'POST /v1/databases': (i) => {
    const b = i.body as { name: string; node?: string; wait_ms?: number; reveal?: boolean };
    if (b.node !== undefined && b.name.charCodeAt(0) % 2 === 0) b.node = NODE;
    if (b.wait_ms !== undefined) b.wait_ms = Math.min(b.wait_ms, 200);
    if (b.reveal === true) b.wait_ms = Math.max(1, Math.min(b.wait_ms ?? 1, 200));
  },
  // "reserved slots must be fewer than max_connections" (the description of `connections`)
  'POST /v1/agent/heartbeat': (i) => {
    const c = (i.body as { connections?: Record<string, number> }).connections;
    if (!c?.max_connections) return;
    c.superuser_reserved_connections = Math.min(c.superuser_reserved_connections ?? 0, c.max_connections - 1);
    c.reserved_connections = Math.min(
      c.reserved_connections ?? 0,
      c.max_connections - 1 - c.superuser_reserved_connections,
    );
  },
};

/** A header value HTTP can carry (a client cannot send the others). */
function sendableHeader(v: unknown): boolean {
  if (typeof v !== 'string') return false;
  try {
    http.validateHeaderValue('x', v);
    return true;
  } catch {
    return false;
  }
}

/** A path parameter drawn sometimes from the objects the fuzz created, so deletes and reads find them. */
function pathArbitrary(op: Operation): fc.Arbitrary<Record<string, unknown>> {
  const props = op.pathSchema.properties ?? {};
  const rec: Record<string, fc.Arbitrary<unknown>> = {};
  for (const [name, schema] of Object.entries(props)) {
    const own = validFrom(schema);
    const pool =
      name === 'name'
        ? pools.databases
        : name === 'id' && op.path.startsWith('/v1/keys')
          ? pools.keys
          : name === 'id' && op.path.includes('/jobs/')
            ? pools.jobs
            : [];
    const usable = pool.filter((v) => accepts(schema, v));
    rec[name] = usable.length > 0 ? fc.oneof(own, fc.constantFrom(...usable)) : own;
  }
  return fc.record(rec) as fc.Arbitrary<Record<string, unknown>>;
}

/** A query parameter described as opaque (a cursor) is never invented: omitted, or one the server gave. */
function queryArbitrary(op: Operation): fc.Arbitrary<Record<string, unknown>> {
  const s: JsonSchema = { ...op.querySchema, properties: { ...op.querySchema.properties } };
  for (const [name, p] of Object.entries(s.properties ?? {})) {
    if (/^opaque/i.test(p.description ?? '')) {
      if (s.properties) delete s.properties[name];
      const given = pools.cursors.get(op.path) ?? [];
      if (given.length > 0)
        return fc
          .tuple(
            validFrom(s) as fc.Arbitrary<Record<string, unknown>>,
            fc.option(fc.constantFrom(...given), { nil: undefined }),
          )
          .map(([q, c]) => (c === undefined ? q : { ...q, [name]: c }));
    }
  }
  return validFrom(s) as fc.Arbitrary<Record<string, unknown>>;
}

function casesFor(op: Operation, seed: number): Case[] {
  const valid = fc.record({
    path: pathArbitrary(op),
    query: queryArbitrary(op),
    headers: validFrom(op.headerSchema) as fc.Arbitrary<Record<string, unknown>>,
    ...(op.bodySchema ? { body: validFrom(op.bodySchema) } : {}),
  }) as fc.Arbitrary<Input>;
  // Valid: kept only when the document indeed accepts it (the generator is a helper, Ajv the judge).
  const out: Case[] = fc
    .sample(valid, { seed, numRuns: RUNS })
    .map((input) => {
      RELATIONS[`${op.method} ${op.path}`]?.(input);
      return { kind: 'valid' as const, input };
    })
    .filter(({ input }) => {
      const ok =
        acceptsText(op.pathSchema, input.path) &&
        acceptsText(op.querySchema, input.query) &&
        (op.bodySchema === null || accepts(op.bodySchema, input.body));
      if (!ok) generatorMisses++;
      return ok;
    });

  // Invalid: one part broken, the others valid; kept only when the document indeed refuses it.
  const parts: [keyof Input, JsonSchema | null][] = [
    ['path', op.pathSchema],
    ['query', op.querySchema],
    ['headers', op.headerSchema],
    ['body', op.bodySchema],
  ];
  type Breakable = { part: keyof Input; schema: JsonSchema; bad: fc.Arbitrary<unknown> };
  const breakable = parts.flatMap(([part, schema]): Breakable[] => {
    if (!schema) return [];
    if (part === 'body') {
      const bad = invalidFrom(schema);
      return bad ? [{ part, schema, bad }] : [];
    }
    // Parameters: one parameter's value broken (a request may carry other query parameters).
    const props = schema.properties ?? {};
    const bads = Object.entries(props).flatMap(([name, p]) => {
      const bad = invalidFrom(p, 1);
      return bad ? [bad.map((v) => ({ [name]: v }))] : [];
    });
    if (bads.length === 0) return [];
    const valid =
      part === 'path'
        ? pathArbitrary(op)
        : part === 'query'
          ? queryArbitrary(op)
          : (validFrom(schema) as fc.Arbitrary<Record<string, unknown>>);
    const bad = fc.tuple(valid, fc.oneof(...bads)).map(([v, b]) => ({ ...v, ...b }));
    return [{ part, schema, bad }];
  });
  if (breakable.length > 0) {
    const invalid = fc.tuple(valid, fc.oneof(...breakable.map((b) => b.bad.map((v) => ({ ...b, v })))));
    for (const [input, b] of fc.sample(invalid, { seed: seed + 1, numRuns: RUNS })) {
      if (b.part === 'path' && Object.values(b.v as object).some((v) => typeof v !== 'string' || v === ''))
        continue; // a path segment is always a non-empty string
      if (b.part === 'query' && Object.values(b.v as object).some((v) => typeof v === 'object' && v !== null))
        continue; // a query string cannot carry an object
      if (b.part === 'headers' && !Object.values(b.v as object).every(sendableHeader)) continue;
      if (b.part === 'body' ? accepts(b.schema, b.v) : acceptsText(b.schema, b.v as Record<string, unknown>))
        continue;
      out.push({ kind: 'invalid', input: { ...input, [b.part]: b.v } });
    }
  }
  const first = out[0]?.input;
  if (first) {
    if (op.schemes.length > 0) out.push({ kind: 'no-credentials', input: first });
    if (op.bodySchema) {
      out.push({ kind: 'bad-json', input: first }, { kind: 'wrong-content-type', input: first });
    }
    if (Object.keys(op.pathSchema.properties ?? {}).length > 0)
      out.push({ kind: 'long-param', input: first });
  }
  return out;
}

function credentials(op: Operation, n: number): Record<string, string> {
  if (op.schemes.includes('agentToken')) return { authorization: `Bearer ${agentToken}` };
  if (op.schemes.includes('operatorToken')) return { authorization: `Bearer ${OPERATOR_TOKEN}` };
  if (op.schemes.includes('apiKey')) return { authorization: `Bearer ${adminKeys[n % adminKeys.length]}` };
  if (op.schemes.includes('userSession')) {
    const tokens = op.path === '/v1/auth/logout' ? logoutTokens : userTokens;
    return { authorization: `Bearer ${tokens[n % tokens.length]}` };
  }
  return {};
}

function request(op: Operation, c: Case, n: number) {
  const { input } = c;
  let path = op.path.replace(/\{([^}]+)\}/g, (_m, name: string) =>
    c.kind === 'long-param' ? 'a'.repeat(201) : encodeURIComponent(String(input.path[name])),
  );
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(input.query)) if (v !== undefined) q.append(k, String(v));
  if ([...q].length > 0) path += `?${q}`;
  const headers: Record<string, string> = c.kind === 'no-credentials' ? {} : credentials(op, n);
  for (const [k, v] of Object.entries(input.headers)) if (typeof v === 'string') headers[k] = v;
  let body: string | undefined;
  if (op.bodySchema) {
    headers['content-type'] = c.kind === 'wrong-content-type' ? 'application/xml' : 'application/json';
    body = c.kind === 'bad-json' ? '{"unterminated": ' : JSON.stringify(input.body ?? {});
  }
  return { method: op.method, path, headers, body };
}

/** Valid inputs the generator made that the document refuses (dropped; a high count is a generator gap). */
let generatorMisses = 0;

type Finding = { op: string; kind: Kind; request: string; status: number; problem: string };

/** The answer against the document: declared status, content type and body. */
function judge(op: Operation, c: Case, res: Sent): string | null {
  const declared = op.op.responses?.[String(res.status)];
  if (res.status >= 500) return 'server error';
  if (typeof res.headers['x-request-id'] !== 'string') return 'no X-Request-Id header';
  if (!declared)
    return `status ${res.status} not declared (${Object.keys(op.op.responses ?? {}).join(', ')})`;
  const type = res.contentType.split(';')[0]!.trim().toLowerCase();
  const content = declared.content ?? {};
  if (Object.keys(content).length > 0 && !(type in content))
    return `content type ${type || '(none)'} not declared (${Object.keys(content).join(', ')})`;
  const schema = content[type]?.schema;
  if (schema && type === 'application/json') {
    let parsed: unknown;
    try {
      parsed = JSON.parse(res.body);
    } catch {
      return 'body is not JSON';
    }
    const v = validator(schema);
    if (!v(parsed)) return `body does not match its schema: ${ajv.errorsText(v.errors)}`;
  }
  const code =
    res.status >= 400 ? (JSON.parse(res.body) as { error?: { code?: string } }).error?.code : undefined;
  switch (c.kind) {
    case 'valid':
      // A schema-valid request may be refused for what only the data can say (no such object, not
      // ready yet, a rule on stored state), never as malformed: that would mean the document is too loose.
      if (res.status === 400 && (code === 'validation_failed' || code === 'bad_request'))
        return `schema-valid input refused: ${res.body.slice(0, 300)}`;
      return null;
    case 'invalid':
      return res.status === 400 || res.status === 414 ? null : `invalid input answered ${res.status}`;
    case 'no-credentials':
      return res.status === 401 ? null : `no credentials answered ${res.status}`;
    case 'bad-json':
      return res.status === 400 && code === 'bad_request'
        ? null
        : `malformed JSON answered ${res.status} ${code}`;
    case 'wrong-content-type':
      return res.status === 415 ? null : `an application/xml body answered ${res.status}`;
    case 'long-param':
      return res.status === 414 ? null : `a 201-character path parameter answered ${res.status}`;
  }
}

/** Harvests what the fuzz created, for the operations that come after. */
function harvest(op: Operation, res: Sent) {
  if (res.status >= 300 || !res.contentType.startsWith('application/json')) return;
  const body = JSON.parse(res.body) as Record<string, unknown>;
  if (op.method === 'POST' && op.path === '/v1/databases' && typeof body.name === 'string')
    pools.databases.push(body.name);
  if (op.method === 'POST' && op.path === '/v1/keys' && typeof body.id === 'string') pools.keys.push(body.id);
  const job = body.job as { id?: unknown } | null | undefined;
  if (op.path === '/v1/agent/poll' && typeof job?.id === 'number') pools.jobs.push(job.id);
  if (typeof body.next_cursor === 'string')
    pools.cursors.set(op.path, [...(pools.cursors.get(op.path) ?? []), body.next_cursor]);
}

/**
 * Creators first; then the explorer, while the new databases are still provisioning (on a ready one
 * a query waits for an agent this fuzz does not run); then the databases are made ready (the fake
 * agent completes their jobs) and the rest runs; deletes last (they act on what was created).
 */
const CREATORS = ['POST /v1/databases', 'POST /v1/keys'];
const rank = (op: Operation) =>
  CREATORS.includes(`${op.method} ${op.path}`)
    ? 0
    : op.path.includes('/explorer/') && !op.path.startsWith('/v1/agent/')
      ? 1
      : op.method === 'DELETE'
        ? 3
        : 2;

/** The fake agent completes every queued job with a well-formed result (databases become ready). */
async function settle(): Promise<number> {
  let done = 0;
  for (let i = 0; i < 100; i++) {
    const job = await fakeAgent.poll();
    if (!job) break;
    if ((await fakeAgent.complete(job.id, job.attempt, {})) === 200) done++;
  }
  return done;
}

test('every operation of the OpenAPI document answers only what the document declares', {
  timeout: 170_000,
}, async (t) => {
  const started = Date.now();
  t.diagnostic(`seed ${SEED} (BULWARK_FUZZ_SEED), ${RUNS} runs per operation and kind (BULWARK_FUZZ_RUNS)`);
  const ops = operationsOf(doc).sort((a, b) => rank(a) - rank(b));
  assert.ok(ops.length >= 30, `only ${ops.length} operations in the document`);
  const findings: Finding[] = [];
  /** What each operation answered, by kind of request (printed with BULWARK_FUZZ_VERBOSE=1). */
  const statuses = new Map<string, Record<number, number>>();
  let sent = 0;
  let settled = -1;
  for (const [index, op] of ops.entries()) {
    if (rank(op) >= 2 && settled < 0) settled = await settle();
    const cases = casesFor(op, SEED + index * 7);
    for (let i = 0; i < cases.length; i += CONCURRENCY) {
      await Promise.all(
        cases.slice(i, i + CONCURRENCY).map(async (c) => {
          const n = sent++;
          const req = request(op, c, n);
          let res: Sent;
          try {
            res = await send(base, req, sourceAddress(n), REQUEST_TIMEOUT_MS);
          } catch (err) {
            // A schema-valid header HTTP cannot carry: the document allows what no client can send.
            if ((err as NodeJS.ErrnoException).code !== 'ERR_INVALID_CHAR') throw err;
            const problem = `unsendable header: ${(err as Error).message}`;
            findings.push({
              op: `${op.method} ${op.path}`,
              kind: c.kind,
              request: req.path,
              status: 0,
              problem,
            });
            return;
          }
          const problem = judge(op, c, res);
          const tally = `${op.method} ${op.path} [${c.kind}]`;
          statuses.set(tally, {
            ...statuses.get(tally),
            [res.status]: (statuses.get(tally)?.[res.status] ?? 0) + 1,
          });
          if (problem)
            findings.push({
              op: `${op.method} ${op.path}`,
              kind: c.kind,
              request: `${req.method} ${req.path} ${req.body?.slice(0, 200) ?? ''}`,
              status: res.status,
              problem,
            });
          else harvest(op, res);
        }),
      );
    }
    // Bounded in time: the document has grown to well over a hundred operations, and CI runs this
    // beside three other test files on two cores.
    assert.ok(Date.now() - started < BUDGET_MS, `over ${BUDGET_MS / 1000} s after ${sent} requests`);
  }
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  t.diagnostic(
    `${ops.length} operations, ${sent} requests, ${seconds} s; created ${pools.databases.length} databases (${settled} jobs completed), ${pools.keys.length} keys; ${generatorMisses} generated inputs the document refuses (dropped)`,
  );
  if (process.env.BULWARK_FUZZ_VERBOSE)
    for (const [k, v] of statuses) if (k.endsWith('[valid]')) t.diagnostic(`${k} ${JSON.stringify(v)}`);
  // One line per kind of disagreement, with its count and the first request that showed it.
  const groups = new Map<string, { n: number; first: Finding }>();
  for (const f of findings) {
    const key = `${f.op} [${f.kind}] ${f.status}: ${f.problem.replace(/"request_id":"[^"]*"/, '').slice(0, 160)}`;
    const g = groups.get(key) ?? { n: 0, first: f };
    g.n++;
    groups.set(key, g);
  }
  const shown = [...groups].slice(0, 60).map(([k, g]) => `${g.n}× ${k}\n    ${g.first.request}`);
  assert.equal(findings.length, 0, `${findings.length} disagreements (seed ${SEED}):\n${shown.join('\n')}`);
  assert.ok(
    pools.databases.length > 0 && pools.keys.length > 0,
    'the fuzz created nothing: its valid inputs are all refused',
  );
});
