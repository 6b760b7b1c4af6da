#!/usr/bin/env node
import { Command } from 'commander';
import { VERSION } from '../shared/version.ts';
import { registerAgent } from './commands/agent.ts';
import { registerServer } from './commands/server.ts';
import { registerStatus } from './commands/status.ts';
import { registerUp } from './commands/up.ts';

const program = new Command()
  .name('bulwark')
  .description('Self-hosted, security-first PostgreSQL platform')
  .version(VERSION)
  .showHelpAfterError()
  .addHelpText(
    'after',
    '\nExit codes: 0 ok · 1 error · 2 bad usage or config · 3 incompatible data dir · 4 already running or port in use',
  );

registerUp(program);
registerServer(program);
registerAgent(program);
registerStatus(program);

program.exitOverride((err) => {
  process.exit(err.exitCode === 1 ? 2 : err.exitCode);
});
await program.parseAsync(process.argv);
