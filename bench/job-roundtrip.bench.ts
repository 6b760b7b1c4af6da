/**
 * Job round trip: enqueue → agent (long-poll wake, claim, run node.ping on the cluster,
 * report) → succeeded, measured from the control DB's own timestamps (created_at →
 * finished_at) over N sequential jobs. Baseline in the same run: the queue's SQL floor —
 * the same enqueue + claim + complete statements issued directly, no HTTP and no agent.
 *
 *   node bench/job-roundtrip.bench.ts [jobs=200]
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { agentConfigSchema } from '../src/agent/config.ts';
import { startAgent } from '../src/agent/main.ts';
import { startDataPlane } from '../src/embedded/data-plane.ts';
import { dataLayout } from '../src/embedded/layout.ts';
import { resolveServiceUser } from '../src/embedded/service-user.ts';
import { serverConfigSchema } from '../src/server/config.ts';
import { startServer } from '../src/server/main.ts';
import { claimJob, completeJob, enqueueJob } from '../src/server/modules/jobs/jobs.repo.ts';
import { createLogger } from '../src/shared/logger.ts';
import { freePort } from '../test/helpers/ports.ts';
import { summarize } from './stats.ts';

const N = Number(process.argv[2] ?? 200);
const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'bench-jobs-'));
const layout = dataLayout(dir);
const dp = await startDataPlane({
  layout,
  ports: { postgres: await freePort(), pooler: await freePort() },
  user: resolveServiceUser(),
  log: () => {},
});
const silent = createLogger('bench', 'silent');
const server = await startServer(
  serverConfigSchema.parse({
    databaseUrl: dp.controlUrl,
    dataDir: layout.server,
    port: 0,
    logLevel: 'silent',
  }),
  { log: silent },
);
const db = new pg.Pool({ connectionString: dp.controlUrl, max: 4 });
db.on('error', () => {});
try {
  await db.query(
    "INSERT INTO node_enrollments (token_hash, node_name, expires_at) VALUES ($1, 'bench', now() + interval '1 hour')",
    [(await import('../src/shared/api-key.ts')).hashToken('bwe_'.padEnd(47, 'A'))],
  );
  const agent = await startAgent(
    agentConfigSchema.parse({
      serverUrl: server.url,
      stateDir: path.join(dir, 'agent'),
      enrollmentToken: 'bwe_'.padEnd(47, 'A'),
      adminDatabaseUrl: dp.adminUrl,
      logLevel: 'silent',
    }),
    { log: silent },
  );
  const nodeId = (await db.query<{ id: string }>("SELECT id FROM nodes WHERE name = 'bench'")).rows[0]!.id;

  const roundTrip = async (): Promise<number> => {
    const job = await enqueueJob(db, { nodeId, kind: 'node.ping' });
    for (let i = 0; i < 20_000; i++) {
      const r = await db.query<{ ms: number | null }>(
        "SELECT extract(epoch FROM finished_at - created_at) * 1000 AS ms FROM jobs WHERE id = $1 AND status = 'succeeded'",
        [job.id],
      );
      if (r.rows[0]) return Number(r.rows[0].ms);
      await new Promise((res) => setTimeout(res, 1));
    }
    throw new Error('job did not finish');
  };
  for (let i = 0; i < 20; i++) await roundTrip(); // warm-up
  const agentMs: number[] = [];
  for (let i = 0; i < N; i++) agentMs.push(await roundTrip());
  await agent.stop();

  // Floor: the same queue statements, run directly (and the same query the job runs).
  const admin = new pg.Client({ connectionString: dp.adminUrl });
  await admin.connect();
  const floorMs: number[] = [];
  for (let i = 0; i < N + 20; i++) {
    const t0 = performance.now();
    const job = await enqueueJob(db, { nodeId, kind: 'node.ping' });
    const claimed = await claimJob(db, nodeId, 60_000);
    await admin.query("SELECT version(), current_setting('server_version_num'), now()");
    await completeJob(db, job.id, nodeId, claimed!.attempts, { ok: true });
    if (i >= 20) floorMs.push(performance.now() - t0);
  }
  await admin.end();

  const a = summarize(agentMs);
  const f = summarize(floorMs);
  console.log(
    `job round trip through the agent, ${N} jobs: median ${a.median.toFixed(2)} ms, p95 ${a.p95.toFixed(2)} ms`,
  );
  console.log(
    `SQL floor (enqueue+claim+run+complete direct): median ${f.median.toFixed(2)} ms, p95 ${f.p95.toFixed(2)} ms`,
  );
  console.log(`ratio (median): ${(a.median / f.median).toFixed(2)}x`);
  console.log(
    JSON.stringify({ bench: 'job-roundtrip', jobs: N, agent: a, floor: f, ratio: a.median / f.median }),
  );
} catch (err) {
  console.error('bench failed:', err);
  process.exitCode = 1;
} finally {
  await db.end();
  await server.close();
  await dp.stop();
  await fs.rm(dir, { recursive: true, force: true });
}
