/**
 * A real `bulwark up` serving the built dashboard (web/dist, built by `npm test` before the test
 * files run), and what the dashboard's browser tests read from it: the server's URL and the
 * first admin's one-time invite link printed among the start-up lines.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { startUpStack, type UpStack } from './up-stack.ts';

const DIST_INDEX = path.resolve(import.meta.dirname, '../../web/dist/index.html');

export type DashboardStack = UpStack & { url: string; firstAdminLink: string };

export async function startDashboardStack(): Promise<DashboardStack> {
  if (!existsSync(DIST_INDEX))
    throw new Error('web/dist is missing: `npm test` builds it (node scripts/build-web.ts)');
  const stack = await startUpStack();
  const url = `http://127.0.0.1:${stack.ports.server}`;
  const m = /first admin: open {2}(\S+#invite=bwi_[\w-]+)/.exec(stack.output());
  if (!m) {
    await stack.destroy();
    throw new Error(`no first-admin link in the output of bulwark up:\n${stack.output()}`);
  }
  return Object.assign(stack, { url, firstAdminLink: m[1]! });
}
