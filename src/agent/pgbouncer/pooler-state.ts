import fs from 'node:fs/promises';
import { z } from 'zod';
import { parseCidr } from '../../shared/cidr.ts';
import { allowlistEntrySchema, databaseNameSchema, verifierSchema } from '../../shared/contracts/jobs.ts';

/**
 * The pooler's desired state, owned by the agent (`<stateDir>/pooler-state.json`): per tenant
 * database its owner role, the owner's SCRAM verifier and the CIDR allowlist. The agent renders
 * PgBouncer's files from this and nothing else.
 */
const databaseSchema = z.object({
  name: databaseNameSchema,
  owner: databaseNameSchema,
  verifier: verifierSchema,
  allowlist: z.array(allowlistEntrySchema).max(100),
});
export const poolerStateSchema = z.object({
  version: z.literal(1),
  databases: z.record(z.string(), databaseSchema),
});
export type PoolerDatabase = z.infer<typeof databaseSchema>;
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

/** The state without expired allowlist entries (same object when nothing expired). */
export function pruneExpired(state: PoolerState, now: number): PoolerState {
  let any = false;
  for (const key in state.databases) {
    for (const e of state.databases[key]!.allowlist) {
      if (e.expires_at !== null && Date.parse(e.expires_at) <= now) any = true;
    }
  }
  if (!any) return state;
  let changed = false;
  const databases: Record<string, PoolerDatabase> = {};
  for (const [name, db] of Object.entries(state.databases)) {
    const kept = db.allowlist.filter((e) => expiry(e) > now);
    if (kept.length !== db.allowlist.length) changed = true;
    databases[name] = kept.length === db.allowlist.length ? db : { ...db, allowlist: kept };
  }
  return changed ? { version: 1, databases } : state;
}

/** The earliest future expiry in the state, or null. */
export function nextExpiry(state: PoolerState, now: number): number | null {
  let next: number | null = null;
  for (const key in state.databases) {
    for (const e of state.databases[key]!.allowlist) {
      if (e.expires_at === null) continue;
      const t = expiry(e);
      if (t > now && Number.isFinite(t) && (next === null || t < next)) next = t;
    }
  }
  return next;
}
