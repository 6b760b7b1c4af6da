/**
 * `bulwark policy`: the account's governance policy as code (issue 14).
 *
 *   bulwark policy check <file>          validate locally only (no server needed)
 *   bulwark policy apply <file>          validate locally, then PUT /v1/policy (a new version)
 *   bulwark policy show [--json]         the active version and its file
 *   bulwark policy versions [--json]     the applied versions, newest first
 *   bulwark policy explain <db> <sql|->  what a request with this SQL would need, and which rule says so
 *
 * A file that does not validate prints one `file:line:column field: message` line per error on
 * stderr and exits 1 — locally, before anything is sent, with the same parser the server uses.
 */
import type { Command } from 'commander';
import { EXECUTION_LIMITS } from '../../shared/contracts/execution.ts';
import type { PolicyFileError } from '../../shared/policy/policy-file.ts';
import { ApiError, CliError, EXIT, runCommand } from '../api-client.ts';
import { clientFromCredentials } from '../credentials.ts';
import { databaseNameArg } from '../options.ts';
import { formatTable, terminalSafe } from '../output.ts';
import { withStepUp } from '../step-up.ts';
import { explainText, type Preflight } from './policy-explain.ts';
import { readBoundedText } from './read-input.ts';

type Author = { kind: 'user' | 'key'; id: string; name: string } | null;
type PolicyView = {
  version: number;
  source: string | null;
  source_sha256: string | null;
  applied_at: string | null;
  applied_by: Author;
  policy: unknown;
};
type Version = { version: number; source_sha256: string; applied_at: string; applied_by: Author };

