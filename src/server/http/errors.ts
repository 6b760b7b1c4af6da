import { randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { hasZodFastifySchemaValidationErrors, isResponseSerializationError } from 'fastify-type-provider-zod';
import { z } from 'zod';
import {
  AppError,
  ERROR_CATALOG,
  ERROR_CODES,
  type ErrorCode,
  errorStatuses,
  fromPgError,
} from '../../shared/errors.ts';
import { SECURITY_HEADERS } from './security-headers.ts';

export const errorBody = z.object({
  error: z.object({
    code: z.string(),
    message: z.string(),
    request_id: z.string(),
    details: z.unknown().optional(),
  }),
});

/** The codes any route may answer with; a route adds its own with `errorResponsesWith`. */
const COMMON_CODES = [
  'bad_request',
  'validation_failed',
  'unauthorized',
  'forbidden',
  'csrf_failed',
  'not_found',
  'conflict',
  'payload_too_large',
  'rate_limited',
  'internal',
  'retry',
  'unavailable',
] as const satisfies readonly ErrorCode[];

type ErrorResponses<C extends ErrorCode> = Record<(typeof ERROR_CATALOG)[C]['status'], typeof errorBody>;

/**
 * OpenAPI error responses, generated from the error catalog: one entry per status (each code's own;
 * the rarer alternatives a code lists are in docs/api.md), described by the codes answered with it.
 */
export function errorResponsesWith<E extends ErrorCode>(
  ...extra: E[]
): ErrorResponses<(typeof COMMON_CODES)[number] | E> {
  const codes = new Map<number, ErrorCode[]>();
  for (const code of [...COMMON_CODES, ...extra]) {
    const status = ERROR_CATALOG[code].status;
    const list = codes.get(status) ?? [];
    if (!list.includes(code)) list.push(code);
    codes.set(status, list);
  }
  return Object.fromEntries(
    [...codes]
      .sort(([a], [b]) => a - b)
      .map(([status, list]) => [status, errorBody.describe(`Error: ${list.join(', ')}`)]),
  ) as ErrorResponses<(typeof COMMON_CODES)[number] | E>;
}

/** Error responses every route may return; spread into each route's `response`. */
export const errorResponses = errorResponsesWith();

/** Methods whose request body Fastify reads (and so may refuse: 413, 415, a malformed body). */
const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

type RouteSchema = { response?: Record<string, unknown>; hide?: boolean };

/**
 * The error statuses Fastify itself may answer on a route, declared in its OpenAPI responses so the
 * document lists every status: 414 (a path parameter over the router's limit) on routes with
 * parameters, 415 (a content type no parser reads) on routes that read a body. Their bodies are the
 * API's error shape, described by the code they carry (`bad_request`, which the catalog lists with
 * both statuses).
 */
function declareFrameworkStatuses(app: FastifyInstance): void {
  const describe = (status: number) => {
    const codes = ERROR_CODES.filter((c) => errorStatuses(c).slice(1).includes(status));
    return errorBody.describe(`Error: ${codes.join(', ')}`);
  };
  app.addHook('onRoute', (route) => {
    const schema = route.schema as RouteSchema | undefined;
    if (!schema?.response || schema.hide) return;
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    const response = { ...schema.response };
    if (route.url.includes(':') && !('414' in response)) response['414'] = describe(414);
    if (methods.some((m) => BODY_METHODS.has(m)) && !('415' in response)) response['415'] = describe(415);
    schema.response = response;
  });
}

/**
 * One error shape everywhere: `{ error: { code, message, request_id } }`. `pages` may answer a path
 * no route matched before it becomes a 404 (the dashboard's own routes: http/dashboard.ts).
 */
export function registerErrorHandling(
  app: FastifyInstance,
  opts: { pages?: (req: FastifyRequest, reply: FastifyReply) => Promise<boolean> } = {},
): void {
  declareFrameworkStatuses(app);
  // Shutting down: new requests are refused in our shape (Fastify's own 503 is turned off, see
  // `frameworkOptions`), and the connection is closed so the client goes to another replica.
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onRequest', async (_req, reply) => {
    if (!closing) return;
    reply.header('connection', 'close');
    throw new AppError('unavailable', 'The server is shutting down');
  });
  app.setErrorHandler((err: FastifyError, req, reply) => {
    /** The status is the catalog's for the code, or one of the alternatives it lists for it. */
    const send = (code: ErrorCode, message: string, details?: unknown, status?: number) => {
      const statuses = errorStatuses(code);
      return reply.status(status !== undefined && statuses.includes(status) ? status : statuses[0]!).send({
        error: { code, message, request_id: String(req.id), ...(details === undefined ? {} : { details }) },
      });
    };

    if (err instanceof AppError) return send(err.code, err.message, err.details, err.status);
    if (hasZodFastifySchemaValidationErrors(err)) {
      const issues = err.validation.map((v) => ({
        path: `${err.validationContext ?? 'body'}${v.instancePath.replaceAll('/', '.')}`,
        message: v.message,
      }));
      return send('validation_failed', 'The request is not valid', issues);
    }
    if (isResponseSerializationError(err)) {
      req.log.error({ err: { message: err.message } }, 'response failed its schema');
      return send('internal', 'Internal error');
    }
    const pgMapped = fromPgError(err);
    if (pgMapped) return send(pgMapped.code, pgMapped.message, undefined, pgMapped.status);
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return send('payload_too_large', 'Request body too large');
    if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE')
      return send('bad_request', 'Unsupported content type', undefined, 415);
    if (
      err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' ||
      err.code === 'FST_ERR_CTP_INVALID_JSON_BODY' ||
      err.statusCode === 400
    ) {
      return send('bad_request', 'Malformed request body');
    }
    if (err.statusCode === 429) return send('rate_limited', 'Too many requests');
    // A path the static files refuse (`..`, NUL, a separator smuggled in encoded…) is simply
    // not there: the same 404 as any unknown route, never a 403 that confirms the attempt.
    if (typeof err.code === 'string' && err.code.startsWith('FST_STATIC_') && isClientStatus(err.statusCode))
      return send('not_found', 'Route not found');
    // Any other error a plugin or Fastify marked as the client's: its status, a generic message,
    // and no stack in the log (it is not our bug). Only the rest is an internal error.
    if (isClientStatus(err.statusCode)) {
      req.log.info({ err: { code: err.code, status: err.statusCode } }, 'request refused');
      const status = err.statusCode;
      const code = CLIENT_CODES[status] ?? 'bad_request';
      return send(code, CLIENT_MESSAGES[status] ?? 'Bad request', undefined, status);
    }
    req.log.error({ err: { message: err.message, stack: err.stack, code: err.code } }, 'unhandled error');
    return send('internal', 'Internal error');
  });

  app.setNotFoundHandler(async (req, reply) => {
    if (opts.pages && (await opts.pages(req, reply))) return reply;
    return reply
      .status(ERROR_CATALOG.not_found.status)
      .send({ error: { code: 'not_found', message: 'Route not found', request_id: String(req.id) } });
  });
}

