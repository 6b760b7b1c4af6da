import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';
import type { InjectOptions } from 'fastify';
import { ERROR_CODES, errorStatuses } from '../src/shared/errors.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

let s: TestServer;
before(async () => {
  s = await createTestServer();
});
after(() => s.stop());

type Op = {
  parameters?: { in: string }[];
  requestBody?: unknown;
  security?: Record<string, string[]>[];
  responses?: Record<string, { description?: string; content?: Record<string, unknown> }>;
};
type Doc = {
  paths: Record<string, Record<string, Op>>;
  components: { securitySchemes: Record<string, unknown> };
};

test('every error response in the OpenAPI document comes from the error catalog', async () => {
  const doc = (await s.app.inject({ url: '/v1/openapi.json' })).json() as Doc;
  const seen = new Map<string, string>();
  let checked = 0;
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      for (const [status, res] of Object.entries(op.responses ?? {})) {
        if (Number(status) < 400) continue;
        // The readiness probe answers 503 with its own body (`{status, reason}`), not an error.
        if (path === '/ready') continue;
        checked++;
        const where = `${method.toUpperCase()} ${path} ${status}`;
        const m = /^Error: ([a-z_]+(?:, [a-z_]+)*)$/.exec(res.description ?? '');
        assert.ok(m, `${where}: described "${res.description}", not by its catalog codes`);
        for (const code of m[1]!.split(', ')) {
          assert.ok((ERROR_CODES as string[]).includes(code), `${where}: ${code} is not in the catalog`);
          assert.ok(
            errorStatuses(code as (typeof ERROR_CODES)[number]).includes(Number(status)),
            `${where}: ${code} is not answered with ${status}`,
          );
          seen.set(code, where);
        }
      }
    }
  }
  assert.ok(checked > 100, `checked ${checked} error responses`);
  // The route-specific codes are declared where they are answered.
  const q = doc.paths['/v1/databases/{name}/explorer/query']?.post?.responses ?? {};
  assert.match(q['400']?.description ?? '', /query_refused, query_failed/);
  assert.match(q['499']?.description ?? '', /cancelled/);
  assert.match(q['504']?.description ?? '', /timeout/);
  assert.match(
    doc.paths['/v1/agent/jobs/{id}/complete']?.post?.responses?.['422']?.description ?? '',
    /invalid_job_result/,
  );
  assert.match(
    doc.paths['/v1/databases']?.post?.responses?.['409']?.description ?? '',
    /conflict, capacity_exceeded/,
  );
});

test('the document declares what Fastify itself answers, every content type, and each security scheme', async () => {
  const doc = (await s.app.inject({ url: '/v1/openapi.json' })).json() as Doc;
  for (const name of ['apiKey', 'agentToken', 'operatorToken'])
    assert.ok(doc.components.securitySchemes[name], `security scheme ${name}`);
  let ops = 0;
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      ops++;
      const where = `${method.toUpperCase()} ${path}`;
      const responses = op.responses ?? {};
      if (path.includes('{')) assert.ok(responses['414'], `${where}: 414 for an over-long path parameter`);
      if (method !== 'get') assert.ok(responses['415'], `${where}: 415 for an unsupported content type`);
      if (path.startsWith('/v1/agent/') && path !== '/v1/agent/enroll')
        assert.deepEqual(op.security, [{ agentToken: [] }], `${where}: the agent token`);
      if (path === '/v1/nodes/{id}/drift') assert.deepEqual(op.security, [{ operatorToken: [] }], where);
    }
  }
  assert.ok(ops >= 30, `${ops} operations`);
  const query = doc.paths['/v1/databases/{name}/explorer/query']?.post?.responses?.['200']?.content ?? {};
  assert.deepEqual(Object.keys(query).sort(), ['application/json', 'text/csv']);
  const exported = doc.paths['/v1/audit/export']?.get?.responses?.['200']?.content ?? {};
  assert.deepEqual(Object.keys(exported), ['application/x-ndjson']);
});

const apiShape = (status: number, body: string, where: string) => {
  const parsed = JSON.parse(body) as { error?: { code?: unknown; message?: unknown; request_id?: unknown } };
  assert.equal(typeof parsed.error?.code, 'string', `${where}: ${body}`);
  assert.ok(
    errorStatuses(parsed.error?.code as (typeof ERROR_CODES)[number]).includes(status),
    `${where}: ${body}`,
  );
  assert.equal(typeof parsed.error?.message, 'string', where);
  assert.equal(typeof parsed.error?.request_id, 'string', where);
  assert.deepEqual(Object.keys(parsed), ['error'], where);
};

