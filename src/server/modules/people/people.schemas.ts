import { z } from 'zod';
import { plainText } from '../../http/text.schemas.ts';
import { sessionMode } from '../sessions/sessions.schemas.ts';

export const loginBody = z.object({
  username: plainText(200).min(1).describe('The username (case-insensitive)'),
  password: plainText(1024).min(1),
  totp_code: z
    .string()
    .min(6)
    .max(20)
    .regex(/^[0-9A-Za-z -]+$/, 'must be a 6-digit TOTP code or a recovery code')
    .optional()
    .describe(
      'A 6-digit TOTP code, or one of the recovery codes (each works once); needed when the user has TOTP',
    ),
  session: sessionMode.optional(),
});

export const loginResponse = z.object({
  access_token: z.string().max(4096).describe('A JWT of 15 minutes: `Authorization: Bearer <access_token>`'),
  refresh_token: z.string().max(512).describe('Works once, at POST /v1/auth/refresh; keep it secret'),
  expires_in: z.number().int().min(0).max(86_400).describe('Seconds until the access token expires'),
});

export const totpEnrolmentResponse = z.object({
  secret: z.string().max(64).describe('The TOTP secret (base32), shown this once'),
  otpauth_uri: z.string().max(1000).describe('The same secret as an otpauth:// URI, for a QR code'),
});

export const totpConfirmBody = z.object({
  code: z
    .string()
    .regex(/^\d{6}$/, 'must be 6 digits')
    .describe('The current code from the authenticator app'),
});

export const totpConfirmResponse = z.object({
  recovery_codes: z
    .array(z.string().max(20))
    .length(10)
    .describe('Ten recovery codes, shown this once: each signs in once in place of a TOTP code'),
});
