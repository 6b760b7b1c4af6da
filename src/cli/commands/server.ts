import type { Command } from 'commander';
import { exitWithConfigErrors, onShutdown } from '../options.ts';

export function registerServer(program: Command): void {
  program
    .command('server')
    .description('Run the control-plane server (config from --config JSON and BULWARK_* environment)')
    .option('--config <file>', 'JSON config file (environment overrides it)')
    .option('--no-migrate', 'do not apply pending migrations at start')
    .action(async (o: { config?: string; migrate: boolean }) => {
      // Loaded on use, so other commands start fast.
      const { loadServerConfig } = await import('../../server/config.ts');
      const { startServer } = await import('../../server/main.ts');
      const result = loadServerConfig({ env: process.env, file: o.config });
      if (!result.ok) exitWithConfigErrors('bulwark server', result.errors);
      const running = await startServer(result.config, {
        poolerPort: result.config.poolerPort,
        migrate: o.migrate,
      });
      running.app.log.info({ url: running.url }, 'server listening');
      onShutdown(() => running.close());
    });
}
