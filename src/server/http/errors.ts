import type { FastifyError, FastifyInstance } from 'fastify';
import { hasZodFastifySchemaValidationErrors, isResponseSerializationError } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { AppError, fromPgError } from '../../shared/errors.ts';

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
    req.log.error({ err: { message: err.message, stack: err.stack, code: err.code } }, 'unhandled error');
    return send(500, 'internal', 'Internal error');
  });

  app.setNotFoundHandler((req, reply) => {
    reply
      .status(404)
      .send({ error: { code: 'not_found', message: 'Route not found', request_id: String(req.id) } });
  });
}
