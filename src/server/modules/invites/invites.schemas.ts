import { z } from 'zod';
import type { InviteRow } from './invites.repo.ts';

const inviteRole = z.enum(['owner', 'admin', 'member', 'viewer']);

/** An account's name, as the accounts table allows it. */
const accountName = z
  .string()
  .max(63)
  .regex(/^[a-z][a-z0-9_-]{0,62}$/, 'must be an account name');

export const createInvitesBody = z
  .object({
    count: z.number().int().min(1).max(100).describe('How many single-use codes to make, 1-100'),
    role: inviteRole.describe('The role each new user gets in the account'),
    account: accountName
      .optional()
      .describe('The account the new users join; default: the caller’s own (another account is a 404)'),
    platform_admin: z
      .boolean()
      .optional()
      .describe(
        'The new users are platform admins (platform admins only; the operator: `bulwark admin invite`)',
      ),
    expires_in_hours: z
      .number()
      .int()
      .min(1)
      .max(720)
      .optional()
      .describe('Hours until an unused code expires, 1-720 (default 72)'),
  })
  .strict();

/** Made codes: each in this response only, never stored (only its SHA-256 is). */
export const createdInvitesSchema = z.object({
  invites: z
    .array(
      z.object({
        id: z.uuid(),
        code: z.string().max(64).describe('The single-use code: shown once, in this response only'),
        expires_at: z.string().max(40),
      }),
    )
    .max(100),
});

/** What may leave the server about a pending invite: never its code or hash. */
export const inviteSchema = z.object({
  id: z.uuid(),
  account: z.object({ id: z.uuid(), name: z.string().max(63) }).nullable(),
  role: inviteRole.nullable().describe('null: an invite without an account (a platform admin)'),
  platform_admin: z.boolean(),
  expires_at: z.string().max(40),
  created_by_user_id: z.uuid().nullable(),
  created_at: z.string().max(40),
});

export const redeemInviteBody = z
  .object({
    code: z
      .string()
      .min(1)
      .max(200)
      .regex(/^[\x21-\x7e]+$/, 'must be printable ASCII')
      .describe('The invite code (`bwi_…`), as given'),
    username: z
      .string()
      .min(2)
      .max(63)
      .regex(/^[a-z][a-z0-9._-]{1,62}$/, 'must start with a-z and hold only a-z, 0-9, ".", "_" and "-"')
      .describe('2-63 characters: a-z first, then a-z, 0-9, ".", "_", "-"'),
    password: z.string().min(12).max(1024).describe('At least 12 characters, not a common password'),
    session: z
      .literal('cookie')
      .optional()
      .describe('`cookie`: also sign the new user in, as the dashboard’s HttpOnly session cookies'),
  })
  .strict();

export const redeemedSchema = z.object({
  user: z.object({ id: z.uuid(), username: z.string().max(63), platform_admin: z.boolean() }),
  account: z.object({ id: z.uuid(), name: z.string().max(63) }).nullable(),
  role: inviteRole.nullable(),
});

export function presentInvite(row: InviteRow): z.infer<typeof inviteSchema> {
  return {
    id: row.id,
    account:
      row.account_id !== null && row.account_name !== null
        ? { id: row.account_id, name: row.account_name }
        : null,
    role: row.role,
    platform_admin: row.platform_admin,
    expires_at: row.expires_at.toISOString(),
    created_by_user_id: row.created_by_user_id,
    created_at: row.created_at.toISOString(),
  };
}
