import { parseCidr } from '../../../shared/cidr.ts';
import { badRequest } from '../../../shared/errors.ts';
import type { StoredAllowlistEntry } from './databases.repo.ts';

/**
 * The rules of an allowlist, shared by the whole-list update and the per-entry edits:
 * what an entry may be, how a list is normalised, which entries are live.
 */

export type AllowlistInput = { cidr: string; expires_at?: string | undefined; note?: string | undefined };

/** Entries that have not expired, for the API and for the agent (which also drops them itself). */
export function liveEntries(entries: StoredAllowlistEntry[], now = Date.now()): StoredAllowlistEntry[] {
  return entries.filter((e) => e.expires_at === null || Date.parse(e.expires_at) > now);
}

export const toPayloadAllowlist = (entries: StoredAllowlistEntry[]) =>
  liveEntries(entries).map((e) => ({ cidr: e.cidr, expires_at: e.expires_at }));

/** The allowlist every new database starts with: the server's `defaultAllowlist`, canonical CIDRs. */
export const defaultAllowlist = (config: { defaultAllowlist: readonly string[] }): StoredAllowlistEntry[] =>
  config.defaultAllowlist.map((c) => ({ cidr: parseCidr(c), expires_at: null, note: 'default' }));

/**
 * Validates and normalises one entry (CIDR parsed and lower-cased, expiry a future instant);
 * `at` names it in errors: `entries[3].` in a whole list, nothing for a single entry.
 */
export function normaliseEntry(e: AllowlistInput, at: string, now: number): StoredAllowlistEntry {
  let cidr: string;
  try {
    cidr = parseCidr(e.cidr);
  } catch {
    throw badRequest(`${at}cidr is not an IPv4 or IPv6 CIDR`);
  }
  let expires: string | null = null;
  if (e.expires_at !== undefined) {
    const t = Date.parse(e.expires_at);
    if (!Number.isFinite(t)) throw badRequest(`${at}expires_at is not a date`);
    if (t <= now) throw badRequest(`${at}expires_at must be in the future`);
    expires = new Date(t).toISOString();
  }
  return { cidr, expires_at: expires, note: e.note ?? null };
}

/** Validates, normalises and de-duplicates (the longest-lived entry for a CIDR wins). */
export function normaliseAllowlist(input: AllowlistInput[], now = Date.now()): StoredAllowlistEntry[] {
  const byCidr = new Map<string, StoredAllowlistEntry>();
  for (const [i, e] of input.entries()) {
    const entry = normaliseEntry(e, `entries[${i}].`, now);
    const seen = byCidr.get(entry.cidr);
    if (
      !seen ||
      (seen.expires_at !== null &&
        (entry.expires_at === null || Date.parse(entry.expires_at) > Date.parse(seen.expires_at)))
    ) {
      byCidr.set(entry.cidr, entry);
    }
  }
  return [...byCidr.values()];
}

export const sameAllowlist = (a: StoredAllowlistEntry[], b: StoredAllowlistEntry[]) =>
  a.length === b.length &&
  a.every((e, i) => e.cidr === b[i]?.cidr && e.expires_at === b[i]?.expires_at && e.note === b[i]?.note);
