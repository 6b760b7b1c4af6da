/**
 * The agent's attached databases at start (ADR 0031): the file loaded (refused unless 0600 and
 * the agent's), each entry's roles checked, and what was refused logged — names, role names and
 * findings only, never a password. Only the entries that passed are kept. A refused file is logged
 * and leaves the agent running without attached databases (hosted ones are unaffected).
 */
import type { Logger } from 'pino';
import { type AttachedCheck, checkAttached } from './attached-check.ts';
import { type AttachedDatabase, loadAttachedConfig } from './attached-config.ts';

export type AttachedStart = {
  /** The entries whose checks passed (the only ones ever queried). */
  databases: AttachedDatabase[];
  /** Every loaded entry's check, in file order (reported to the server, passed or not). */
  checks: AttachedCheck[];
  /** Every loaded entry (the config loader's refusals excluded), in the order of `checks`. */
  entries: AttachedDatabase[];
  /**
   * The file itself was refused (unreadable, not 0600, not JSON…): nothing is known about its
   * entries, which is not the same as an empty list — it must not be reported (that would detach
   * every accepted database of the node until the file is mended and they are accepted again).
   */
  fileRefused?: true;
};

export async function startAttached(file: string, log: Logger): Promise<AttachedStart> {
  let loaded: Awaited<ReturnType<typeof loadAttachedConfig>>;
  try {
    loaded = await loadAttachedConfig(file);
  } catch (err) {
    log.error({ err: { message: (err as Error).message } }, 'attached databases file refused; none attached');
    return { databases: [], checks: [], entries: [], fileRefused: true };
  }
  for (const r of loaded.refused)
    log.error({ attached: r.name, reason: r.reason }, 'attached database refused');
  const databases: AttachedDatabase[] = [];
  const checks: AttachedCheck[] = [];
  for (const db of loaded.databases) {
    const check = await checkAttached(db);
    checks.push(check);
    const findings = check.findings.map((f) => ({
      role: f.role,
      severity: f.severity,
      kind: f.kind,
      object: f.object,
    }));
    if (check.ok) {
      databases.push(db);
      log.info({ attached: db.name, host: db.host, port: db.port, findings }, 'attached database checked');
    } else {
      log.error(
        { attached: db.name, host: db.host, port: db.port, findings },
        'attached database refused by its checks',
      );
    }
  }
  return { databases, checks, entries: loaded.databases };
}
