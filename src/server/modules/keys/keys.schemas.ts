import { z } from 'zod';
import { NAME_PATTERN } from '../../../shared/identifiers.ts';
import type { KeyRow } from './keys.repo.ts';
import { displayPrefix } from './keys.service.ts';

export const level = z.enum(['read', 'write', 'admin']);

const keyName = z
  .string()
  // Checked before the trim, so the document says it too: blank is not a name.
  .regex(/\S/, 'must not be blank')
  .trim()
  .min(1)
  .max(100)
  .regex(/^[^\p{Cc}]+$/u, 'must not contain control characters');

export const createKeyBody = z
  .object({
    name: keyName,
    level,
    databases: z
      .array(z.string().max(63).regex(NAME_PATTERN, 'must be a database name'))
      .min(1)
      .max(100)
      .optional()
      .describe('Limit the key to these databases (names); omitted: the creator’s own scope'),
    expires_at: z.iso
      .datetime({ offset: true })
      .max(40)
      .optional()
      .meta({
        description:
          'ISO 8601 with an offset, in the future. Default and latest: now + the account’s key lifetime ' +
          '(1-3650 days, 90 unless the operator changed it), and never later than the creating key’s expiry; ' +
          'a later time is a 400',
        'x-after-now': true,
      }),
    explorer: z.boolean().optional().describe('May use the SQL explorer (only if the creator may)'),
    decoy: z.boolean().optional().describe('A canary: any use is refused and raises a critical alert'),
  })
  .strict();

/** What may leave the server about a key: never its hash, only the display prefix. */
export const keySchema = z.object({
  id: z.uuid(),
  name: z.string().max(100),
  prefix: z.string().max(16).describe('`bwk_` + the first 12 characters of the key body'),
  level,
  databases: z.array(z.string().max(63)).nullable().describe('null: the whole account'),
  explorer: z.boolean(),
  decoy: z.boolean(),
  status: z.enum(['active', 'expired', 'revoked']),
  created_by_key_id: z.uuid().nullable(),
  expires_at: z.string().max(40),
  last_used_at: z.string().max(40).nullable(),
  last_used_ip: z.string().max(45).nullable(),
  revoked_at: z.string().max(40).nullable(),
  created_at: z.string().max(40),
});

export const createdKeySchema = keySchema.extend({
  key: z
    .string()
    .max(64)
    .optional()
    .describe('The key itself: shown once, on the first response only (absent on an idempotent replay)'),
});

export const whoamiSchema = z.object({
  account: z.object({ id: z.uuid(), name: z.string().max(63) }),
  key: z.object({
    id: z.uuid(),
    name: z.string().max(100).nullable(),
    prefix: z.string().max(16).nullable(),
    level,
    databases: z.array(z.string().max(63)).nullable(),
    explorer: z.boolean(),
    expires_at: z.string().max(40).nullable(),
  }),
});

export function presentKey(row: KeyRow, now = Date.now()): z.infer<typeof keySchema> {
  return {
    id: row.id,
    name: row.name,
    prefix: displayPrefix(row.lookup_prefix),
    level: row.level,
    databases: row.databases,
    explorer: row.explorer,
    decoy: row.decoy,
    status: row.revoked_at ? 'revoked' : row.expires_at.getTime() <= now ? 'expired' : 'active',
    created_by_key_id: row.created_by_key_id,
    expires_at: row.expires_at.toISOString(),
    last_used_at: row.last_used_at?.toISOString() ?? null,
    last_used_ip: row.last_used_ip,
    revoked_at: row.revoked_at?.toISOString() ?? null,
    created_at: row.created_at.toISOString(),
  };
}
