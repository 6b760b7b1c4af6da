/**
 * Pooler reload time and a rotation's time-to-effect with 10, 1,000 and 10,000 databases.
 *
 *   node bench/pooler-reload.bench.ts [sizes=10,1000,10000] [runs=5]
 *
 * One real tenant database is created (database.create); the other N-1 entries of the pooler
 * state are fake tenants (an owner role name, a SCRAM verifier and one /32 allowlist entry
 * each) — they cost PgBouncer exactly what real ones do at reload (one auth line + one hba
 * line), without creating 10,000 PostgreSQL databases. Per size it measures, interleaved:
 *   - apply: PoolerManager.reload() = render + atomic writes + RELOAD + the proving login;
 *   - RELOAD alone of that wildcard config on a kept admin console connection (files unchanged
 *     since the apply, so PgBouncer re-reads the ini and hba but skips the unchanged auth file);
 *   - baseline: RELOAD of the same auth/hba with one `[databases]` line per tenant instead of
 *     the wildcard (the design we avoid; its cost grows with the square of the line count);
 *   - rotation time-to-effect: database.rotate on the real tenant, from the job's start until
 *     the new password has logged in through PgBouncer (the job's own proof; the old password
 *     stops working at the pooler step before that);
 *   - a cut alone (ADR 0036: two proven reloads around the KILL, the waits and the ending of
 *     server sessions) with one tenant session linked to a server, against KILL + RESUME alone.
 * Prints a table and a final JSON line.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import pg from 'pg';
import type { PoolerDatabase } from '../src/agent/pgbouncer/pooler-state.ts';
import { POOLER_ADMIN } from '../src/embedded/layout.ts';
import { DEFAULT_LIMITS } from '../src/shared/contracts/jobs.ts';
import { scramVerifier } from '../src/shared/scram.ts';
import { median, round, startPoolerBenchKit } from './pooler-kit.ts';

const SIZES = (process.argv[2] ?? '10,1000,10000').split(',').map(Number);
const RUNS = Number(process.argv[3] ?? 5);

const kit = await startPoolerBenchKit();
// One kept console connection, as the manager keeps one: the figures are RELOAD, not a login.
const consoleConn = new pg.Client({
  host: '127.0.0.1',
  port: kit.ports.pooler,
  user: POOLER_ADMIN,
  password: kit.poolerAdminPassword,
  database: 'pgbouncer',
});
await consoleConn.connect();
const consoleQuery = (sql: string) => consoleConn.query(sql);
const timed = async (fn: () => Promise<unknown>) => {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
};

const out: Record<string, unknown>[] = [];
try {
  const realName = 'bench_real';
  const id = randomUUID();
  let password = randomBytes(32).toString('base64url');
  await kit.jobs.get('database.create')!(
    {
      database_id: id,
      name: realName,
      verifier: scramVerifier(password),
      allowlist: [{ cidr: '127.0.0.1/32', expires_at: null }],
      limits: DEFAULT_LIMITS,
    },
    kit.ctx(password),
  );
  const fakeVerifier = scramVerifier(randomBytes(16).toString('hex'));
  const real = kit.pooler.state().databases[realName]!;

  for (const n of SIZES) {
    const databases: Record<string, PoolerDatabase> = { [realName]: real };
    for (let i = 1; i < n; i++) {
      const name = `fake_${i}`;
      databases[name] = {
        name,
        owner: `${name}_owner`,
        verifier: fakeVerifier,
        allowlist: [{ cidr: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32`, expires_at: null }],
      };
    }
    await kit.pooler.update((s) => ({ ...s, databases }));
    const applyMs: number[] = [];
    const phases: Record<string, number[]> = { render: [], write: [], reload: [], probe: [] };
    const reloadMs: number[] = [];
    const baselineMs: number[] = [];
    const rotateMs: number[] = [];
    const cutMs: number[] = [];
    const killMs: number[] = [];
    const wildcardIni = await fs.readFile(kit.pooler.files.ini, 'utf8');
    const perTenantIni = wildcardIni.replace(/^\* = (host=\S+ port=\d+)$/m, (_m, target: string) =>
      Object.keys(databases)
        .map((d) => `${d} = ${target} dbname=${d}`)
        .join('\n'),
    );
    for (let r = 0; r < RUNS; r++) {
      const a = await kit.pooler.reload();
      applyMs.push(a.ms);
      for (const [k, v] of Object.entries(a.phases)) phases[k]!.push(v);
      reloadMs.push(await timed(() => consoleQuery('RELOAD')));
      await fs.writeFile(kit.pooler.files.ini, perTenantIni);
      baselineMs.push(await timed(() => consoleQuery('RELOAD')));
      const shown = await consoleQuery('SHOW DATABASES');
      if (shown.rows.length < n) throw new Error(`baseline not loaded: ${shown.rows.length} databases`);
      await kit.pooler.reload(); // back to the wildcard config, proven
      const next = randomBytes(32).toString('base64url');
      rotateMs.push(
        await timed(() =>
          kit.jobs.get('database.rotate')!(
            { database_id: id, name: realName, verifier: scramVerifier(next) },
            kit.ctx(next),
          ),
        ),
      );
      password = next;
      // The cut alone (ADR 0036: refuse, wait for logins, end server sessions, KILL, RESUME,
      // let in), with one tenant session linked to a server, against the old unsafe cut
      // (KILL + RESUME only) on the same kind of session.
      const linked = async () => {
        const c = new pg.Client({
          host: '127.0.0.1',
          port: kit.ports.pooler,
          user: real.owner,
          password,
          database: realName,
        });
        c.on('error', () => {});
        await c.connect();
        await c.query('SELECT 1');
        return c;
      };
      let c = await linked();
      cutMs.push(await timed(() => kit.pooler.disconnect(realName)));
      await c.end().catch(() => {});
      c = await linked();
      killMs.push(
        await timed(async () => {
          await consoleQuery(`KILL ${realName}`);
          await consoleQuery(`RESUME ${realName}`);
        }),
      );
      await c.end().catch(() => {});
    }
    const row = {
      databases: n,
      apply_ms: round(median(applyMs)),
      apply_phases_ms: Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, round(median(v))])),
      reload_alone_ms: round(median(reloadMs)),
      baseline_per_tenant_lines_reload_ms: round(median(baselineMs)),
      baseline_ratio: round(median(baselineMs) / median(reloadMs), 2),
      rotation_time_to_effect_ms: round(median(rotateMs)),
      cut_ms: round(median(cutMs)),
      unsafe_kill_resume_ms: round(median(killMs)),
    };
    out.push(row);
    process.stdout.write(`${JSON.stringify(row)}\n`);
  }
  process.stdout.write(`\nsizes ${SIZES.join(', ')}; median of ${RUNS} runs each\n`);
  process.stdout.write(
    'databases | apply (render+write+RELOAD+probe) | RELOAD alone | baseline: 1 [databases] line per tenant | rotation time-to-effect | cut (ADR 0036) | KILL+RESUME alone\n',
  );
  for (const r of out) {
    process.stdout.write(
      `${r.databases} | ${r.apply_ms} ms | ${r.reload_alone_ms} ms | ${r.baseline_per_tenant_lines_reload_ms} ms (${r.baseline_ratio}×) | ${r.rotation_time_to_effect_ms} ms | ${r.cut_ms} ms | ${r.unsafe_kill_resume_ms} ms\n`,
    );
  }
  process.stdout.write(`${JSON.stringify({ bench: 'pooler-reload', runs: RUNS, results: out })}\n`);
} finally {
  await consoleConn.end();
  await kit.stop();
}