const isClientStatus = (s: number | undefined): s is number =>
  typeof s === 'number' && Number.isInteger(s) && s >= 400 && s <= 499;

/**
 * The code for a client status Fastify or a plugin set; any other is `bad_request`, answered with
 * that status when the catalog lists it among `bad_request`'s (405, 412, 414, 415, 416), else 400.
 */
const CLIENT_CODES: Record<number, ErrorCode> = {
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  413: 'payload_too_large',
};
const CLIENT_MESSAGES: Record<number, string> = {
  401: 'Authentication required',
  403: 'Not allowed',
  404: 'Not found',
  405: 'Method not allowed',
  413: 'Request too large',
  414: 'Request URL too long',
};

/**
 * URLs Fastify cannot route (bad percent-encoding such as `%`, `%zz` or an invalid UTF-8
 * sequence; an over-long parameter): our error shape, without echoing the URL back.
 */
function frameworkErrors(err: { code?: string }, req: FastifyRequest, reply: FastifyReply): void {
  const tooLong = err.code === 'FST_ERR_MAX_PARAM_LENGTH';
  // No route, so no onRequest hooks ran: the headers every response carries are set here.
  for (const [k, v] of Object.entries(SECURITY_HEADERS)) reply.header(k, v);
  reply.header('cache-control', 'no-store');
  reply.header('x-request-id', String(req.id));
  const refusal = new AppError(
    'bad_request',
    tooLong ? 'Request URL too long' : 'Malformed URL',
    undefined,
    tooLong ? 414 : 400,
  );
  void reply.status(refusal.status).send({
    error: {
      code: refusal.code,
      message: refusal.message,
      request_id: String(req.id),
    },
  });
}

/**
 * What Node's HTTP parser refuses before Fastify has a request (a malformed request line or header,
 * headers over the size limit, a request that took too long to arrive): our error shape, written on
 * the socket, which is then closed. Fastify's default writes its own `{error, message, statusCode}`.
 */
function clientErrorHandler(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, message] =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? [408, 'Request timeout']
      : err.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'Request headers too large']
        : [400, 'Malformed request'];
  const body = JSON.stringify({ error: { code: 'bad_request', message, request_id: randomUUID() } });
  if (socket.writable) {
    const reason =
      status === 408 ? 'Request Timeout' : status === 431 ? 'Request Header Fields Too Large' : 'Bad Request';
    const headers = [
      `HTTP/1.1 ${status} ${reason}`,
      'content-type: application/json; charset=utf-8',
      `content-length: ${Buffer.byteLength(body)}`,
      'connection: close',
      ...Object.entries(SECURITY_HEADERS).map(([k, v]) => `${k}: ${v}`),
      'cache-control: no-store',
    ];
    socket.write(`${headers.join('\r\n')}\r\n\r\n${body}`);
  }
  socket.destroy(err);
}

/**
 * Fastify options that keep every answer Fastify writes itself in the API's error shape: spread
 * into `Fastify({...})`. Its built-in 503 while closing is replaced by `registerErrorHandling`'s.
 */
export const frameworkOptions = {
  frameworkErrors,
  clientErrorHandler,
  return503OnClosing: false,
} as const;