test("every error Fastify raises is answered in the API's shape", async () => {
  const cases: { what: string; status: number; req: InjectOptions }[] = [
    { what: 'unknown route', status: 404, req: { url: '/v1/nope' } },
    { what: 'unknown method', status: 404, req: { method: 'PATCH', url: '/v1/databases' } },
    { what: 'over-long path parameter', status: 414, req: { url: `/v1/databases/${'a'.repeat(201)}` } },
    { what: 'bad percent-encoding', status: 400, req: { url: '/v1/databases/%zz' } },
    {
      what: 'malformed JSON',
      status: 400,
      req: {
        method: 'POST',
        url: '/v1/agent/enroll',
        headers: { 'content-type': 'application/json' },
        payload: '{"a": ',
      },
    },
    {
      what: 'empty JSON body',
      status: 400,
      req: {
        method: 'POST',
        url: '/v1/agent/enroll',
        headers: { 'content-type': 'application/json' },
        payload: '',
      },
    },
    {
      what: 'unsupported content type',
      status: 415,
      req: {
        method: 'POST',
        url: '/v1/agent/enroll',
        headers: { 'content-type': 'application/xml' },
        payload: '<a/>',
      },
    },
    {
      what: 'body over the limit',
      status: 413,
      req: {
        method: 'POST',
        url: '/v1/agent/enroll',
        headers: { 'content-type': 'application/json' },
        payload: JSON.stringify({ enrollment_token: 'x'.repeat(2 * 1024 * 1024) }),
      },
    },
  ];
  for (const c of cases) {
    const res = await s.app.inject(c.req);
    assert.equal(res.statusCode, c.status, `${c.what}: ${res.body}`);
    assert.match(String(res.headers['content-type']), /^application\/json/, c.what);
    apiShape(res.statusCode, res.body, c.what);
  }
});

/**
 * A raw request on a fresh connection; resolves with what came back when the server closed it, or
 * once `answers` responses (each a JSON body) have arrived.
 */
function raw(port: number, text: string, answers = Number.POSITIVE_INFINITY): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port }, () => socket.write(text));
    const chunks: Buffer[] = [];
    const got = () => Buffer.concat(chunks).toString('utf8');
    socket.setTimeout(5_000, () => socket.destroy(new Error(`no answer in 5 s: ${got().slice(0, 300)}`)));
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      const text = got();
      if (text.split('HTTP/1.1 ').length - 1 >= answers && text.endsWith('}')) socket.destroy();
    });
    socket.on('close', () => resolve(got()));
    socket.on('error', reject);
  });
}

test("what Node's HTTP parser refuses is answered in the API's shape too", async () => {
  const url = new URL(await s.app.listen({ host: '127.0.0.1', port: 0 }));
  const port = Number(url.port);
  const cases = [
    { what: 'malformed request line', status: 400, text: 'BLAH\r\n\r\n' },
    {
      what: 'headers over the limit',
      status: 431,
      text: `GET /health HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(20_000)}\r\n\r\n`,
    },
  ];
  for (const c of cases) {
    const answer = await raw(port, c.text);
    const [head = '', body = ''] = answer.split('\r\n\r\n');
    assert.match(head, new RegExp(`^HTTP/1.1 ${c.status} `), `${c.what}: ${answer.slice(0, 200)}`);
    assert.match(head, /content-type: application\/json/i, c.what);
    apiShape(c.status, body, c.what);
  }
});

type Schema = {
  type?: string | string[];
  maxLength?: number;
  pattern?: string;
  enum?: unknown[];
  const?: unknown;
  format?: string;
  properties?: Record<string, Schema>;
  additionalProperties?: boolean | Schema;
  propertyNames?: Schema;
  items?: Schema;
  anyOf?: Schema[];
  oneOf?: Schema[];
  allOf?: Schema[];
};

