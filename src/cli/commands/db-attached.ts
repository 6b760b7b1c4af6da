import { formatTable, terminalSafe } from '../output.ts';

/** An attached database's last check by its agent, as `GET /v1/databases/<name>` gives it. */
export type AttachedCheck = {
  checked_at: string;
  server_version: string | null;
  findings: { role: string; severity: string; kind: string; object: string; detail: string }[];
};

const FINDING_COLUMNS = [
  { key: 'severity', title: 'severity' },
  { key: 'role', title: 'role' },
  { key: 'kind', title: 'finding' },
  { key: 'object', title: 'object' },
  { key: 'detail', title: 'detail' },
];

/**
 * What `bulwark db show` prints under an attached database's row instead of its connection: what
 * Bulwark does with it and the agent's last check (the findings come from the agent's host, so
 * they are made terminal-safe).
 */
export function attachedLines(d: { node: string; attached: AttachedCheck | null }): string[] {
  const lines = [
    `attached  an existing database listed by node ${terminalSafe(d.node)}'s agent: Bulwark explores it`,
    '          and governs SQL on it; it does not manage, back up or move it',
  ];
  const c = d.attached;
  if (!c) return [...lines, 'checked   not yet'];
  const version = c.server_version ? ` (PostgreSQL ${terminalSafe(c.server_version)})` : '';
  lines.push(`checked   ${c.checked_at.slice(0, 16).replace('T', ' ')}${version}`);
  if (c.findings.length === 0) return [...lines, 'findings  none'];
  const rows = c.findings.map((f) => ({
    severity: terminalSafe(f.severity),
    role: terminalSafe(f.role),
    kind: terminalSafe(f.kind),
    object: terminalSafe(f.object),
    detail: terminalSafe(f.detail),
  }));
  return [...lines, 'findings', formatTable(rows, FINDING_COLUMNS)];
}
