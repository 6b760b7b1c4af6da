import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import fs from 'node:fs/promises';

/** Reads a secret file, refusing one that group or others can read. */
export function readSecretFile(file: string): string {
  const st = statSync(file);
  if ((st.mode & 0o077) !== 0) {
    throw new Error(
      `${file} is readable by group or others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`,
    );
  }
  const value = readFileSync(file, 'utf8').trim();
  if (!value) throw new Error(`${file} is empty`);
  return value;
}

/** Returns the secret in `file`, creating it (0600, 32 random bytes, URL-safe) on first use. */
export async function readOrCreateSecret(file: string): Promise<string> {
  if (!existsSync(file)) {
    try {
      await fs.writeFile(file, `${randomBytes(32).toString('base64url')}\n`, { mode: 0o600, flag: 'wx' });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  return readSecretFile(file);
}
