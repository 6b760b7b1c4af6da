import type { Command } from 'commander';
import { CliError, EXIT, runCommand } from '../api-client.ts';
import { clientFromCredentials } from '../credentials.ts';
import { databaseNameArg } from '../options.ts';
import { formatTable, terminalSafe } from '../output.ts';

/** An attached database's last check by its agent, as `GET /v1/databases/<name>` gives it. */
export type AttachedCheck = {
  /** When an admin of the account accepted it; null: it waits and nothing runs on it. */
  accepted_at: string | null;
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
export function attachedLines(d: { name: string; node: string; attached: AttachedCheck | null }): string[] {
  const lines = [
    `attached  an existing database listed by node ${terminalSafe(d.node)}'s agent: Bulwark explores it`,
    '          and governs SQL on it; it does not manage, back up or move it',
  ];
  const c = d.attached;
  if (!c) return [...lines, 'checked   not yet'];
  lines.push(
    c.accepted_at
      ? `accepted  ${c.accepted_at.slice(0, 16).replace('T', ' ')}`
      : `accepted  no: offered by node ${terminalSafe(d.node)}, waiting for an owner or admin (bulwark db accept ${d.name})`,
  );
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

const print = (json: boolean | undefined, value: unknown, human: string) =>
  process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${human}\n`);

/**
 * `bulwark db accept` and `bulwark db reject`: a node offers an attached database, the account
 * decides (owners, admins, admin keys; others get the API's 403, exit 5). Both fail with the
 * server's 409 (exit 1) for a hosted database.
 */
export function registerDbAttached(db: Command): void {
  db.command('accept')
    .description('Accept an attached database its node offered to this account (then it is ready, or failed)')
    .argument('<name>', 'database name', databaseNameArg)
    .option('--json', 'machine-readable output')
    .action((name: string, o: { json?: boolean }) =>
      runCommand(o.json, async () => {
        const d = await clientFromCredentials().request<{
          name: string;
          status: string;
          node: string;
          failure_reason: string | null;
        }>('POST', `/v1/databases/${name}/attachment/accept`);
        const problem =
          d.status === 'failed' ? `: ${terminalSafe(d.failure_reason ?? 'refused by its checks')}` : '';
        print(
          o.json,
          d,
          `attached database ${d.name} accepted from node ${terminalSafe(d.node)}; it is ${d.status}${problem}`,
        );
      }),
    );

  db.command('reject')
    .description(
      'Reject an attached database (or drop an accepted one): gone from this account, its node may not offer it again; the database itself is not touched',
    )
    .argument('<name>', 'database name', databaseNameArg)
    .requiredOption('--confirm <name>', 'repeat the name to confirm')
    .option('--json', 'machine-readable output')
    .action((name: string, o: { confirm: string; json?: boolean }) =>
      runCommand(o.json, async () => {
        if (o.confirm !== name) throw new CliError('--confirm must repeat the database name', EXIT.usage);
        await clientFromCredentials().request('POST', `/v1/databases/${name}/attachment/reject`, {
          confirm: o.confirm,
        });
        print(
          o.json,
          { name, status: 'rejected' },
          `attached database ${name} rejected: it is no longer in this account`,
        );
      }),
    );
}
