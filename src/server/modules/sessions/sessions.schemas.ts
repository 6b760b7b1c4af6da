import { z } from 'zod';

/** What a sign-in or a refresh hands out; the login flows return the same shape. */
export const issuedTokensSchema = z.object({
  access_token: z.string().max(2048).describe('A JWT (EdDSA) of 15 minutes: `Authorization: Bearer <it>`'),
  refresh_token: z
    .string()
    .max(200)
    .describe('Opaque, single use: POST /v1/auth/refresh hands out a new pair (30-day session)'),
  expires_in: z.number().int().min(1).max(3600).describe('Seconds until the access token expires'),
});

export const refreshBody = z.object({ refresh_token: z.string().min(1).max(200) }).strict();

export const loggedOutSchema = z.object({ logged_out: z.literal(true) });

const role = z.enum(['owner', 'admin', 'member', 'viewer']);

/** What may leave the server about a user: never a password hash, TOTP secret or identity. */
export const userSchema = z.object({
  id: z.uuid(),
  username: z.string().max(63).nullable(),
  platform_admin: z.boolean(),
  status: z.enum(['active', 'suspended']),
  totp_enabled: z.boolean(),
});

export const meSchema = z.object({
  user: userSchema,
  memberships: z
    .array(
      z.object({
        account: z.string().max(63),
        role,
        databases: z.array(z.string().max(63)).max(10_000).nullable().describe('null: every database'),
      }),
    )
    .max(10_000),
});

export const userIdParams = z.object({ id: z.uuid() });
