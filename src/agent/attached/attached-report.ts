/**
 * The agent's report of its attached databases to the server (ADR 0031; contract in
 * shared/contracts/attached.ts): every entry the config file loaded, passed or not, with the role
 * checks' findings — never a host credential, a password or a password file's path. The server
 * answers which it registered (with an id) and which it refused; the registered ones that passed
 * their checks go into the registry, where the explorer and governed execution find them.
 *
 * Sent after each round of checks (at start, then every BULWARK_AGENT_ATTACHED_RECHECK_SECONDS), and retried with bounded backoff (1 s doubling to
 * 60 s) until the server answers 2xx or the agent stops. A 404 is an older server without the
 * route: reported once as a warning, not retried (the attached databases are then not served).
 */
import type { Logger } from 'pino';
import {
  type AttachedReport,
  type AttachedReportAnswer,
  attachedReportAnswerSchema,
  MAX_ATTACHED,
} from '../../shared/contracts/attached.ts';
import { ServerError } from '../server-client.ts';
import type { AttachedCheck } from './attached-check.ts';
import type { AttachedDatabase } from './attached-config.ts';
import type { AttachedRegistry } from './attached-registry.ts';
import type { AttachedStart } from './attached-startup.ts';

const MAX_FINDINGS = 200;

/** The report for what `startAttached` loaded and checked (bounded as the contract says). */
export function buildAttachedReport(start: Pick<AttachedStart, 'checks' | 'entries'>): AttachedReport {
  const byName = new Map<string, AttachedDatabase>(start.entries.map((e) => [e.name, e]));
  const databases: AttachedReport['databases'] = [];
  for (const check of start.checks) {
    const entry = byName.get(check.name);
    if (!entry) continue;
    databases.push(entryOf(check, entry.account_id));
    if (databases.length >= MAX_ATTACHED) break;
  }
  return { databases };
}

function entryOf(check: AttachedCheck, accountId: string): AttachedReport['databases'][number] {
  return {
    name: check.name,
    account_id: accountId,
    ok: check.ok,
    server_version: check.server_version === null ? null : check.server_version.slice(0, 256),
    findings: check.findings.slice(0, MAX_FINDINGS).map((f) => ({
      role: f.role,
      severity: f.severity,
      kind: f.kind.slice(0, 64),
      object: f.object.slice(0, 200),
      detail: f.detail.slice(0, 1000),
    })),
  };
}

export type AttachedReportDeps = {
  send(report: AttachedReport, signal: AbortSignal): Promise<unknown>;
  registry: AttachedRegistry;
  log: Logger;
  /** Aborted when the agent stops: no more attempts. */
  signal: AbortSignal;
  /** First and longest wait between attempts (defaults 1 s and 60 s). */
  minBackoffMs?: number;
  maxBackoffMs?: number;
};

const wait = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });

/**
 * Sends the report until the server takes it, then fills the registry from the answer. Resolves
 * with the answer, or null (the agent stopped, or the server has no such route). Never rejects.
 */
export async function reportAttached(
  start: Pick<AttachedStart, 'checks' | 'entries' | 'databases'>,
  deps: AttachedReportDeps,
): Promise<AttachedReportAnswer | null> {
  const { log, signal } = deps;
  const report = buildAttachedReport(start);
  const max = deps.maxBackoffMs ?? 60_000;
  let backoff = deps.minBackoffMs ?? 1_000;
  for (let attempt = 1; !signal.aborted; attempt++) {
    try {
      const answer = attachedReportAnswerSchema.parse(await deps.send(report, signal));
      const held = deps.registry.apply(start.databases, answer);
      for (const a of answer.databases) {
        if (a.status === 'refused')
          log.error({ attached: a.name, reason: a.reason }, 'attached database refused by the server');
        else if (held.get(a.name) === a.database_id)
          log.info({ attached: a.name, database_id: a.database_id }, 'attached database registered');
      }
      log.info(
        { reported: report.databases.length, served: held.size, attempts: attempt },
        'attached databases reported',
      );
      return answer;
    } catch (err) {
      if (signal.aborted) break;
      if (err instanceof ServerError && err.status === 404) {
        log.warn(
          { err: { message: err.message } },
          'the server does not take attached-database reports (older version): none are served',
        );
        return null;
      }
      log.warn(
        { err: { message: (err as Error).message.slice(0, 500) }, attempt, retry_in_ms: backoff },
        'attached databases report failed; retrying',
      );
      await wait(backoff, signal);
      backoff = Math.min(backoff * 2, max);
    }
  }
  return null;
}
