import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { hasZodFastifySchemaValidationErrors, isResponseSerializationError } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { AppError, fromPgError } from '../../shared/errors.ts';
import { SECURITY_HEADERS } from './security-headers.ts';

export const errorBody = z.object({
  error: z.object({
    code: z.string(),
    message: z.string(),
    request_id: z.string(),
    details: z.unknown().optional(),
  }),
});

/** Error responses every route may return; spread into each route's `response`. */
export const errorResponses = {
  400: errorBody,
  401: errorBody,
  403: errorBody,
  404: errorBody,
  409: errorBody,
  413: errorBody,
  429: errorBody,
  500: errorBody,
  503: errorBody,
};

/** One error shape everywhere: `{ error: { code, message, request_id } }`. */
export function registerErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError, req, reply) => {
    const send = (status: number, code: string, message: string, details?: unknown) =>
      reply.status(status).send({
        error: { code, message, request_id: String(req.id), ...(details === undefined ? {} : { details }) },
      });

    if (err instanceof AppError) return send(err.status, err.code, err.message, err.details);
    if (hasZodFastifySchemaValidationErrors(err)) {
      const issues = err.validation.map((v) => ({
        path: `${err.validationContext ?? 'body'}${v.instancePath.replaceAll('/', '.')}`,
        message: v.message,
      }));
      return send(400, 'validation_failed', 'The request is not valid', issues);
    }
    if (isResponseSerializationError(err)) {
      req.log.error({ err: { message: err.message } }, 'response failed its schema');
      return send(500, 'internal', 'Internal error');
    }
    const pgMapped = fromPgError(err);
    if (pgMapped) return send(pgMapped.status, pgMapped.code, pgMapped.message);
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE')
      return send(413, 'payload_too_large', 'Request body too large');
    if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE')
      return send(415 as number, 'bad_request', 'Unsupported content type');
    if (
      err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' ||
      err.code === 'FST_ERR_CTP_INVALID_JSON_BODY' ||
      err.statusCode === 400
    ) {
      return send(400, 'bad_request', 'Malformed request body');
    }
    if (err.statusCode === 429) return send(429, 'rate_limited', 'Too many requests');
    // A path the static files refuse (`..`, NUL, a separator smuggled in encoded…) is simply
    // not there: the same 404 as any unknown route, never a 403 that confirms the attempt.
    if (typeof err.code === 'string' && err.code.startsWith('FST_STATIC_') && isClientStatus(err.statusCode))
      return send(404, 'not_found', 'Route not found');
    // Any other error a plugin or Fastify marked as the client's: its status, a generic message,
    // and no stack in the log (it is not our bug). Only the rest is an internal error.
    if (isClientStatus(err.statusCode)) {
      req.log.info({ err: { code: err.code, status: err.statusCode } }, 'request refused');
      const status = err.statusCode;
      return send(status, CLIENT_CODES[status] ?? 'bad_request', CLIENT_MESSAGES[status] ?? 'Bad request');
    }
    req.log.error({ err: { message: err.message, stack: err.stack, code: err.code } }, 'unhandled error');
    return send(500, 'internal', 'Internal error');
  });

  app.setNotFoundHandler((req, reply) => {
    reply
      .status(404)
      .send({ error: { code: 'not_found', message: 'Route not found', request_id: String(req.id) } });
  });
}

const isClientStatus = (s: number | undefined): s is number =>
  typeof s === 'number' && Number.isInteger(s) && s >= 400 && s <= 499;

const CLIENT_CODES: Record<number, string> = {
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
export function frameworkErrors(err: { code?: string }, req: FastifyRequest, reply: FastifyReply): void {
  const tooLong = err.code === 'FST_ERR_MAX_PARAM_LENGTH';
  // No route, so no onRequest hooks ran: the headers every response carries are set here.
  for (const [k, v] of Object.entries(SECURITY_HEADERS)) reply.header(k, v);
  reply.header('cache-control', 'no-store');
  reply.header('x-request-id', String(req.id));
  void reply.status(tooLong ? 414 : 400).send({
    error: {
      code: 'bad_request',
      message: tooLong ? 'Request URL too long' : 'Malformed URL',
      request_id: String(req.id),
    },
  });
}
