/**
 * The human text of `bulwark policy explain` and of a request's classification: the class, the
 * review findings, and the policy's decision (which rule, why, how many approvals). Everything the
 * server sent is made terminal-safe.
 */
import { terminalSafe } from '../output.ts';

export type Classification = {
  class: string;
  statements: { class: string; command?: string; reasons: string[] }[];
  reasons: string[];
  parse_error: { message: string; position: number | null } | null;
};
export type Finding = { code: string; severity: 'warn' | 'block'; message: string; statement_index: number };
export type PolicyDecision = {
  version: number;
  rule: string;
  why: string;
  environment: string | null;
  approvals_required: number;
  admin_approvals_required: number;
  allowed?: boolean;
};
export type Preflight = {
  classification: Classification;
  findings: Finding[];
  policy: PolicyDecision & { allowed: boolean };
  dry_run: { affected_rows: number } | null;
  dry_run_error: { sqlstate: string; message: string } | null;
};

const t = terminalSafe;

const NODE_NAMES: Readonly<Record<string, string>> = {
  CreateStmt: 'CREATE TABLE',
  IndexStmt: 'CREATE INDEX',
  ViewStmt: 'CREATE VIEW',
  VariableSetStmt: 'SET',
};

/** A statement's parse-tree node as SQL words: `UpdateStmt` → `UPDATE`, `AlterTableStmt` → `ALTER TABLE`. */
export function commandName(node: string): string {
  return (
    NODE_NAMES[node] ??
    node
      .replace(/Stmt$/, '')
      .replace(/([a-z])([A-Z])/g, '$1 $2')
      .toUpperCase()
  );
}

/** `write (UPDATE)`, `ddl (CREATE TABLE, ALTER TABLE)`. */
export function classLine(c: Classification): string {
  const commands = [
    ...new Set(c.statements.map((s) => (s.command ? commandName(s.command) : '')).filter((x) => x !== '')),
  ];
  return `${t(c.class)}${commands.length ? ` (${commands.map(t).join(', ')})` : ''}`;
}

export function findingLines(findings: readonly Finding[]): string[] {
  return findings.map(
    (f) =>
      `  ${f.severity === 'block' ? 'BLOCK' : 'warn '} ${t(f.code)} (statement ${f.statement_index + 1}): ${t(f.message)}`,
  );
}

export function approvalsText(p: PolicyDecision): string {
  if (p.approvals_required === 0) return 'none: it runs without approval';
  const admins =
    p.admin_approvals_required > 0 ? `, ${p.admin_approvals_required} of them by an owner or admin` : '';
  return `${p.approvals_required}${admins}, never the requester's own`;
}

export function explainText(database: string, p: Preflight): string {
  const c = p.classification;
  const lines = [`database: ${t(database)}`, `class:    ${classLine(c)}`];
  if (c.parse_error) lines.push(`parse error: ${t(c.parse_error.message)} (never approved automatically)`);
  for (const r of c.reasons.slice(0, 10)) lines.push(`  - ${t(r)}`);
  if (p.findings.length > 0) lines.push('findings:', ...findingLines(p.findings));
  const blocked = p.findings.some((f) => f.severity === 'block');
  const pol = p.policy;
  lines.push(
    `policy:   ${pol.version === 0 ? 'none applied (built-in rules)' : `version ${pol.version}`}${
      pol.environment ? `, environment ${t(pol.environment)}` : ''
    }`,
    `rule:     ${t(pol.rule)}`,
    `why:      ${t(pol.why)}`,
    `approvals needed: ${approvalsText(pol)}`,
  );
  if (c.class === 'refused') lines.push('verdict:  refused: no request can run this SQL');
  else if (!pol.allowed) lines.push('verdict:  you may not request this');
  else if (blocked) lines.push('verdict:  a blocking finding: it cannot be approved as written');
  else lines.push('verdict:  you may request it');
  return lines.join('\n');
}
