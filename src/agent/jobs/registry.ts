import type { JobHandler } from './job-context.ts';
import { nodePing } from './node-ping.ts';

/** Job kinds this agent can run. The agent refuses any kind not listed here. */
export function defaultHandlers(): Map<string, JobHandler> {
  return new Map<string, JobHandler>([['node.ping', nodePing]]);
}
