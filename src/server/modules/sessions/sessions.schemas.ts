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

/** The dashboard's answer to a sign-in or refresh: the session is in HttpOnly cookies, never in the body. */
export const cookieSessionSchema = z.object({
  session: z
    .literal('cookie')
    .describe('The session is in the __Host-bulwark_session and __Secure-bulwark_refresh cookies'),
  csrf_token: z
    .string()
    .max(64)
    .describe(
      'Send as X-CSRF-Token on every state-changing request made with the cookie (the same for the whole session)',
    ),
  expires_in: z.number().int().min(0).max(86_400).describe('Seconds until the access cookie lapses'),
});

/** Sign-in routes' `session` choice: JSON tokens (the default; API and CLI clients) or cookies (the dashboard). */
export const sessionMode = z
  .enum(['token', 'cookie'])
  .describe(
    '`cookie`: the session is set as HttpOnly cookies and the body carries only csrf_token (the dashboard)',
  );

export const refreshBody = z
  .object({
    refresh_token: z
      .string()
      .min(1)
      .max(200)
      .optional()
      .describe('Omitted: the refresh cookie of a dashboard session is used, and cookies are answered'),
  })
  .strict();

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
  client_ip: z
    .string()
    .max(64)
    .describe('The address this request came from, as the server sees it (after trusted proxies)'),
  csrf_token: z
    .string()
    .max(64)
    .optional()
    .describe("Only when this request came with the dashboard's session cookie: its X-CSRF-Token"),
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

/** `POST /v1/auth/reauth`: the password, or a current TOTP code (users with TOTP). */
export const reauthBody = z
  .object({
    password: z.string().min(1).max(1024).optional().describe("The signed-in local user's password"),
    totp_code: z
      .string()
      .min(1)
      .max(32)
      .optional()
      .describe('A current 6-digit TOTP code (users with TOTP, instead of the password)'),
  })
  .strict();

export const reauthenticatedSchema = z.object({
  reauthenticated_at: z.string().describe('When the session was re-authenticated (ISO 8601)'),
  valid_until: z.string().describe('Until when the guarded actions go through without asking again'),
});
