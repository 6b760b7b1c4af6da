import { readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';

/**
 * PostgreSQL and PgBouncer refuse to run as root. When Bulwark itself runs as root, the
 * processes it supervises run as an unprivileged system user (`postgres`, created by the
 * distribution package) and the files they read are owned by that user.
 */
export type ServiceUser = { name: string; uid: number; gid: number; home: string };

export function lookupUser(name: string): ServiceUser | null {
  const passwd = readFileSync('/etc/passwd', 'utf8');
  for (const line of passwd.split('\n')) {
    const f = line.split(':');
    if (f[0] === name && f.length >= 7) {
      return { name, uid: Number(f[2]), gid: Number(f[3]), home: f[5] ?? '/' };
    }
  }
  return null;
}

/** The user the data-plane services run as: null when we are not root (run as ourselves). */
export function resolveServiceUser(name = 'postgres'): ServiceUser | null {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return null;
  const user = lookupUser(name);
  if (!user) {
    throw new Error(
      `running as root, but the system user "${name}" does not exist (postgres comes with the postgresql package; BULWARK_SERVICE_USER names another)`,
    );
  }
  return user;
}

/** Makes a path owned by the service user (no-op when not root). */
export async function chownToService(p: string, user: ServiceUser | null): Promise<void> {
  if (user) await fs.chown(p, user.uid, user.gid);
}

/**
 * The service user must be able to traverse every ancestor of the data directory. When run
 * as root, missing search (x) bits for "others" are added to the ancestors — traverse only,
 * never read — and each change is reported.
 */
export async function ensureTraversable(dir: string, user: ServiceUser | null): Promise<string[]> {
  if (!user) return [];
  const changed: string[] = [];
  let cur = path.resolve(dir);
  const chain: string[] = [];
  while (true) {
    chain.push(cur);
    const parent = path.dirname(cur);
    if (parent === cur) break;
    cur = parent;
  }
  for (const p of chain.slice(1)) {
    const st = await fs.stat(p);
    const ownerOk = st.uid === user.uid && (st.mode & 0o100) !== 0;
    const groupOk = st.gid === user.gid && (st.mode & 0o010) !== 0;
    if (!ownerOk && !groupOk && (st.mode & 0o001) === 0) {
      await fs.chmod(p, st.mode | 0o001);
      changed.push(p);
    }
  }
  return changed;
}
