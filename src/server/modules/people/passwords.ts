/**
 * Local passwords: the policy a new password must meet, and argon2id hashing.
 *
 * Hashing is @node-rs/argon2's async `hash`, which runs on libuv's thread pool: a login flood
 * costs pool threads, not the event loop. Parameters are OWASP's first argon2id recommendation
 * (m = 19 MiB, t = 2, p = 1; ADR 0013); they are stored in each PHC string, so raising them later
 * leaves old hashes verifiable. `verify` is the library's (the comparison is constant-time).
 *
 * Passwords are NFKC-normalised before hashing and verifying, so the same password typed on two
 * keyboards (composed or decomposed accents, full-width digits) is the same password.
 */
import { readFileSync } from 'node:fs';
import { type Algorithm, hash, verify } from '@node-rs/argon2';
import { AppError } from '../../../shared/errors.ts';

/** argon2id (the library's enum value; a const enum cannot be read under type stripping). */
const ARGON2ID = 2 as Algorithm;

export const ARGON2_PARAMS = Object.freeze({
  memoryCost: 19_456,
  timeCost: 2,
  parallelism: 1,
  outputLen: 32,
});

const PASSWORD_MIN_CHARS = 12;
const PASSWORD_MAX_CHARS = 256;

let common: ReadonlySet<string> | undefined;

/** The bundled list of common passwords (lower-cased), read once on first use. */
export function commonPasswords(): ReadonlySet<string> {
  if (!common) {
    const text = readFileSync(new URL('./common-passwords.txt', import.meta.url), 'utf8');
    common = new Set(text.split('\n').filter((line) => line.length > 0 && !line.startsWith('#')));
  }
  return common;
}

const normalize = (password: string) => password.normalize('NFKC');
const chars = (s: string) => [...s].length;

type PasswordProblem = 'too_short' | 'too_long' | 'common' | 'equals_username';

/** What is wrong with a new password, or null when it meets the policy. */
export function passwordProblem(password: string, username: string | null): PasswordProblem | null {
  const pw = normalize(password);
  const n = chars(pw);
  if (n < PASSWORD_MIN_CHARS) return 'too_short';
  if (n > PASSWORD_MAX_CHARS) return 'too_long';
  const lower = pw.toLowerCase();
  if (commonPasswords().has(lower)) return 'common';
  if (username !== null && lower === username.normalize('NFKC').toLowerCase()) return 'equals_username';
  return null;
}

const MESSAGES: Record<PasswordProblem, string> = {
  too_short: `The password must have at least ${PASSWORD_MIN_CHARS} characters`,
  too_long: `The password must have at most ${PASSWORD_MAX_CHARS} characters`,
  common: 'The password is in the list of common passwords',
  equals_username: 'The password must not be the username',
};

/** Throws `weak_password` (400) when the password does not meet the policy. */
export function checkPasswordPolicy(password: string, username: string | null): void {
  const problem = passwordProblem(password, username);
  if (problem) throw new AppError('weak_password', MESSAGES[problem], { reason: problem });
}

/** An argon2id PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`), computed off the event loop. */
export function hashPassword(password: string): Promise<string> {
  return hash(normalize(password), { ...ARGON2_PARAMS, algorithm: ARGON2ID });
}

/** True when the password matches the PHC string; false for a wrong password or a malformed hash. */
export async function verifyPassword(phc: string, password: string): Promise<boolean> {
  try {
    return await verify(phc, normalize(password));
  } catch {
    return false;
  }
}

/**
 * A hash of a random password with the same parameters, verified when the username is unknown
 * (or has no local password), so that answer takes as long as a wrong password for a real user.
 * Made once per holder (the sign-in service, at its start); a failed hash is made again next time.
 */
export function createDummyHash(): () => Promise<string> {
  let dummy: Promise<string> | undefined;
  return () => {
    if (!dummy) {
      const made = hashPassword(`unknown-user-${crypto.randomUUID()}`);
      dummy = made;
      made.catch(() => {
        if (dummy === made) dummy = undefined;
      });
    }
    return dummy;
  };
}
