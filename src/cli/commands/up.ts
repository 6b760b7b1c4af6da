import type { Command } from 'commander';
import { DEFAULT_PORTS } from '../../embedded/layout.ts';
import { defaultDataDir, portOption } from '../options.ts';

export function registerUp(program: Command): void {
  program
    .command('up')
    .description('Start the whole stack on this machine: PostgreSQL, PgBouncer, the server and one agent')
    .option('--data-dir <dir>', 'where everything lives (env BULWARK_DATA_DIR)', defaultDataDir())
    .option('--host <host>', 'address the server listens on', '127.0.0.1')
    .option('--port <port>', 'server port', portOption, DEFAULT_PORTS.server)
    .option('--pooler-port <port>', 'PgBouncer port', portOption, DEFAULT_PORTS.pooler)
    .option('--pg-port <port>', 'PostgreSQL port (loopback only)', portOption, DEFAULT_PORTS.postgres)
    .action(
      async (o: { dataDir: string; host: string; port: number; poolerPort: number; pgPort: number }) => {
        // Loaded on use, so other commands start fast.
        const { up } = await import('../../embedded/up.ts');
        const { PreflightError } = await import('../../embedded/preflight.ts');
        try {
          const code = await up({
            dataDir: o.dataDir,
            host: o.host,
            port: o.port,
            poolerPort: o.poolerPort,
            pgPort: o.pgPort,
            out: (line) => process.stdout.write(`${line}\n`),
            unsafeFast: process.env.BULWARK_UNSAFE_FAST === '1',
          });
          process.exit(code);
        } catch (err) {
          process.stderr.write(`bulwark up: ${(err as Error).message}\n`);
          process.exit(err instanceof PreflightError ? err.exitCode : 1);
        }
      },
    );
}
