/**
 * Names of just-in-time logins (issue 14): `<db>_jit_<8 hex>`, the database part cut to fit
 * PostgreSQL's 63-byte identifiers. The server picks the hex; the agent accepts a login only in
 * this exact shape for the grant's database, so a grant can never name one of the database's own
 * roles (`<db>_owner`…), another tenant's role or a platform role.
 */
import { assertValidName, MAX_IDENTIFIER_BYTES } from './identifiers.ts';

export const JIT_INFIX = '_jit_';
const HEX = /^[0-9a-f]{8}$/;
const DB_PART = MAX_IDENTIFIER_BYTES - JIT_INFIX.length - 8;

/** The login for database `db` with the random tag `hex` (8 lowercase hex characters). */
export function jitLoginName(db: string, hex: string): string {
  assertValidName(db, 'database name');
  if (!HEX.test(hex)) throw new TypeError('a just-in-time login tag is 8 lowercase hex characters');
  return assertValidName(`${db.slice(0, DB_PART)}${JIT_INFIX}${hex}`, 'login');
}

/** True when `login` is a just-in-time login name of database `db`. */
export function isJitLoginOf(db: string, login: string): boolean {
  const tag = login.slice(-8);
  if (!HEX.test(tag)) return false;
  try {
    return jitLoginName(db, tag) === login;
  } catch {
    return false;
  }
}