/** Where a string the client sends has no upper bound (enums, constants and UUIDs are bounded). */
function unbounded(s: Schema | undefined, at: string, out: string[]): void {
  if (!s || typeof s !== 'object') return;
  const types = Array.isArray(s.type) ? s.type : [s.type];
  // An anchored pattern without * or + (nor an open {n,}) bounds the length by itself.
  const boundedPattern =
    s.pattern !== undefined && /^\^[^*+]*\$$/.test(s.pattern) && !/\{\d+,\}/.test(s.pattern);
  const bounded =
    s.maxLength !== undefined || boundedPattern || s.enum || s.const !== undefined || s.format === 'uuid';
  if (types.includes('string') && !bounded) out.push(at);
  for (const [k, v] of Object.entries(s.properties ?? {})) unbounded(v, `${at}.${k}`, out);
  if (typeof s.additionalProperties === 'object') unbounded(s.additionalProperties, `${at}.*`, out);
  unbounded(s.propertyNames, `${at}{keys}`, out);
  unbounded(s.items, `${at}[]`, out);
  for (const alt of [...(s.anyOf ?? []), ...(s.oneOf ?? []), ...(s.allOf ?? [])]) unbounded(alt, at, out);
}

test('every string a client sends is bounded in the document (parameters, headers and bodies)', async () => {
  const doc = (await s.app.inject({ url: '/v1/openapi.json' })).json() as {
    paths: Record<
      string,
      Record<
        string,
        {
          parameters?: { in: string; name: string; schema: Schema }[];
          requestBody?: { content?: Record<string, { schema?: Schema }> };
        }
      >
    >;
  };
  const found: string[] = [];
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const where = `${method.toUpperCase()} ${path}`;
      for (const p of op.parameters ?? []) unbounded(p.schema, `${where} ${p.in} ${p.name}`, found);
      unbounded(op.requestBody?.content?.['application/json']?.schema, `${where} body`, found);
    }
  }
  assert.deepEqual(found, []);
});

test("a request that arrives while the server shuts down is refused in the API's shape (503 unavailable)", async () => {
  const s2 = await createTestServer();
  try {
    const { token: enrollment } = await s2.nodes.createEnrollment('closing_node', 10);
    const enrolled = await s2.app.inject({
      method: 'POST',
      url: '/v1/agent/enroll',
      payload: { enrollment_token: enrollment, agent_version: 'test' },
    });
    const agentToken = (enrolled.json() as { agent_token: string }).agent_token;
    const port = Number(new URL(await s2.app.listen({ host: '127.0.0.1', port: 0 })).port);
    // A long-poll in flight keeps the connection open; a second request on it arrives after the
    // close began.
    const body = JSON.stringify({ wait_ms: 1500 });
    // The server has the long-poll in hand once its poll service is called.
    let parked!: () => void;
    const inFlight = new Promise<void>((r) => {
      parked = r;
    });
    const poll = s2.nodes.poll;
    s2.nodes.poll = (...args) => {
      parked();
      return poll(...args);
    };
    const socket = net.connect({ host: '127.0.0.1', port });
    await new Promise((r) => socket.once('connect', r));
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    const ended = new Promise((r) => socket.once('close', r));
    socket.write(
      `POST /v1/agent/poll HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${agentToken}\r\n` +
        `content-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`,
    );
    await inFlight;
    const closed = s2.app.close();
    // The close has begun once the listener refuses new connections (the open one stays).
    const deadline = Date.now() + 5_000;
    while (await accepts(port)) {
      assert.ok(Date.now() < deadline, 'the server kept accepting connections after close()');
      await new Promise((r) => setTimeout(r, 10));
    }
    socket.write('GET /health HTTP/1.1\r\nhost: x\r\n\r\n');
    const timer = setTimeout(() => socket.destroy(), 5_000);
    await ended;
    clearTimeout(timer);
    await closed;
    const out = Buffer.concat(chunks).toString('utf8');
    const second = out.slice(out.indexOf('HTTP/1.1', 10));
    assert.match(second, /^HTTP\/1.1 503 /, out.slice(0, 600));
    const secondBody = second.slice(second.indexOf('\r\n\r\n') + 4);
    apiShape(503, secondBody.slice(secondBody.indexOf('{'), secondBody.lastIndexOf('}') + 1), 'closing');
    assert.match(secondBody, /"code":"unavailable"/);
  } finally {
    await s2.stop();
  }
});

/** Whether a new TCP connection to the port is accepted (closed again at once). */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect({ host: '127.0.0.1', port });
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}
