import { type Command, InvalidArgumentError } from 'commander';
import { CliError, EXIT, runCommand } from '../api-client.ts';
import { controlPool, createOperatorKey, type Permission } from '../control-db.ts';
import { defaultDataDir } from '../options.ts';

const ACCOUNT_NAME = /^[a-z][a-z0-9_-]{0,62}$/;

function accountOption(v: string): string {
  if (!ACCOUNT_NAME.test(v)) {
    throw new InvalidArgumentError('must start with a-z and hold only a-z, 0-9, _ and - (at most 63)');
  }
  return v;
}

function levelOption(v: string): Permission {
  if (v !== 'read' && v !== 'write' && v !== 'admin')
    throw new InvalidArgumentError('must be read, write or admin');
  return v;
}

/** The `admin` command group (operator tools run on the server host), created once. */
export function adminCommand(program: Command): Command {
  return (
    program.commands.find((c) => c.name() === 'admin') ??
    program
      .command('admin')
      .description('Operator tools, run on the server host (straight through the control DB)')
  );
}

export function registerAdminCreateKey(program: Command): void {
  adminCommand(program)
    .command('create-key')
    .description('Mint an API key for an account (created if missing), straight through the control DB')
    .requiredOption('--account <name>', 'account name', accountOption)
    .option('--level <level>', 'read, write or admin', levelOption, 'admin')
    .option('--name <name>', 'what the key is for', 'operator key')
    .option('--data-dir <dir>', 'data dir of a `bulwark up` (env BULWARK_DATA_DIR)', defaultDataDir())
    .option('--json', 'machine-readable output: {"key","account","expires_at"}')
    .action((o: { account: string; level: Permission; name: string; dataDir: string; json?: boolean }) =>
      runCommand(o.json, async () => {
        if (o.name.length < 1 || o.name.length > 100)
          throw new CliError('--name must be 1–100 characters', EXIT.usage);
        const pool = controlPool(o.dataDir, 'bulwark-admin', 1);
        try {
          const { key, row, account } = await createOperatorKey(pool, {
            accountName: o.account,
            level: o.level,
            name: o.name,
          });
          if (o.json) {
            process.stdout.write(
              `${JSON.stringify({ key, account: account.name, expires_at: row.expires_at.toISOString() })}\n`,
            );
          } else {
            process.stderr.write(
              `${account.created ? 'Created account' : 'Account'} "${account.name}"; ${row.level} key ` +
                `${key.slice(0, 16)}… expires ${row.expires_at.toISOString()}.\n` +
                'The key (shown only once; store it now):\n',
            );
            process.stdout.write(`${key}\n`);
          }
        } catch (err) {
          if (err instanceof CliError) throw err;
          throw new CliError(`could not create the key: ${(err as Error).message}`, EXIT.error);
        } finally {
          await pool.end().catch(() => {});
        }
      }),
    );
}
