import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { type Command, InvalidArgumentError } from 'commander';
import { CliError, EXIT, runCommand } from '../api-client.ts';
import { controlPool, createOperatorInvite, type InviteRole, inviteUrl } from '../control-db.ts';
import { defaultDataDir, intInRange } from '../options.ts';
import { adminCommand } from './admin-create-key.ts';

const ACCOUNT_NAME = /^[a-z][a-z0-9_-]{0,62}$/;
const ROLES: readonly InviteRole[] = ['owner', 'admin', 'member', 'viewer'];

function accountOption(v: string): string {
  if (!ACCOUNT_NAME.test(v))
    throw new InvalidArgumentError('must start with a-z and hold only a-z, 0-9, _ and - (at most 63)');
  return v;
}

function roleOption(v: string): InviteRole {
  const role = ROLES.find((r) => r === v);
  if (!role) throw new InvalidArgumentError('must be owner, admin, member or viewer');
  return role;
}

function urlOption(v: string): string {
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw new InvalidArgumentError('must be an http:// or https:// URL');
  }
  if ((u.protocol !== 'http:' && u.protocol !== 'https:') || u.username || u.password || v.length > 2048)
    throw new InvalidArgumentError('must be an http:// or https:// URL without credentials');
  return `${u.origin}${u.pathname}`;
}

/** The server's address for the link: `--url`, else the one `bulwark up` wrote in the data dir. */
function serverUrlOf(dataDir: string, given: string | undefined): string | null {
  if (given) return given;
  const file = path.join(dataDir, 'up.json');
  if (!existsSync(file)) return null;
  try {
    const url = (JSON.parse(readFileSync(file, 'utf8')) as { server_url?: unknown }).server_url;
    return typeof url === 'string' && /^https?:\/\//.test(url) ? url : null;
  } catch {
    return null;
  }
}

type Options = {
  account?: string;
  role?: InviteRole;
  platformAdmin?: boolean;
  expiresInHours: number;
  url?: string;
  dataDir: string;
  json?: boolean;
};

export function registerAdminInvite(program: Command): void {
  adminCommand(program)
    .command('invite')
    .description(
      'Make a single-use invite (a user of an account, and/or a platform admin), straight through the control DB',
    )
    .option('--account <name>', 'the account the new user joins (created if missing)', accountOption)
    .option('--role <role>', 'owner, admin, member or viewer (with --account; default owner)', roleOption)
    .option('--platform-admin', 'the new user is a platform admin')
    .option('--expires-in-hours <n>', 'hours until the code expires (1–720)', intInRange(1, 720, 'hours'), 72)
    .option(
      '--url <url>',
      "the server's address for the link (default: the one `bulwark up` runs at)",
      urlOption,
    )
    .option('--data-dir <dir>', 'data dir of a `bulwark up` (env BULWARK_DATA_DIR)', defaultDataDir())
    .option('--json', 'machine-readable output: {"code","url","expires_at"}')
    .action((o: Options) =>
      runCommand(o.json, async () => {
        if (o.account === undefined && !o.platformAdmin)
          throw new CliError('give --account NAME, --platform-admin, or both', EXIT.usage);
        if (o.role !== undefined && o.account === undefined)
          throw new CliError(
            '--role needs --account (a platform admin without an account has no role)',
            EXIT.usage,
          );
        const pool = controlPool(o.dataDir, 'bulwark-admin', 1);
        try {
          const invite = await createOperatorInvite(pool, {
            accountName: o.account,
            role: o.role,
            platformAdmin: Boolean(o.platformAdmin),
            expiresInHours: o.expiresInHours,
          });
          const base = serverUrlOf(o.dataDir, o.url);
          const url = base ? inviteUrl(base, invite.code) : null;
          const expiresAt = invite.expiresAt.toISOString();
          if (o.json) {
            process.stdout.write(`${JSON.stringify({ code: invite.code, url, expires_at: expiresAt })}\n`);
            return;
          }
          const who = [
            invite.account
              ? `${invite.role} of ${invite.account.created ? 'the new account' : 'account'} "${invite.account.name}"`
              : null,
            invite.platformAdmin ? 'platform admin' : null,
          ]
            .filter(Boolean)
            .join(' and ');
          process.stderr.write(
            `Invite for one new user: ${who}; single use, expires ${expiresAt}.\n` +
              (url
                ? 'Open this link (shown only once; the code is after #, so it never reaches a server log):\n'
                : 'The code (shown only once; give --url for a link):\n'),
          );
          process.stdout.write(`${url ?? invite.code}\n`);
        } catch (err) {
          if (err instanceof CliError) throw err;
          throw new CliError(`could not create the invite: ${(err as Error).message}`, EXIT.error);
        } finally {
          await pool.end().catch(() => {});
        }
      }),
    );
}
