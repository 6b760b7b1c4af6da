import pg from 'pg';
import { type AuditEventDraft, recordAudit } from '../server/modules/audit/audit.service.ts';
import type { SupervisorEvent } from './supervisor.ts';

const ACTIONS: Record<SupervisorEvent['kind'], string> = {
  crashed: 'supervisor.process_crashed',
  restart_failed: 'supervisor.process_restart_failed',
  restarted: 'supervisor.process_restarted',
  gave_up: 'supervisor.process_abandoned',
};

/** The audit event for one supervisor event (actor: the system; target: the process by name). */
export function supervisorAuditEvent(e: SupervisorEvent, at: Date): AuditEventDraft {
  const details: Record<string, unknown> = { process: e.name };
  switch (e.kind) {
    case 'crashed':
      Object.assign(details, {
        exit_code: e.exit.code,
        signal: e.exit.signal,
        uptime_ms: e.uptimeMs,
        crashes_in_window: e.crashesInWindow,
        restart_in_ms: e.restartInMs,
      });
      break;
    case 'restart_failed':
      Object.assign(details, {
        error: e.error,
        crashes_in_window: e.crashesInWindow,
        restart_in_ms: e.restartInMs,
      });
      break;
    case 'restarted':
      Object.assign(details, { pid: e.pid ?? null, restarts: e.restarts, down_ms: e.downMs });
      break;
    case 'gave_up':
      Object.assign(details, { crashes_in_window: e.crashesInWindow, window_ms: e.windowMs });
      break;
  }
  return {
    action: ACTIONS[e.kind],
    actorType: 'system',
    outcome: e.kind === 'restarted' ? 'success' : 'failure',
    targetType: 'process',
    targetId: e.name,
    details,
    occurredAt: at.toISOString(),
  };
}

const MAX_PENDING = 1_000;

/**
 * Writes supervisor events to the control database's audit log. An event that cannot be
 * written now (PostgreSQL itself is down or restarting) is kept, in order, and written with
 * its original time once the database answers again; beyond 1,000 pending the oldest are
 * dropped and the count of dropped events is reported with the next one written.
 */
export function createSupervisorAudit(controlUrl: string, warn: (msg: string) => void) {
  const pool = new pg.Pool({
    connectionString: controlUrl,
    max: 1,
    idleTimeoutMillis: 10_000,
    connectionTimeoutMillis: 5_000,
    application_name: 'bulwark-up',
  });
  // An idle connection cut by a PostgreSQL restart must not crash the supervisor.
  pool.on('error', () => {});
  const pending: AuditEventDraft[] = [];
  let dropped = 0;
  let chain: Promise<void> = Promise.resolve();
  let warned = false;

  const flushOnce = async () => {
    while (pending.length > 0) {
      const e = pending[0] as AuditEventDraft;
      const event = dropped > 0 ? { ...e, details: { ...e.details, earlier_events_dropped: dropped } } : e;
      try {
        // One INSERT: its own transaction, committed on its own (nothing else to roll back).
        await recordAudit(pool, event);
      } catch (err) {
        if (!warned) warn(`could not write an audit event yet (kept for later): ${(err as Error).message}`);
        warned = true;
        return;
      }
      warned = false;
      dropped = 0;
      pending.shift();
    }
  };
  // One writer at a time, in order; each call writes everything pending when its turn comes.
  const flush = (): Promise<void> => {
    chain = chain.then(flushOnce);
    return chain;
  };

  return {
    record(e: SupervisorEvent): Promise<void> {
      pending.push(supervisorAuditEvent(e, new Date()));
      if (pending.length > MAX_PENDING) {
        pending.shift();
        dropped += 1;
      }
      return flush();
    },
    /** Tries to write what is pending (e.g. once PostgreSQL is back). */
    flush,
    async close(): Promise<void> {
      await flush().catch(() => {});
      await pool.end().catch(() => {});
    },
  };
}
