/**
 * The attached databases this agent serves (ADR 0031), by the database id the server gave them:
 * the explorer and governed execution look a payload's `database_id` up here and, when found, log
 * in with the entry's own reader or migrator at the entry's host instead of the hosted roles.
 *
 * Only an entry whose role checks passed AND that the server answered `attached` (with an id) is
 * held. The entries carry passwords: nothing here is logged or serialised (`describe` gives the
 * safe part).
 */
import type { AttachedReportAnswer } from '../../shared/contracts/attached.ts';
import type { AttachedDatabase } from './attached-config.ts';

export type AttachedRegistry = {
  /** The entry the server registered under this id, or null (a hosted database, or unknown). */
  get(databaseId: string): AttachedDatabase | null;
  /**
   * Replaces what is held with the server's answer: `passed` are the entries whose checks passed;
   * an answer entry is matched by name and account. Returns the ids now held, by name.
   */
  apply(passed: readonly AttachedDatabase[], answer: AttachedReportAnswer): Map<string, string>;
  /** Name, account, host and port of each held database (no credentials), by id. */
  describe(): { database_id: string; name: string; account_id: string; host: string; port: number }[];
  size(): number;
};

export function createAttachedRegistry(): AttachedRegistry {
  let byId = new Map<string, AttachedDatabase>();
  return {
    get: (databaseId) => byId.get(databaseId) ?? null,
    apply(passed, answer) {
      const next = new Map<string, AttachedDatabase>();
      const confused = new Set<string>();
      for (const a of answer.databases) {
        if (a.status !== 'attached' || a.database_id === null) continue;
        const db = passed.find((d) => d.name === a.name && d.account_id === a.account_id);
        if (!db) continue;
        // An id given twice, or one entry given two ids, is a confused answer: not served.
        if (next.has(a.database_id) || [...next.values()].includes(db)) {
          confused.add(a.database_id);
          for (const [id, d] of next) if (d === db) confused.add(id);
        }
        next.set(a.database_id, db);
      }
      for (const id of confused) next.delete(id);
      const held = new Map<string, string>();
      for (const [id, db] of next) held.set(db.name, id);
      byId = next;
      return held;
    },
    describe: () =>
      [...byId].map(([database_id, d]) => ({
        database_id,
        name: d.name,
        account_id: d.account_id,
        host: d.host,
        port: d.port,
      })),
    size: () => byId.size,
  };
}
