/**
 * `npm test`: type check and lint, then boot one throwaway PostgreSQL cluster and PgBouncer
 * (temp dir, free loopback ports), migrate a template database, and run every test file
 * with node's test runner. Each test clones the template into its own database, so files
 * run in parallel. Everything started here is stopped here.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startDataPlane } from '../src/embedded/data-plane.ts';
import { CONTROL_ROLE, dataLayout } from '../src/embedded/layout.ts';
import { pgbouncerBinary } from '../src/embedded/pgbouncer-process.ts';
import { pgBinDir } from '../src/embedded/postgres-cluster.ts';
import { resolveServiceUser } from '../src/embedded/service-user.ts';
import { loadUpConfig } from '../src/embedded/up-config.ts';
import { migrate } from '../src/server/db/migrate.ts';
import { freePort } from '../test/helpers/ports.ts';
import { buildWeb } from './build-web.ts';
import { listTests } from './test-files.ts';

const root = path.resolve(import.meta.dirname, '..');
const bin = (name: string) => path.join(root, 'node_modules', '.bin', name);

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: root, stdio: 'inherit', env });
    child.on('close', (code) => resolve(code ?? 1));
  });
}

const started = Date.now();
const only = process.env.BULWARK_TEST_FILTER;
const checks = only
  ? Promise.resolve([0, 0, 0, 0])
  : Promise.all([
      run(bin('tsc'), ['--noEmit', '-p', '.']),
      run(bin('biome'), ['check', '.']),
      // The dashboard: its own type check, and its API types generated from the current routes.
      run(bin('tsc'), ['--noEmit', '-p', 'web']),
      run(process.execPath, [path.join(root, 'scripts', 'openapi-types.ts'), '--check']),
    ]);
// The browser tests serve web/dist: build it first (cached: nothing to do when no input changed).
try {
  await buildWeb({ log: (line) => process.stdout.write(`${line}\n`) });
} catch (err) {
  process.stderr.write(`dashboard build failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}

// The binaries (BULWARK_PG_BIN, BULWARK_PGBOUNCER_BIN) are `up`'s settings, read through its schema.
const upConfig = loadUpConfig({ env: process.env });
if (!upConfig.ok) {
  process.stderr.write(`invalid configuration\n${upConfig.errors.map((e) => `  - ${e}`).join('\n')}\n`);
  process.exit(2);
}
const binaries = {
  pgBin: pgBinDir(upConfig.config.pgBin),
  pgbouncerBin: pgbouncerBinary(upConfig.config.pgbouncerBin),
};
const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-test-'));
const layout = dataLayout(tmp);
const ports = { postgres: await freePort(), pooler: await freePort() };
const dataPlane = await startDataPlane({
  layout,
  ports,
  user: resolveServiceUser(),
  unsafeFast: true,
  binaries,
  pgMemoryLimitBytes: upConfig.config.pgBackendMemoryMb * 1024 * 1024,
  log: () => {},
});
let code = 1;
try {
  const admin = new pg.Client({ connectionString: dataPlane.adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE bulwark_template OWNER ${CONTROL_ROLE} TEMPLATE template0`);
  await admin.end();
  const templateUrl = dataPlane.controlUrl.replace(/\/[^/]*$/, '/bulwark_template');
  const pool = new pg.Pool({ connectionString: templateUrl, max: 1 });
  await migrate(pool);
  await pool.end();

  // Test ports handed out in this run, one file each (test/helpers/ports.ts): never twice, across
  // the files' processes.
  const portsDir = path.join(tmp, 'ports');
  await fs.mkdir(portsDir);
  const env = {
    ...process.env,
    BULWARK_TEST_ENV: JSON.stringify({
      dataDir: tmp,
      portsDir,
      adminUrl: dataPlane.adminUrl,
      controlUrl: dataPlane.controlUrl,
      controlRole: CONTROL_ROLE,
      pgPort: ports.postgres,
      poolerPort: ports.pooler,
      poolerDir: layout.pooler,
      poolerAdminPassword: dataPlane.poolerAdminPassword,
      template: 'bulwark_template',
      // Where the tests find psql, pg_dump and pgbouncer (the same binaries as this cluster's).
      pgBin: binaries.pgBin,
      pgbouncerBin: binaries.pgbouncerBin,
    }),
  };
  const files = await listTests();
  const testCode = await run(
    process.execPath,
    [
      // Extra runtime flags for a diagnosis (e.g. `--test-isolation=none --inspect=127.0.0.1:9230`).
      ...(process.env.BULWARK_TEST_NODE_ARGS?.split(' ').filter(Boolean) ?? []),
      '--test',
      '--test-concurrency=4',
      '--test-timeout=180000',
      '--test-reporter=spec',
      ...files,
    ],
    env,
  );
  const [tscCode, lintCode, webTscCode, schemaCode] = await checks;
  if (tscCode !== 0) process.stderr.write('type check failed\n');
  if (lintCode !== 0) process.stderr.write('lint/format check failed (npm run format fixes formatting)\n');
  if (webTscCode !== 0) process.stderr.write('dashboard type check failed (tsc -p web)\n');
  if (schemaCode !== 0)
    process.stderr.write('dashboard API types are stale (node scripts/openapi-types.ts regenerates them)\n');
  code = testCode || tscCode || lintCode || webTscCode || schemaCode || 0;
} finally {
  await dataPlane.stop();
  await fs.rm(tmp, { recursive: true, force: true });
}
process.stdout.write(`npm test finished in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
process.exit(code);
