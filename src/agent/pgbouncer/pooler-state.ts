import fs from 'node:fs/promises';
import { isIPv4 } from 'node:net';
import { z } from 'zod';
import { parseCidr } from '../../shared/cidr.ts';
import { allowlistEntrySchema, databaseNameSchema, verifierSchema } from '../../shared/contracts/jobs.ts';

/**
 * A just-in-time login of the database (issue 14): in PgBouncer's auth file with its verifier and
 * in the hba file under the database's allowlist, until `valid_until` (dropped at that instant).
 */
const accessLoginSchema = z.object({
  login: databaseNameSchema,
  verifier: verifierSchema,
  valid_until: z.iso.datetime({ offset: true }),
  grant_id: z.uuid(),
});
export type PoolerAccessLogin = z.infer<typeof accessLoginSchema>;

/** At most this many live just-in-time logins per database. */
export const MAX_ACCESS_LOGINS = 50;

/**
 * The pooler's desired state, owned by the agent (`<stateDir>/pooler-state.json`): per tenant
 * database its owner role, the owner's SCRAM verifier, the CIDR allowlist and the live
 * just-in-time logins (absent in states written before they existed). The agent renders
 * PgBouncer's files from this and nothing else.
 */
const databaseSchema = z.object({
  name: databaseNameSchema,
  owner: databaseNameSchema,
  verifier: verifierSchema,
  allowlist: z.array(allowlistEntrySchema).max(100),
  access: z.array(accessLoginSchema).max(MAX_ACCESS_LOGINS).optional(),
});
export const poolerStateSchema = z.object({
  version: z.literal(1),
  databases: z.record(z.string(), databaseSchema),
});
export type PoolerDatabase = z.infer<typeof databaseSchema>;
export type AllowlistEntry = PoolerDatabase['allowlist'][number];
export type PoolerState = z.infer<typeof poolerStateSchema>;

export const emptyPoolerState = (): PoolerState => ({ version: 1, databases: {} });

export async function readPoolerState(file: string): Promise<PoolerState> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return emptyPoolerState();
    throw err;
  }
  return poolerStateSchema.parse(JSON.parse(text));
}

const expiry = (e: { expires_at: string | null }) =>
  e.expires_at === null ? Number.POSITIVE_INFINITY : Date.parse(e.expires_at);

/**
 * Normalises an allowlist: CIDRs canonical, expired entries dropped, duplicates merged
 * (the later expiry wins; null = never expires).
 */
export function normaliseAllowlist(
  entries: readonly { cidr: string; expires_at: string | null }[],
  now: number,
): { cidr: string; expires_at: string | null }[] {
  const byCidr = new Map<string, { cidr: string; expires_at: string | null }>();
  for (const e of entries) {
    if (expiry(e) <= now) continue;
    const cidr = parseCidr(e.cidr);
    const prev = byCidr.get(cidr);
    if (!prev || expiry(e) > expiry(prev)) {
      byCidr.set(cidr, {
        cidr,
        expires_at: e.expires_at === null ? null : new Date(expiry(e)).toISOString(),
      });
    }
  }
  return [...byCidr.values()];
}

const loginExpiry = (l: { valid_until: string }) => Date.parse(l.valid_until);

/**
 * The state without expired allowlist entries and just-in-time logins (same object when nothing
 * expired).
 */
export function pruneExpired(state: PoolerState, now: number): PoolerState {
  let any = false;
  for (const key in state.databases) {
    const db = state.databases[key]!;
    for (const e of db.allowlist) {
      if (e.expires_at !== null && Date.parse(e.expires_at) <= now) any = true;
    }
    for (const l of db.access ?? []) if (!(loginExpiry(l) > now)) any = true;
  }
  if (!any) return state;
  let changed = false;
  const databases: Record<string, PoolerDatabase> = {};
  for (const [name, db] of Object.entries(state.databases)) {
    const kept = db.allowlist.filter((e) => expiry(e) > now);
    const logins = db.access?.filter((l) => loginExpiry(l) > now);
    const sameLogins = logins === undefined || logins.length === db.access?.length;
    if (kept.length !== db.allowlist.length || !sameLogins) changed = true;
    databases[name] =
      kept.length === db.allowlist.length && sameLogins
        ? db
        : { ...db, allowlist: kept, ...(logins ? { access: logins } : {}) };
  }
  return changed ? { version: 1, databases } : state;
}

/** The earliest future expiry (allowlist entry or just-in-time login) in the state, or null. */
export function nextExpiry(state: PoolerState, now: number): number | null {
  let next: number | null = null;
  const consider = (t: number) => {
    if (t > now && Number.isFinite(t) && (next === null || t < next)) next = t;
  };
  for (const key in state.databases) {
    const db = state.databases[key]!;
    for (const e of db.allowlist) if (e.expires_at !== null) consider(expiry(e));
    for (const l of db.access ?? []) consider(loginExpiry(l));
  }
  return next;
}

/** True when 127.0.0.1 (the agent's proving login) is inside one of the CIDRs. */
export function coversLoopback(cidrs: readonly string[]): boolean {
  return cidrs.some((c) => {
    const [addr, bitsRaw] = c.split('/');
    if (!addr || !isIPv4(addr)) return false;
    const bits = Number(bitsRaw);
    const toInt = (a: string) => a.split('.').reduce((n, o) => n * 256 + Number(o), 0);
    const mask = bits === 0 ? 0 : 2 ** 32 - 2 ** (32 - bits);
    const net = (toInt(addr) & mask) >>> 0;
    return (toInt('127.0.0.1') & mask) >>> 0 === net;
  });
}
