#!/usr/bin/env node
import { Command } from 'commander';
import { VERSION } from '../shared/version.ts';
import { registerAdminCreateKey } from './commands/admin-create-key.ts';
import { registerAdminEnrollNode } from './commands/admin-enroll-node.ts';
import { registerAdminInvite } from './commands/admin-invite.ts';
import { registerAgent } from './commands/agent.ts';
import { registerAudit } from './commands/audit.ts';
import { registerBackup } from './commands/backup.ts';
import { registerDb } from './commands/db.ts';
import { registerDoctor } from './commands/doctor.ts';
import { registerKeys } from './commands/keys.ts';
import { registerLogin } from './commands/login.ts';
import { registerMasterKey } from './commands/master-key.ts';
import { registerNode } from './commands/node.ts';
import { registerPolicy } from './commands/policy.ts';
import { registerRequest } from './commands/request.ts';
import { registerServer } from './commands/server.ts';
import { registerStatus } from './commands/status.ts';
import { registerUp } from './commands/up.ts';
import { registerWebhook } from './commands/webhook.ts';
import { registerWhoami } from './commands/whoami.ts';

const program = new Command()
  .name('bulwark')
  .description('Self-hosted, security-first PostgreSQL platform')
  .version(VERSION)
  .showHelpAfterError()
  .addHelpText(
    'after',
    '\nExit codes: 0 ok · 1 error · 2 bad usage or config · 3 incompatible data dir · 4 already running or port in use' +
      ' · 5 not authenticated or not allowed · 6 not found' +
      ' · 7 --wait: the change did not take effect (reason on stderr) · 8 --wait: timed out' +
      '\n`bulwark request` has its own: 0 approved/executed · 2 pending · 3 rejected, cancelled, expired or failed · 1 other errors',
  );
// Before any subcommand is added, so that they inherit it: usage errors exit 2 everywhere.
program.exitOverride((err) => {
  process.exit(err.exitCode === 1 ? 2 : err.exitCode);
});

registerUp(program);
registerServer(program);
registerAgent(program);
registerStatus(program);
registerAdminCreateKey(program);
registerAdminInvite(program);
registerAdminEnrollNode(program);
registerNode(program);
registerLogin(program);
registerWhoami(program);
registerKeys(program);
registerAudit(program);
registerDb(program);
registerBackup(program);
registerRequest(program);
registerPolicy(program);
registerWebhook(program);
registerDoctor(program);
registerMasterKey(program);

await program.parseAsync(process.argv);
