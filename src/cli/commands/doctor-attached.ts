/**
 * `bulwark doctor --attached FILE`: the checks of an agent's attached databases (ADR 0031), run on
 * the agent's host with its file — the credentials are read there and go nowhere else. Reports,
 * per entry, what it could check: the file's and password files' modes, each role's login, and
 * the roles' rights (the reader must not be able to write; superuser or owner roles are refused).
 */
import path from 'node:path';
import { type AttachedCheck, checkAttached } from '../../agent/attached/attached-check.ts';
import { type AttachedRefusal, loadAttachedConfig } from '../../agent/attached/attached-config.ts';

export type AttachedDoctor = { checks: AttachedCheck[]; refused: AttachedRefusal[] };

export async function doctorAttached(file: string): Promise<AttachedDoctor> {
  const { databases, refused } = await loadAttachedConfig(path.resolve(file));
  const checks: AttachedCheck[] = [];
  for (const db of databases) checks.push(await checkAttached(db));
  return { checks, refused };
}

export function attachedTable(d: AttachedDoctor): string {
  const lines: string[] = [];
  for (const c of d.checks) {
    const refusals = c.findings.filter((f) => f.severity === 'refuse').length;
    const warnings = c.findings.length - refusals;
    lines.push(
      `attached ${c.name}: ${c.ok ? 'ok' : 'REFUSED'}${c.server_version ? ` (PostgreSQL ${c.server_version})` : ''}` +
        `${refusals ? ` · ${refusals} refusal(s)` : ''}${warnings ? ` · ${warnings} warning(s)` : ''}`,
    );
    for (const f of c.findings)
      lines.push(
        `  ${f.severity.padEnd(6)}  ${f.role.padEnd(8)}  ${f.kind.padEnd(16)}  ${f.object}  ${f.detail}`,
      );
  }
  for (const r of d.refused) lines.push(`attached ${r.name}: NOT LOADED — ${r.reason}`);
  if (!d.checks.length && !d.refused.length) lines.push('no attached database listed');
  return `${lines.join('\n')}\n`;
}
