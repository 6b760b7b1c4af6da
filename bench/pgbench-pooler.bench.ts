/**
 * pgbench select-only through our PgBouncer config vs directly to PostgreSQL, with a kept
 * connection per client and with a new connection per transaction (-C).
 *
 *   node bench/pgbench-pooler.bench.ts [seconds=8] [clients=20] [rounds=2]
 *
 * A tenant database is made by the real `database.create` job (roles, REVOKEs, pooler entry
 * with its SCRAM verifier and a 127.0.0.1/32 allowlist rule, wildcard `[databases]`), then
 * `pgbench -i -s 10` fills it as the owner, and the four runs are interleaved `rounds` times:
 * pooled, direct, pooled -C, direct -C. All logins are the owner's SCRAM login. Prints the
 * median tps of each and the two ratios (pooled / direct), then a final JSON line.
 */
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { DEFAULT_LIMITS } from '../src/shared/contracts/jobs.ts';
import { roleNames } from '../src/shared/identifiers.ts';
import { scramVerifier } from '../src/shared/scram.ts';
import { median, round, startPoolerBenchKit } from './pooler-kit.ts';

const SECONDS = Number(process.argv[2] ?? 8);
const CLIENTS = Number(process.argv[3] ?? 20);
const ROUNDS = Number(process.argv[4] ?? 2);
const BIN = '/usr/lib/postgresql/15/bin';

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      env: { PATH: process.env.PATH, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve(out) : reject(new Error(`${cmd} exited ${code}: ${out}`)),
    );
  });
}

const kit = await startPoolerBenchKit();
try {
  const name = 'bench_pgbench';
  const password = randomBytes(32).toString('base64url');
  await kit.jobs.get('database.create')!(
    {
      database_id: randomUUID(),
      name,
      verifier: scramVerifier(password),
      allowlist: [{ cidr: '127.0.0.1/32', expires_at: null }],
      limits: { ...DEFAULT_LIMITS, owner_connection_limit: CLIENTS * 10 },
    },
    kit.ctx(password),
  );
  const owner = roleNames(name).owner;
  const env = { PGPASSWORD: password, PGHOST: '127.0.0.1', PGUSER: owner, PGDATABASE: name };
  await run(`${BIN}/pgbench`, ['-i', '-q', '-s', '10', '-p', String(kit.ports.postgres)], env);

  const tps = (out: string) => {
    const m = /tps = ([\d.]+) \((without initial connection|including reconnection) time/.exec(out);
    if (!m) throw new Error(`no tps in pgbench output:\n${out}`);
    return Number(m[1]);
  };
  const bench = async (port: number, reconnect: boolean) =>
    tps(
      await run(
        `${BIN}/pgbench`,
        [
          '-S',
          '-n',
          '-c',
          String(CLIENTS),
          '-j',
          '2',
          '-T',
          String(SECONDS),
          '-p',
          String(port),
          ...(reconnect ? ['-C'] : []),
        ],
        env,
      ),
    );
  const results: Record<string, number[]> = { pooled: [], direct: [], pooled_C: [], direct_C: [] };
  for (let r = 0; r < ROUNDS; r++) {
    results.pooled!.push(await bench(kit.ports.pooler, false));
    results.direct!.push(await bench(kit.ports.postgres, false));
    results.pooled_C!.push(await bench(kit.ports.pooler, true));
    results.direct_C!.push(await bench(kit.ports.postgres, true));
    process.stdout.write(
      `round ${r + 1}: ${JSON.stringify(Object.fromEntries(Object.entries(results).map(([k, v]) => [k, round(v.at(-1)!)])))}\n`,
    );
  }
  const m = Object.fromEntries(Object.entries(results).map(([k, v]) => [k, round(median(v))]));
  const summary = {
    bench: 'pgbench-pooler',
    seconds: SECONDS,
    clients: CLIENTS,
    rounds: ROUNDS,
    tps_median: m,
    ratio_pooled_vs_direct: round(m.pooled! / m.direct!, 2),
    ratio_pooled_vs_direct_new_connection_per_tx: round(m.pooled_C! / m.direct_C!, 2),
  };
  process.stdout.write(
    `select-only, ${CLIENTS} clients, ${SECONDS} s, median of ${ROUNDS}: pooled ${m.pooled} tps vs direct ${m.direct} tps ` +
      `(${summary.ratio_pooled_vs_direct}×); with -C: pooled ${m.pooled_C} vs direct ${m.direct_C} ` +
      `(${summary.ratio_pooled_vs_direct_new_connection_per_tx}×)\n`,
  );
  process.stdout.write(`${JSON.stringify(summary)}\n`);
} finally {
  await kit.stop();
}
