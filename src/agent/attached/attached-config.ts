/**
 * Attached databases (issue 17, ADR 0031): existing PostgreSQL databases an agent can reach, listed
 * in the agent's own JSON file (`BULWARK_AGENT_ATTACHED_CONFIG`). Bulwark did not make them and
 * never creates, drops, rotates or backs them up; it reads with the configured read-only role and
 * runs governed writes with the configured migration role.
 *
 * The passwords live in files on the agent's host only: the config file and every password file
 * must be a regular file of mode 0600 (no group or other bit) owned by the agent's user, or the
 * entry is refused. Nothing here is ever sent to the server.
 */
import { constants as fsConstants } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { NAME_PATTERN } from '../../shared/identifiers.ts';

const roleSchema = z
  .object({
    user: z.string().min(1).max(63),
    /** Absolute path of a file holding the password (trailing newline ignored). */
    password_file: z.string().min(1).max(4096),
  })
  .strict();

export const attachedEntrySchema = z
  .object({
    /** The name Bulwark shows (the same rules as a hosted database's name). */
    name: z.string().min(1).max(63).regex(NAME_PATTERN),
    /** The account the database belongs to (its id, as `bulwark` shows it). */
    account_id: z.uuid(),
    host: z.string().min(1).max(255),
    port: z.number().int().min(1).max(65535).default(5432),
    /** The database's own name on that server. */
    database: z.string().min(1).max(63),
    sslmode: z.enum(['disable', 'require', 'verify-full']).default('disable'),
    reader: roleSchema,
    migrator: roleSchema,
  })
  .strict();
export type AttachedEntry = z.infer<typeof attachedEntrySchema>;

export const attachedFileSchema = z.object({ databases: z.array(z.unknown()).max(100) }).strict();

/** An entry with its passwords read, ready to connect; never logged, never sent. */
export type AttachedDatabase = Omit<AttachedEntry, 'reader' | 'migrator'> & {
  reader: { user: string; password: string };
  migrator: { user: string; password: string };
};

/** An entry the agent refuses, with why (safe to log and report: no secret in it). */
export type AttachedRefusal = { name: string; reason: string };

const MAX_SECRET_BYTES = 1024;

/**
 * Reads a file only the agent's user may read: an absolute path with no link anywhere on it (the
 * resolved path must be the path written), a regular file, mode 0600 (or stricter), owned by us.
 * The checks are made on the open file (O_NOFOLLOW, fstat), so a swap between check and read is
 * refused too.
 */
export async function readPrivateFile(file: string, maxBytes: number): Promise<string> {
  if (!path.isAbsolute(file)) throw new Error(`${file} is not an absolute path`);
  const real = await fs.realpath(file).catch(() => null);
  if (real === null) throw new Error(`${file} does not exist`);
  if (real !== path.normalize(file))
    throw new Error(
      `${file} is not a regular file (links are refused, on the path as well: it resolves to ${real})`,
    );
  const handle = await fs
    .open(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK)
    .catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ELOOP') throw new Error(`${file} is not a regular file (links are refused)`);
      throw new Error(`${file} cannot be opened (${err.code ?? err.message})`);
    });
  try {
    const st = await handle.stat();
    if (!st.isFile()) throw new Error(`${file} is not a regular file (links are refused)`);
    if ((st.mode & 0o077) !== 0)
      throw new Error(`${file} has mode ${(st.mode & 0o777).toString(8)}; it must be 0600 (chmod 600)`);
    const uid = process.getuid?.();
    if (uid !== undefined && st.uid !== uid) throw new Error(`${file} is not owned by the agent's user`);
    if (st.size > maxBytes) throw new Error(`${file} is larger than ${maxBytes} bytes`);
    const buf = Buffer.alloc(maxBytes + 1);
    let n = 0;
    while (n < buf.length) {
      const { bytesRead } = await handle.read(buf, n, buf.length - n, n);
      if (bytesRead === 0) break;
      n += bytesRead;
    }
    if (n > maxBytes) throw new Error(`${file} is larger than ${maxBytes} bytes`);
    return buf.subarray(0, n).toString('utf8');
  } finally {
    await handle.close();
  }
}

async function readSecret(file: string): Promise<string> {
  const raw = await readPrivateFile(file, MAX_SECRET_BYTES).catch((err: Error) => {
    throw /larger than/.test(err.message) ? new Error(`${file} is too large for a password`) : err;
  });
  const password = raw.replace(/\r?\n$/, '');
  if (password === '' || /[\r\n]/.test(password))
    throw new Error(`${file} must hold one password on one line`);
  return password;
}

/**
 * Reads the attached-databases file. The file itself must be private (0600, ours): a refusal of
 * the file throws. Each entry is parsed and its password files read; an entry that fails is
 * refused (with the reason) and the others still load. Names must be unique.
 */
export async function loadAttachedConfig(
  file: string,
): Promise<{ databases: AttachedDatabase[]; refused: AttachedRefusal[] }> {
  const raw = await readPrivateFile(file, 256 * 1024).catch((err: Error) => {
    throw /larger than/.test(err.message) ? new Error(`${file} is larger than 256 KiB`) : err;
  });
  const top = attachedFileSchema.safeParse(JSON.parse(raw));
  if (!top.success) throw new Error(`${file}: expected {"databases": [...]} (at most 100)`);
  const databases: AttachedDatabase[] = [];
  const refused: AttachedRefusal[] = [];
  const seen = new Set<string>();
  for (const [i, item] of top.data.databases.entries()) {
    const parsed = attachedEntrySchema.safeParse(item);
    const label =
      typeof (item as { name?: unknown })?.name === 'string'
        ? String((item as { name: string }).name).slice(0, 63)
        : `#${i}`;
    if (!parsed.success) {
      const where = parsed.error.issues
        .map((x) => `${x.path.join('.') || '(entry)'}: ${x.message}`)
        .join('; ');
      refused.push({ name: label, reason: `invalid entry: ${where}`.slice(0, 500) });
      continue;
    }
    const e = parsed.data;
    if (seen.has(e.name)) {
      refused.push({ name: e.name, reason: 'the name is listed twice' });
      continue;
    }
    seen.add(e.name);
    try {
      const [readerPassword, migratorPassword] = [
        await readSecret(e.reader.password_file),
        await readSecret(e.migrator.password_file),
      ];
      databases.push({
        ...e,
        reader: { user: e.reader.user, password: readerPassword },
        migrator: { user: e.migrator.user, password: migratorPassword },
      });
    } catch (err) {
      refused.push({ name: e.name, reason: (err as Error).message.slice(0, 500) });
    }
  }
  return { databases, refused };
}
