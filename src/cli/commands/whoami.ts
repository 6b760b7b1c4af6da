import type { Command } from 'commander';
import { runCommand } from '../api-client.ts';
import { clientFromCredentials } from '../credentials.ts';

export type Whoami = {
  account: { id: string; name: string };
  key: {
    id: string;
    name: string | null;
    prefix: string | null;
    level: string;
    databases: string[] | null;
    explorer: boolean;
    expires_at: string | null;
  };
};

export function formatWhoami(w: Whoami, url: string): string {
  return [
    `server     ${url}`,
    `account    ${w.account.name} (${w.account.id})`,
    `key        ${w.key.prefix ?? '?'}…  ${w.key.name ?? ''}`.trimEnd(),
    `level      ${w.key.level}${w.key.explorer ? ' + explorer' : ''}`,
    `scope      ${w.key.databases === null ? 'whole account' : `databases: ${w.key.databases.join(', ')}`}`,
    `expires    ${w.key.expires_at ?? 'never'}`,
  ].join('\n');
}

export function registerWhoami(program: Command): void {
  program
    .command('whoami')
    .description('Which account and key the stored credentials (or BULWARK_URL/BULWARK_KEY) are')
    .option('--json', 'machine-readable output')
    .action((o: { json?: boolean }) =>
      runCommand(o.json, async () => {
        const client = clientFromCredentials();
        const w = await client.request<Whoami>('GET', '/v1/whoami');
        process.stdout.write(o.json ? `${JSON.stringify(w, null, 2)}\n` : `${formatWhoami(w, client.url)}\n`);
      }),
    );
}
