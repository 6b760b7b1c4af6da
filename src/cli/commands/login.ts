import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { parseApiKey } from '../../shared/api-key.ts';
import { ApiError, CliError, createApiClient, EXIT, parseServerUrl, runCommand } from '../api-client.ts';
import { type IssuedTokens, postPublic, saveCredentials, saveSession, sessionFrom } from '../credentials.ts';
import { createSecretReader } from '../prompt.ts';
import { formatWhoami, type Whoami } from './whoami.ts';

const USERNAME = /^[a-z][a-z0-9._-]{1,62}$/;

type Me = {
  user: {
    id: string;
    username: string | null;
    platform_admin: boolean;
    status: string;
    totp_enabled: boolean;
  };
  memberships: { account: string; role: string; databases: string[] | null }[];
};

function formatMe(me: Me, url: string): string {
  const lines = [
    `server     ${url}`,
    `user       ${me.user.username ?? '?'} (${me.user.id})${me.user.platform_admin ? ' — platform admin' : ''}`,
  ];
  if (me.memberships.length === 0) lines.push('accounts   none');
  for (const m of me.memberships)
    lines.push(
      `account    ${m.account}: ${m.role}${m.databases === null ? '' : ` (databases: ${m.databases.join(', ')})`}`,
    );
  return lines.join('\n');
}

/** Password sign-in: the password, then a TOTP code if the server asks for one (`totp_required`). */
async function signIn(url: string, username: string): Promise<IssuedTokens> {
  const secrets = createSecretReader();
  const password = await secrets.next(`Password for ${username}: `, 'password');
  try {
    return await postPublic<IssuedTokens>(url, '/v1/auth/login', { username, password });
  } catch (err) {
    if (!(err instanceof ApiError && err.code === 'totp_required')) throw err;
  }
  const totp = (await secrets.next('TOTP code (or a recovery code): ', 'TOTP code')).trim();
  return postPublic<IssuedTokens>(url, '/v1/auth/login', { username, password, totp_code: totp });
}

export function registerLogin(program: Command): void {
  program
    .command('login')
    .description(
      'Sign in with a username (password and TOTP prompted without echo) or check an API key; store the credentials (0600) for later commands',
    )
    .requiredOption('--url <url>', 'server URL, e.g. https://bulwark.example.com')
    .option(
      '--key <key>',
      'API key (bwk_…); `-` or omitted (without --username) reads it from stdin (keeps it out of shell history)',
    )
    .option(
      '--username <name>',
      'sign in as this local user: the password (then a TOTP code if asked) is read from the terminal, or one per line from stdin',
      (v: string) => {
        if (!USERNAME.test(v)) throw new CliError('--username: not a username', EXIT.usage);
        return v;
      },
    )
    .option('--insecure', 'allow plain http to a non-loopback host')
    .option('--json', 'machine-readable output')
    .action((o: { url: string; key?: string; username?: string; insecure?: boolean; json?: boolean }) =>
      runCommand(o.json, async () => {
        if (o.username && o.key) throw new CliError('give --key or --username, not both', EXIT.usage);
        const url = parseServerUrl(o.url, o.insecure);
        if (o.username) {
          const session = sessionFrom(url, o.username, await signIn(url, o.username));
          const me = await createApiClient({ url, key: session.access_token }).request<Me>('GET', '/v1/me');
          const file = saveSession(session);
          if (o.json) process.stdout.write(`${JSON.stringify({ ...me, credentials_file: file }, null, 2)}\n`);
          else process.stdout.write(`Signed in; session saved to ${file}\n${formatMe(me, url)}\n`);
          return;
        }
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
