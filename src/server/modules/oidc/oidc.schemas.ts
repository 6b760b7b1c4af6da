import { z } from 'zod';

/** The flow cookie: binds a sign-in to the browser that started it (login CSRF). */
const FLOW_COOKIE = 'bulwark_oidc';
const FLOW_COOKIE_PATH = '/v1/auth/oidc';

const token = (max: number) =>
  z
    .string()
    .min(1)
    .max(max)
    .regex(/^[\x21-\x7E]+$/, 'must be printable ASCII');

export const startQuery = z.object({
  redirect: z
    .string()
    .max(512)
    .regex(/^\/(?![/\\])[\x21-\x7E]*$/, 'must be a path on this site (starting with one /)')
    .optional()
    .describe('Where the dashboard goes after sign-in (a path on this site); answered back by the callback'),
  invite: z
    .string()
    .max(100)
    .regex(/^[A-Za-z0-9_-]{1,100}$/, 'must be an invite code')
    .optional()
    .describe('An invite code: a new identity without a mapped role joins by it'),
  session: z
    .enum(['token', 'cookie'])
    .optional()
    .describe('`cookie`: the callback sets the dashboard’s session cookies and redirects into it'),
});

export const callbackQuery = z.object({
  code: token(4096).optional(),
  state: token(512).optional(),
  iss: z.string().max(2048).optional().describe('The issuer, when the IdP sends it (RFC 9207)'),
  error: token(200).optional(),
  error_description: z.string().max(1000).optional(),
});

export const signedInSchema = z.object({
  access_token: z.string().max(4096),
  refresh_token: z.string().max(200),
  expires_in: z.number().int().min(0).max(86_400).describe('Lifetime of the access token, in seconds'),
  user_id: z.uuid(),
  created: z.boolean().describe('true when this sign-in created the user'),
  redirect: z.string().max(512).nullable().describe('The `redirect` given to /start, if any'),
});

export const providersSchema = z.object({
  local: z.boolean().describe('Username and password sign-in (local users, made by invites)'),
  oidc: z.object({
    enabled: z.boolean().describe('Sign-in through the identity provider (GET /v1/auth/oidc/start)'),
    label: z.string().max(60).nullable().describe('The button’s text, as configured (BULWARK_OIDC_LABEL)'),
  }),
});

/** The value of the flow cookie in a Cookie header, if any (`c.` first: a flow for session cookies). */
export function flowCookie(header: string | undefined): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === FLOW_COOKIE) {
      const value = part.slice(eq + 1).trim();
      return /^(c\.)?[A-Za-z0-9_-]{1,100}$/.test(value) ? value : undefined;
    }
  }
  return undefined;
}

export function flowCookieHeader(value: string, opts: { secure: boolean; maxAgeSeconds: number }): string {
  return [
    `${FLOW_COOKIE}=${value}`,
    `Path=${FLOW_COOKIE_PATH}`,
    `Max-Age=${opts.maxAgeSeconds}`,
    'HttpOnly',
    // Lax: the IdP's redirect back is a top-level GET from another site, which Lax lets through.
    'SameSite=Lax',
    ...(opts.secure ? ['Secure'] : []),
  ].join('; ');
}
