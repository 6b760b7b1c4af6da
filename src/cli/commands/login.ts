import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { parseApiKey } from '../../shared/api-key.ts';
import { CliError, createApiClient, EXIT, parseServerUrl, runCommand } from '../api-client.ts';
import { saveCredentials } from '../credentials.ts';
import { formatWhoami, type Whoami } from './whoami.ts';

export function registerLogin(program: Command): void {
  program
    .command('login')
    .description('Check an API key against a server, then store both (0600) for later commands')
    .requiredOption('--url <url>', 'server URL, e.g. https://bulwark.example.com')
    .option(
      '--key <key>',
      'API key (bwk_…); `-` or omitted reads it from stdin (keeps it out of shell history)',
    )
    .option('--insecure', 'allow plain http to a non-loopback host')
    .option('--json', 'machine-readable output')
    .action((o: { url: string; key?: string; insecure?: boolean; json?: boolean }) =>
      runCommand(o.json, async () => {
        const url = parseServerUrl(o.url, o.insecure);
        const key = (o.key && o.key !== '-' ? o.key : readFileSync(0, 'utf8')).trim();
        const parsed = parseApiKey(key);
        if (!parsed.ok) throw new CliError(`that is not a Bulwark API key (${parsed.reason})`, EXIT.usage);
        const w = await createApiClient({ url, key }).request<Whoami>('GET', '/v1/whoami');
        const file = saveCredentials({ url, key });
        if (o.json) process.stdout.write(`${JSON.stringify({ ...w, credentials_file: file }, null, 2)}\n`);
        else process.stdout.write(`Logged in; credentials saved to ${file}\n${formatWhoami(w, url)}\n`);
      }),
    );
}
