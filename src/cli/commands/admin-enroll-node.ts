import { type Command, InvalidArgumentError } from 'commander';
import { generateToken } from '../../shared/api-key.ts';
import { CliError, EXIT, runCommand } from '../api-client.ts';
import { controlPool, storeEnrollment, withTx } from '../control-db.ts';
import { defaultDataDir, intInRange } from '../options.ts';
import { adminCommand } from './admin-create-key.ts';

const NODE_NAME = /^[a-z][a-z0-9_-]{0,62}$/;

function nameOption(v: string): string {
  if (!NODE_NAME.test(v))
    throw new InvalidArgumentError('must start with a-z and hold only a-z, 0-9, _ and - (at most 63)');
  return v;
}

/** The enrollment lifetime: `--ttl-minutes`, else the server's setting BULWARK_ENROLLMENT_TTL_MINUTES, else 60. */
function ttlMinutes(given: number | undefined, env: NodeJS.ProcessEnv): number {
  if (given !== undefined) return given;
  const raw = env.BULWARK_ENROLLMENT_TTL_MINUTES;
  if (raw === undefined || raw === '') return 60;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 7 * 24 * 60)
    throw new CliError('BULWARK_ENROLLMENT_TTL_MINUTES: a whole number of minutes, 1–10080', EXIT.usage);
  return n;
}

/**
 * `bulwark admin enroll-node`: a one-time enrollment token for a new data-plane node, straight
 * through the control DB of a `bulwark up` on this host (audited `node.enrollment_created`, actor
 * the operator). The token is printed once; only its SHA-256 is stored.
 */
export function registerAdminEnrollNode(program: Command): void {
  adminCommand(program)
    .command('enroll-node')
    .description('A one-time enrollment token for a new node (give it to `bulwark node up --token`)')
    .requiredOption('--name <name>', "the node's name", nameOption)
    .option(
      '--ttl-minutes <n>',
      'lifetime (default: BULWARK_ENROLLMENT_TTL_MINUTES, else 60)',
      intInRange(1, 10_080, 'minutes'),
    )
    .option('--data-dir <dir>', 'data dir of a `bulwark up` (env BULWARK_DATA_DIR)', defaultDataDir())
    .option('--json', 'machine-readable output: {"node_name","token","expires_at"}')
    .action((o: { name: string; ttlMinutes?: number; dataDir: string; json?: boolean }) =>
      runCommand(o.json, async () => {
        const minutes = ttlMinutes(o.ttlMinutes, process.env);
        const token = generateToken('bwe_');
        const expiresAt = new Date(Date.now() + minutes * 60_000);
        const pool = controlPool(o.dataDir, 'bulwark-admin', 1);
        try {
          await withTx(pool, (tx) =>
            storeEnrollment(tx, { nodeName: o.name, token, expiresAt, actorType: 'operator' }),
          );
        } catch (err) {
          throw new CliError(`could not create the enrollment: ${(err as Error).message}`, EXIT.error);
        } finally {
          await pool.end().catch(() => {});
        }
        if (o.json) {
          process.stdout.write(
            `${JSON.stringify({ node_name: o.name, token, expires_at: expiresAt.toISOString() })}\n`,
          );
          return;
        }
        process.stderr.write(
          `Enrollment for node "${o.name}", single use, expires ${expiresAt.toISOString()}.\n` +
            'On the new machine: bulwark node up --server URL --token TOKEN --data-dir DIR\n' +
            'The token (shown only once):\n',
        );
        process.stdout.write(`${token}\n`);
      }),
    );
}
