import { z } from 'zod';

/**
 * Text a client sends that reaches PostgreSQL: no control characters (U+0000 among them, which a
 * `text` or `jsonb` value cannot hold) and no lone UTF-16 surrogate (jsonb refuses it). Refused by
 * the schema, so the document says so, rather than by the database.
 */
const PLAIN_TEXT = /^[^\p{Cc}\p{Cs}]*$/u;

export function plainText(maxLength: number) {
  return z
    .string()
    .max(maxLength)
    .regex(PLAIN_TEXT, 'must not contain control characters or lone surrogates');
}
