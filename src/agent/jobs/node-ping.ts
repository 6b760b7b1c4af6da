import type { JobHandler } from './job-context.ts';

/** `node.ping`: proves the round trip server → agent → cluster → server. Read-only, idempotent. */
export const nodePing: JobHandler = async (_payload, ctx) => {
  const r = await ctx.admin.query<{ version: string; num: string; now: Date }>(
    "SELECT pg_catalog.version() AS version, pg_catalog.current_setting('server_version_num') AS num, pg_catalog.now() AS now",
  );
  const row = r.rows[0]!;
  return { pg_version: row.version, server_version_num: Number(row.num), checked_at: row.now.toISOString() };
};
