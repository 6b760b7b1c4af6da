/**
 * Kept execution logins: a SCRAM login as `<db>_reader` / `<db>_migrator` costs ~9 ms here (a new
 * backend and the handshake) against ~0.6 ms for a transaction on an open connection, so a session
 * that ended cleanly is kept for the next execution of the same database and role — after the
 * explorer's reset (explorer-pools.ts): DISCARD ALL, then a check that nothing of the session
 * survived (prepared statements, advisory locks, LISTEN, cursors, temporary tables), that it still
 * is the role it logged in as, in no transaction. Anything odd, any failure, any cancel: the
 * connection is closed, never kept. At most two per database and role, closed after 30 s idle.
 *
 * What a tenant's code ran on the session (its functions run as the reader or migrator) is undone
 * by DISCARD ALL: settings (`set_config(…, false)` included) return to the values pinned at login,
 * the role to the login's own.
 */
import { randomInt } from 'node:crypto';
import type { Logger } from 'pino';
import { LEFTOVERS } from '../explorer/explorer-pools.ts';
import type { ExecutionSession } from './execution-session.ts';

const MAX_IDLE_PER_KEY = 2;
const IDLE_MS = 30_000;
const WIRE = 64 * 1024;

type Idle = { session: ExecutionSession; timer: NodeJS.Timeout };

export type ExecutionPool = {
  /** A kept session of this database and role, with this request's timeouts set; null when none. */
  take(key: string, timeouts: { statementMs: number; lockMs: number }): Promise<ExecutionSession | null>;
  /** Resets and keeps the session (or closes it when it is not clean or the pool closed). Never rejects. */
  give(key: string, role: string, session: ExecutionSession, clean: boolean): Promise<void>;
  close(): Promise<void>;
};

export function createExecutionPool(log: Logger): ExecutionPool {
  const idle = new Map<string, Idle[]>();
  /** Resets running now: close() waits for them (a reset finishing after it must not keep a login). */
  const resetting = new Set<Promise<void>>();
  let closed = false;

  const drop = (key: string, entry: Idle) => {
    const list = idle.get(key);
    const i = list?.indexOf(entry) ?? -1;
    if (list && i >= 0) list.splice(i, 1);
    if (list?.length === 0) idle.delete(key);
  };

  /** Into the idle list, or closed (the pool closed meanwhile, or the list is full). */
  const keep = async (key: string, session: ExecutionSession): Promise<void> => {
    const list = idle.get(key) ?? [];
    if (closed || list.length >= MAX_IDLE_PER_KEY) return session.close();
    const entry: Idle = {
      session,
      timer: setTimeout(() => {
        drop(key, entry);
        void session.close();
      }, IDLE_MS),
    };
    entry.timer.unref();
    list.push(entry);
    idle.set(key, list);
  };

  const reset = async (key: string, role: string, session: ExecutionSession, clean: boolean) => {
    if (!clean || closed) return session.close();
    try {
      await session.run('DISCARD ALL', WIRE);
      // DISCARD ALL leaves random()'s generator as the last execution left it (setseed): a secret
      // seed, so what one execution seeded cannot be predicted by the next.
      const seed = (randomInt(0, 2 ** 47) / 2 ** 46 - 1).toFixed(15);
      await session.run(`SELECT pg_catalog.setseed(${seed})`, WIRE);
      const check = await session.run(LEFTOVERS, WIRE);
      const [leftovers, cur, sess, noXact] = (check.rows[0] ?? []) as unknown[];
      if (String(leftovers) !== '0' || cur !== role || sess !== role || !/^(t|true)$/.test(String(noXact))) {
        log.warn({ role }, 'execution session state survived DISCARD ALL; connection closed');
        return session.close();
      }
    } catch {
      return session.close();
    }
    return keep(key, session);
  };

  return {
    async take(key, timeouts) {
      for (;;) {
        const entry = idle.get(key)?.pop();
        if (!entry) return null;
        clearTimeout(entry.timer);
        if (idle.get(key)?.length === 0) idle.delete(key);
        const statementMs = Math.trunc(timeouts.statementMs);
        const lockMs = Math.trunc(timeouts.lockMs);
        if (!Number.isSafeInteger(statementMs) || !Number.isSafeInteger(lockMs)) {
          await entry.session.close();
          return null;
        }
        try {
          // Integers only (checked above): this request's timeouts, reset by DISCARD ALL when given back.
          await entry.session.run(
            `SELECT pg_catalog.set_config('statement_timeout', '${statementMs}', false),
                    pg_catalog.set_config('lock_timeout', '${lockMs}', false)`,
            WIRE,
          );
          return entry.session;
        } catch {
          await entry.session.close(); // a dead kept connection: try the next one, or log in
        }
      }
    },

    give(key, role, session, clean) {
      const running = reset(key, role, session, clean).catch(() => session.close());
      resetting.add(running);
      return running.finally(() => resetting.delete(running));
    },

    async close() {
      closed = true;
      await Promise.allSettled([...resetting]);
      const all = [...idle.values()].flat();
      idle.clear();
      for (const e of all) clearTimeout(e.timer);
      await Promise.all(all.map((e) => e.session.close()));
    },
  };
}
