/**
 * Invite codes: `bwi_` + base64url of 32 random bytes (256 bits; 47 characters, URL-safe), shown
 * once and stored only as their SHA-256. Plain SHA-256 is enough: a code carries 256 bits of
 * entropy, so there is nothing to brute-force from its hash. A link carries the code in the URL
 * fragment (`#invite=…`), which browsers never send to a server, so it reaches no server log.
 */
import { generateToken, hashToken } from '../../../shared/api-key.ts';

const INVITE_CODE_PREFIX = 'bwi_';

export function generateInviteCode(): string {
  return generateToken(INVITE_CODE_PREFIX, 32);
}

/** 32 bytes, the `code_hash` of its invite (for any string: an unknown one simply matches nothing). */
export function hashInviteCode(code: string): Buffer {
  return hashToken(code);
}

/** The link that opens the dashboard with the code in its fragment: `<base>/#invite=<code>`. */
export function inviteUrl(baseUrl: string, code: string): string {
  return `${baseUrl.replace(/\/+$/, '')}/#invite=${code}`;
}
