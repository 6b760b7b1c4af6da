import { createHash, createHmac, pbkdf2, pbkdf2Sync, randomBytes } from 'node:crypto';
import { promisify } from 'node:util';

/**
 * A SCRAM-SHA-256 verifier in PostgreSQL's stored format
 * (`SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`). PgBouncer's auth file holds
 * these, never a clear password; a client that authenticates with SCRAM lets PgBouncer
 * log in to the server on its behalf.
 */
export function scramVerifier(password: string, iterations = 4096, salt: Buffer = randomBytes(16)): string {
  return verifierOf(pbkdf2Sync(password.normalize('NFKC'), salt, iterations, 32, 'sha256'), salt, iterations);
}

const pbkdf2Async = promisify(pbkdf2);

/**
 * The same, with the PBKDF2 rounds on libuv's thread pool: for a job that must not hold up its
 * other branches while they wait on the network (database.create's steward verifier).
 */
export async function scramVerifierAsync(password: string, iterations = 4096): Promise<string> {
  const salt = randomBytes(16);
  return verifierOf(
    await pbkdf2Async(password.normalize('NFKC'), salt, iterations, 32, 'sha256'),
    salt,
    iterations,
  );
}

function verifierOf(salted: Buffer, salt: Buffer, iterations: number): string {
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

export const SCRAM_VERIFIER_PATTERN = /^SCRAM-SHA-256\$\d+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$/;
