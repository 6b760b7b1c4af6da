/**
 * What the OpenAPI fuzz needs besides the generator: the document's operations in a usable shape,
 * and an HTTP client that sends each request from a loopback source address of its own (the rate
 * limiter counts per address), bounded in time.
 */
import http from 'node:http';
import type { JsonSchema } from './json-schema-arbitrary.ts';

export type Parameter = {
  in: 'path' | 'query' | 'header';
  name: string;
  required?: boolean;
  description?: string;
  schema: JsonSchema;
};
export type ResponseDoc = { description?: string; content?: Record<string, { schema?: JsonSchema }> };
export type OperationDoc = {
  parameters?: Parameter[];
  requestBody?: { required?: boolean; content?: Record<string, { schema?: JsonSchema }> };
  responses?: Record<string, ResponseDoc>;
  security?: Record<string, string[]>[];
  summary?: string;
};
export type OpenApiDoc = {
  paths: Record<string, Record<string, OperationDoc>>;
  components?: { securitySchemes?: Record<string, unknown> };
};

export type Operation = {
  method: string;
  path: string;
  op: OperationDoc;
  /** Object schemas of each part, built from the parameters (empty object when none). */
  pathSchema: JsonSchema;
  querySchema: JsonSchema;
  headerSchema: JsonSchema;
  bodySchema: JsonSchema | null;
  /** The security scheme names the operation requires (none: public). */
  schemes: string[];
};

function partSchema(params: Parameter[], where: Parameter['in']): JsonSchema {
  const own = params.filter((p) => p.in === where);
  return {
    type: 'object',
    // A parameter's description sits beside its schema in OpenAPI; keep it with the schema.
    properties: Object.fromEntries(
      own.map((p) => [p.name, p.description ? { description: p.description, ...p.schema } : p.schema]),
    ),
    required: own.filter((p) => p.required).map((p) => p.name),
    additionalProperties: false,
  };
}

export function operationsOf(doc: OpenApiDoc): Operation[] {
  const out: Operation[] = [];
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const params = op.parameters ?? [];
      out.push({
        method: method.toUpperCase(),
        path,
        op,
        pathSchema: partSchema(params, 'path'),
        querySchema: partSchema(params, 'query'),
        headerSchema: partSchema(params, 'header'),
        bodySchema: op.requestBody?.content?.['application/json']?.schema ?? null,
        schemes: (op.security ?? []).flatMap((s) => Object.keys(s)),
      });
    }
  }
  return out;
}

export type Sent = { status: number; contentType: string; body: string; headers: http.IncomingHttpHeaders };

/** The i-th loopback source address: 127.1.0.1, 127.1.0.2, … (one per request: no shared budget). */
export function sourceAddress(i: number): string {
  return `127.1.${(i >> 8) & 0xff}.${(i & 0xff) === 0 ? 254 : i & 0xff}`;
}

export function send(
  base: URL,
  req: { method: string; path: string; headers: Record<string, string>; body?: string | Buffer },
  localAddress: string,
  timeoutMs: number,
): Promise<Sent> {
  return new Promise((resolve, reject) => {
    const r = http.request(
      {
        host: base.hostname,
        port: base.port,
        method: req.method,
        path: req.path,
        headers: {
          ...req.headers,
          ...(req.body === undefined ? {} : { 'content-length': String(Buffer.byteLength(req.body)) }),
        },
        localAddress,
        agent: false,
        timeout: timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            contentType: String(res.headers['content-type'] ?? ''),
            body: Buffer.concat(chunks).toString('utf8'),
            headers: res.headers,
          }),
        );
        res.on('error', reject);
      },
    );
    r.on('timeout', () => r.destroy(new Error(`${req.method} ${req.path}: no answer in ${timeoutMs} ms`)));
    r.on('error', reject);
    if (req.body !== undefined) r.write(req.body);
    r.end();
  });
}
