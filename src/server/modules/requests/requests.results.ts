/**
 * Results of executed requests (issue 14): kept for a lifetime (default 24 h), readable only by the
 * requester and the approvers (checked by the service), then deleted.
 *
 * At rest they are sealed with the server's secret box (AES-256-GCM, context
 * `request-result:<request id>`: a sealed value moved to another request does not open). A server
 * without a master keyring never writes rows in the clear: it keeps results in this process's
 * memory only (lost at restart, invisible to other replicas), and says so in its log.
 */
import type { Logger } from 'pino';
import type { SecretBox } from '../../crypto/secret-box.ts';
import type { Db, Queryable } from '../../db/pool.ts';
import * as deliveries from './requests.deliveries.repo.ts';
import type { RequestResult } from './requests.schemas.ts';

export const DEFAULT_RESULT_LIFETIME_S = 24 * 3600;
const resultContext = (requestId: string) => `request-result:${requestId}`;

type Stored = Omit<RequestResult, 'expires_at' | 'executed_at'>;

export function createResultStore(deps: {
  db: Db;
  box: SecretBox | null;
  log: Logger;
  lifetimeS?: number;
  sweepMs?: number;
}) {
  const lifetimeS = deps.lifetimeS ?? DEFAULT_RESULT_LIFETIME_S;
  const memory = new Map<string, { value: Stored; executedAt: Date; expiresAt: Date }>();
  if (!deps.box)
    deps.log.warn(
      'no master key file: request results are kept in this process memory only (not sealed at rest)',
    );

  const sweep = async () => {
    const now = Date.now();
    for (const [id, r] of memory) if (r.expiresAt.getTime() <= now) memory.delete(id);
    try {
      for (let i = 0; i < 10; i++) if ((await deliveries.deleteExpiredResults(deps.db, 500)) < 500) break;
    } catch (err) {
      deps.log.warn({ err: { message: (err as Error).message } }, 'request results sweep failed');
    }
  };
  const timer = setInterval(() => void sweep(), deps.sweepMs ?? 60_000);
  timer.unref();

  return {
    /** Keeps a result in `tx` (sealed), or in memory without a keyring. Returns when it expires. */
    async put(tx: Queryable, requestId: string, value: Stored, executedAt: Date): Promise<Date> {
      if (!deps.box) {
        const expiresAt = new Date(Date.now() + lifetimeS * 1000);
        memory.set(requestId, { value, executedAt, expiresAt });
        return expiresAt;
      }
      const sealed = deps.box.seal(JSON.stringify(value), resultContext(requestId));
      return deliveries.putResult(tx, requestId, sealed, executedAt, lifetimeS);
    },

    async get(q: Queryable, requestId: string): Promise<RequestResult | null> {
      if (!deps.box) {
        const m = memory.get(requestId);
        if (!m || m.expiresAt.getTime() <= Date.now()) return null;
        return { ...m.value, executed_at: m.executedAt.toISOString(), expires_at: m.expiresAt.toISOString() };
      }
      const row = await deliveries.findResult(q, requestId);
      if (!row) return null;
      const value = JSON.parse(deps.box.open(row.sealed, resultContext(requestId))) as Stored;
      return {
        ...value,
        executed_at: row.executed_at.toISOString(),
        expires_at: row.expires_at.toISOString(),
      };
    },

    /** When an in-memory result expires (null: none here). */
    inMemory(requestId: string): Date | null {
      const m = memory.get(requestId);
      return m && m.expiresAt.getTime() > Date.now() ? m.expiresAt : null;
    },

    sweep,
    close() {
      clearInterval(timer);
    },
  };
}

export type ResultStore = ReturnType<typeof createResultStore>;
