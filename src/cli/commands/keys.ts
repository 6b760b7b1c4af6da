import { type Command, InvalidArgumentError } from 'commander';
import { NAME_PATTERN } from '../../shared/identifiers.ts';
import { runCommand } from '../api-client.ts';
import { clientFromCredentials } from '../credentials.ts';
import { formatTable } from '../output.ts';

type Key = {
  id: string;
  name: string;
  prefix: string;
  level: string;
  databases: string[] | null;
  status: string;
  expires_at: string;
  last_used_at: string | null;
  decoy: boolean;
  key?: string;
};

const COLUMNS = [
  { key: 'id', title: 'id' },
  { key: 'prefix', title: 'prefix' },
  { key: 'name', title: 'name' },
  { key: 'level', title: 'level' },
  { key: 'scope', title: 'scope' },
  { key: 'status', title: 'status' },
  { key: 'expires', title: 'expires' },
  { key: 'last_used', title: 'last used' },
];

const row = (k: Key) => ({
  ...k,
  scope: k.databases === null ? 'account' : k.databases.join(','),
  status: k.decoy ? `${k.status} (decoy)` : k.status,
  expires: k.expires_at.slice(0, 16).replace('T', ' '),
  last_used: k.last_used_at?.slice(0, 16).replace('T', ' ') ?? null,
});

function levelOption(v: string): string {
  if (!['read', 'write', 'admin'].includes(v)) throw new InvalidArgumentError('must be read, write or admin');
  return v;
}

function databasesOption(v: string): string[] {
  const names = v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (names.length === 0 || names.some((n) => !NAME_PATTERN.test(n))) {
    throw new InvalidArgumentError('must be a comma-separated list of database names');
  }
  return names;
}

function dateOption(v: string): string {
  const t = Date.parse(v);
  if (Number.isNaN(t)) throw new InvalidArgumentError('must be an ISO date, e.g. 2026-12-31T00:00:00Z');
  return new Date(t).toISOString();
}

function uuidOption(v: string): string {
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(v)) {
    throw new InvalidArgumentError('must be a key id (uuid)');
  }
  return v;
}

export function registerKeys(program: Command): void {
  const keys = program.command('keys').description('Manage API keys (needs an admin key)');

  keys
    .command('create')
    .description('Create an API key; it is printed once')
    .requiredOption('--name <name>', 'what the key is for')
    .option('--level <level>', 'read, write or admin', levelOption, 'read')
    .option('--databases <names>', 'limit to these databases (comma-separated)', databasesOption)
    .option('--expires-at <date>', 'expiry (default: the account maximum)', dateOption)
    .option('--explorer', 'may use the SQL explorer')
    .option('--decoy', 'a canary key: any use raises a critical alert')
    .option('--json', 'machine-readable output')
    .action(
      (o: {
        name: string;
        level: string;
        databases?: string[];
        expiresAt?: string;
        explorer?: boolean;
        decoy?: boolean;
        json?: boolean;
      }) =>
        runCommand(o.json, async () => {
          const k = await clientFromCredentials().request<Key>('POST', '/v1/keys', {
            name: o.name,
            level: o.level,
            ...(o.databases ? { databases: o.databases } : {}),
            ...(o.expiresAt ? { expires_at: o.expiresAt } : {}),
            ...(o.explorer ? { explorer: true } : {}),
            ...(o.decoy ? { decoy: true } : {}),
          });
          if (o.json) {
            process.stdout.write(`${JSON.stringify(k, null, 2)}\n`);
            return;
          }
          process.stderr.write(
            `${formatTable([row(k)], COLUMNS)}\n\nThe key (shown only once; store it now):\n`,
          );
          process.stdout.write(`${k.key}\n`);
        }),
    );

  keys
    .command('list')
    .description('List the API keys of the account')
    .option('--limit <n>', 'at most this many (1–100 per page; all pages are fetched)', (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('must be a positive integer');
      return n;
    })
    .option('--json', 'machine-readable output')
    .action((o: { limit?: number; json?: boolean }) =>
      runCommand(o.json, async () => {
        const client = clientFromCredentials();
        const items: Key[] = [];
        let cursor: string | undefined;
        for (let page = 0; page < 1000; page++) {
          const want = o.limit === undefined ? 100 : Math.min(100, o.limit - items.length);
          if (want <= 0) break;
          const r = await client.request<{ items: Key[]; next_cursor: string | null }>(
            'GET',
            '/v1/keys',
            undefined,
            {
              query: { limit: want, cursor },
            },
          );
          items.push(...r.items);
          if (!r.next_cursor) break;
          cursor = r.next_cursor;
        }
        process.stdout.write(
          o.json ? `${JSON.stringify({ items }, null, 2)}\n` : `${formatTable(items.map(row), COLUMNS)}\n`,
        );
      }),
    );

  keys
    .command('revoke')
    .description('Revoke an API key (and every key it created) on every server at once')
    .argument('<id>', 'key id', uuidOption)
    .option('--json', 'machine-readable output')
    .action((id: string, o: { json?: boolean }) =>
      runCommand(o.json, async () => {
        const k = await clientFromCredentials().request<Key>('DELETE', `/v1/keys/${id}`);
        process.stdout.write(
          o.json ? `${JSON.stringify(k, null, 2)}\n` : `revoked ${k.prefix}… (${k.name})\n`,
        );
      }),
    );
}
