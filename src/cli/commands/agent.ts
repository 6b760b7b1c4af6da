import type { Command } from 'commander';
import { exitWithConfigErrors, onShutdown } from '../options.ts';

export function registerAgent(program: Command): void {
  program
    .command('agent')
    .description('Run a data-plane agent (config from --config JSON and BULWARK_* environment)')
    .option('--config <file>', 'JSON config file (environment overrides it)')
    .action(async (o: { config?: string }) => {
      const { loadAgentConfig } = await import('../../agent/config.ts');
      const { startAgent } = await import('../../agent/main.ts');
      const result = loadAgentConfig({ env: process.env, file: o.config });
      if (!result.ok) exitWithConfigErrors('bulwark agent', result.errors);
      const agent = await startAgent(result.config);
      let requested = false;
      onShutdown(async () => {
        requested = true;
        await agent.stop();
      });
      await agent.done;
      // The loop ended without a stop request (e.g. the server revoked this agent).
      if (!requested) process.exit(1);
    });
}