const print = (json: boolean | undefined, value: unknown, human: string) =>
  process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${human}\n`);

const author = (a: Author) => (a ? `${a.name} (${a.kind})` : '-');
const when = (t: string | null) => (t ? t.slice(0, 19).replace('T', ' ') : '-');

/** The policy parser, loaded when a command needs it (it costs every other command nothing). */
const policyFile = () => import('../../shared/policy/policy-file.ts');

/**
 * A policy file that does not validate: `file:line:column field: message` lines under the error
 * (terminal-safe); with --json, the errors themselves in `details.errors`, as the API gives them.
 * Exit 1 (a 400 would be 2: this is not a usage error).
 */
class PolicyInvalid extends ApiError {
  override readonly exitCode: number = EXIT.error;
}

async function invalid(file: string, errors: readonly PolicyFileError[]): Promise<CliError> {
  const { formatPolicyErrors } = await policyFile();
  const n = errors.length;
  return new PolicyInvalid(
    400,
    'policy_invalid',
    `${file} is not a valid policy (${n} error${n === 1 ? '' : 's'})`,
    {
      details: { errors },
      context: formatPolicyErrors(file, errors).split('\n').map(terminalSafe).join('\n'),
    },
  );
}

async function readPolicy(file: string) {
  const { MAX_POLICY_BYTES, parsePolicyFile } = await policyFile();
  const source = await readBoundedText(file, MAX_POLICY_BYTES, file === '-' ? 'the policy' : file);
  const name = file === '-' ? '<stdin>' : file;
  const parsed = parsePolicyFile(source);
  if (!parsed.ok) throw await invalid(name, parsed.errors);
  return { source, name, policy: parsed.policy };
}

export function registerPolicy(program: Command): void {
  const policy = program
    .command('policy')
    .description('The governance policy as code: who may request what, and how many approvals it needs')
    .addHelpText(
      'after',
      '\nA policy file that does not validate prints `file:line:column field: message` per error and exits 1.' +
        '\nExample file and format: docs/examples/policy.yaml, docs/operations.md ("Governance policy").',
    );

  policy
    .command('check')
    .description('Validate a policy file locally (nothing is sent)')
    .argument('<file>', 'the YAML file, or - for stdin')
    .option('--json', 'machine-readable output')
    .action((file: string, o: { json?: boolean }) =>
      runCommand(o.json, async () => {
        const { name, policy: p } = await readPolicy(file);
        print(o.json, { ok: true, policy: p }, `${name}: valid`);
      }),
    );

  policy
    .command('apply')
    .description('Validate a policy file, then apply it as the next version (owners, admins, admin keys)')
    .argument('<file>', 'the YAML file, or - for stdin')
    .option('--json', 'machine-readable output')
    .action((file: string, o: { json?: boolean }) =>
      runCommand(o.json, async () => {
        const { source, name } = await readPolicy(file);
        const client = clientFromCredentials();
        let applied: PolicyView;
        try {
          applied = await withStepUp(client, () =>
            client.request<PolicyView>('PUT', '/v1/policy', { source }),
          );
        } catch (err) {
          // A server of another version may judge the file differently: its errors, the same way.
          const errors = (err as ApiError).details as { errors?: PolicyFileError[] } | undefined;
          if (err instanceof ApiError && err.code === 'policy_invalid' && Array.isArray(errors?.errors))
            throw await invalid(name, errors.errors);
          throw err;
        }
        print(
          o.json,
          applied,
          `applied ${name} as policy version ${applied.version} (sha256 ${applied.source_sha256 ?? '-'})`,
        );
      }),
    );

  policy
    .command('show')
    .description('The active policy: its version, who applied it, and the file')
    .option('--json', 'machine-readable output')
    .action((o: { json?: boolean }) =>
      runCommand(o.json, async () => {
        const p = await clientFromCredentials().request<PolicyView>('GET', '/v1/policy');
        if (o.json || p.version === 0) {
          print(o.json, p, 'no policy applied: the built-in rules decide');
          return;
        }
        const head = [
          `policy version ${p.version}, applied ${when(p.applied_at)} by ${terminalSafe(author(p.applied_by))}`,
          `sha256 ${p.source_sha256 ?? '-'}`,
        ];
        const body =
          p.source === null
            ? '(the file is not shown to a database-scoped caller; --json shows the rules for your databases)'
            : p.source
                .split('\n')
                .map((l) => terminalSafe(l))
                .join('\n');
        print(false, p, `${head.join('\n')}\n\n${body.trimEnd()}`);
      }),
    );

  policy
    .command('versions')
    .description('The applied policy versions, newest first')
    .option('--json', 'machine-readable output')
    .action((o: { json?: boolean }) =>
      runCommand(o.json, async () => {
        const r = await clientFromCredentials().request<{ items: Version[] }>(
          'GET',
          '/v1/policy/versions',
          undefined,
          {
            query: { limit: 100 },
          },
        );
        const rows = r.items.map((v) => ({
          version: v.version,
          applied: when(v.applied_at),
          by: terminalSafe(author(v.applied_by)),
          sha256: v.source_sha256.slice(0, 16),
        }));
        print(
          o.json,
          r,
          rows.length === 0
            ? 'no policy applied: the built-in rules decide'
            : formatTable(rows, [
                { key: 'version', title: 'version' },
                { key: 'applied', title: 'applied' },
                { key: 'by', title: 'by' },
                { key: 'sha256', title: 'sha256' },
              ]),
        );
      }),
    );

  policy
    .command('explain')
    .description(
      'What a request with this SQL would need on a database, and which rule of the policy decides',
    )
    .argument('<database>', 'database name', databaseNameArg)
    .argument('<sql>', 'the SQL, or - to read it from stdin')
    .option('--capability <role>', 'reader or migrator (default: by class)')
    .option('--json', 'machine-readable output')
    .action((db: string, sqlArg: string, o: { capability?: string; json?: boolean }) =>
      runCommand(o.json, async () => {
        if (o.capability !== undefined && o.capability !== 'reader' && o.capability !== 'migrator')
          throw new CliError('--capability must be reader or migrator', EXIT.usage);
        const sql =
          sqlArg === '-' ? await readBoundedText('-', EXECUTION_LIMITS.maxSqlLength * 3, 'the SQL') : sqlArg;
        if (sql.trim() === '') throw new CliError('the SQL is empty', EXIT.usage);
        if (sql.length > EXECUTION_LIMITS.maxSqlLength)
          throw new CliError(
            `the SQL is longer than ${EXECUTION_LIMITS.maxSqlLength} characters`,
            EXIT.usage,
          );
        const p = await clientFromCredentials().request<Preflight>(
          'POST',
          `/v1/databases/${db}/requests/preflight`,
          { sql, dry_run: false, ...(o.capability ? { capability: o.capability } : {}) },
          { timeoutMs: 60_000 },
        );
        print(o.json, p, explainText(db, p));
      }),
    );
}
