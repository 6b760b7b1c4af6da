import { z } from 'zod';

/**
 * The `Idempotency-Key` request header as `idempotency.ts` checks it (1–255 printable ASCII
 * characters), for the routes that honour it to declare. Loose: validating the headers must not
 * strip the others from the request.
 */
export const idempotencyHeaders = z.looseObject({
  'idempotency-key': z
    .string()
    .min(1)
    .max(255)
    .regex(/^[\x21-\x7e]+$/)
    .optional()
    .describe('1-255 printable ASCII characters; a retry with the same key and request is answered once'),
});
