import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { startDataPlane } from '../src/embedded/data-plane.ts';
import { dataLayout } from '../src/embedded/layout.ts';
import { startPostgres } from '../src/embedded/postgres-cluster.ts';
import { resolveServiceUser } from '../src/embedded/service-user.ts';
import { serverConfigSchema } from '../src/server/config.ts';
import { startServer } from '../src/server/main.ts';
import { createLogger } from '../src/shared/logger.ts';
import { freePort } from './helpers/ports.ts';

test('/ready flips to 503 when PostgreSQL stops and back to 200 when it returns', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ready-'));
  const layout = dataLayout(dir);
  const ports = { postgres: await freePort(), pooler: await freePort() };
  const user = resolveServiceUser();
  const dp = await startDataPlane({ layout, ports, user, unsafeFast: true, log: () => {} });
  let pgProc = dp.postgres;
  const config = serverConfigSchema.parse({
    databaseUrl: dp.controlUrl,
    dataDir: layout.server,
    port: 0,
    logLevel: 'silent',
  });
  const server = await startServer(config, { log: createLogger('t', 'silent') });
  try {
    assert.equal((await server.app.inject({ url: '/ready' })).statusCode, 200);
    await pgProc.stop();
    const down = await server.app.inject({ url: '/ready' });
    assert.equal(down.statusCode, 503);
    assert.equal(down.json().status, 'unavailable');
    assert.equal((await server.app.inject({ url: '/health' })).statusCode, 200, 'liveness is unaffected');
    pgProc = await startPostgres({
      pgData: layout.pgData,
      port: ports.postgres,
      logFile: path.join(layout.logs, 'postgres.log'),
      user,
      adminUser: 'bulwark_admin',
      adminPassword: dp.adminPassword,
    });
    let status = 0;
    for (let i = 0; i < 50 && status !== 200; i++) {
      status = (await server.app.inject({ url: '/ready' })).statusCode;
      if (status !== 200) await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(status, 200);
  } finally {
    await server.close();
    await dp.pgbouncer.stop();
    await pgProc.stop();
    await fs.rm(dir, { recursive: true, force: true });
  }
});
