import type { Command } from 'commander';
import { DEFAULT_PORTS } from '../../embedded/layout.ts';
import { defaultDataDir, exitWithConfigErrors, portOption } from '../options.ts';

type UpCliOptions = {
  dataDir: string;
  host: string;
  port: number;
  poolerPort: number;
  pgPort: number;
  serverConfig?: string;
  agentConfig?: string;
};

export function registerUp(program: Command): void {
  program
    .command('up')
    .description(
      'Start the whole stack on this machine: PostgreSQL, PgBouncer, the server and one agent ' +
        "(the server's and the agent's BULWARK_* settings are handed to them; see docs/operations.md)",
    )
    .option('--data-dir <dir>', 'where everything lives (env BULWARK_DATA_DIR)', defaultDataDir())
    .option('--host <host>', 'address the server listens on', '127.0.0.1')
    .option('--port <port>', 'server port', portOption, DEFAULT_PORTS.server)
    .option('--pooler-port <port>', 'PgBouncer port', portOption, DEFAULT_PORTS.pooler)
    .option('--pg-port <port>', 'PostgreSQL port (loopback only)', portOption, DEFAULT_PORTS.postgres)
    .option('--server-config <file>', "the server's JSON config file (its environment overrides it)")
    .option('--agent-config <file>', "the agent's JSON config file (its environment overrides it)")
    .action(async (o: UpCliOptions) => {
      // Loaded on use, so other commands start fast.
      const { up } = await import('../../embedded/up.ts');
      const { loadUpConfig, unknownEnvNames, knownEnvNames } = await import('../../embedded/up-config.ts');
      const { PreflightError } = await import('../../embedded/preflight.ts');
      const unknown = unknownEnvNames(process.env);
      if (unknown.length > 0) {
        exitWithConfigErrors('bulwark up', [
          ...unknown.map((n) => `${n}: unknown setting (no Bulwark process reads it; a typo?)`),
          `known names: ${[...knownEnvNames()].sort().join(', ')}`,
        ]);
      }
      const config = loadUpConfig({ env: process.env });
      if (!config.ok) exitWithConfigErrors('bulwark up', config.errors);
      try {
        const code = await up({
          dataDir: o.dataDir,
          host: o.host,
          port: o.port,
          poolerPort: o.poolerPort,
          pgPort: o.pgPort,
          out: (line) => process.stdout.write(`${line}\n`),
          config: config.config,
          env: process.env,
          serverConfigFile: o.serverConfig,
          agentConfigFile: o.agentConfig,
        });
        process.exit(code);
      } catch (err) {
        process.stderr.write(`bulwark up: ${(err as Error).message}\n`);
        process.exit(err instanceof PreflightError ? err.exitCode : 1);
      }
    });
}
