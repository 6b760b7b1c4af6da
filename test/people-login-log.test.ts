import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { serverConfigSchema } from '../src/server/config.ts';
import { createKeyringFile } from '../src/server/crypto/secret-box.ts';
import { withTx } from '../src/server/db/pool.ts';
import { createServerContext } from '../src/server/main.ts';
import { createLocalUser } from '../src/server/modules/people/users.service.ts';
import { createLogger } from '../src/shared/logger.ts';
import { createTestDb } from './helpers/db.ts';

// docs/operations.md's fail2ban filter, as a JavaScript regex (<ADDR> → an address).
const FAILREGEX = /"msg":"login failed from ([0-9A-Fa-f.:]+): [a-z_]+"/;
const DATE = /"time":"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z"/;

test('a failed sign-in is one greppable log line (address, reason, keyed username hash) without the secrets', async () => {
  const db = await createTestDb();
  const keyDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bulwark-keyring-'));
  const masterKeyFile = path.join(keyDir, 'master-keyring.json');
  createKeyringFile(masterKeyFile);
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      lines.push(...String(chunk).split('\n').filter(Boolean));
      done();
    },
  });
  const config = serverConfigSchema.parse({
    databaseUrl: db.url,
    dataDir: '/nonexistent',
    port: 0,
    logLevel: 'info',
    masterKeyFile,
    rateLimitKeyPerMinute: 1_000_000,
    rateLimitIpPerMinute: 1_000_000,
    rateLimitAuthFailuresPerMinute: 1_000_000,
  });
  const ctx = await createServerContext({
    config,
    db: db.pool,
    log: createLogger('bulwark-server', 'info', sink),
  });
  try {
    await withTx(db.pool, (tx) =>
      createLocalUser(tx, { username: 'henry', password: 'correct horse battery', platformAdmin: false }),
    );
    const send = (username: string, password: string) =>
      ctx.app.inject({
        method: 'POST',
        url: '/v1/auth/login',
        payload: { username, password },
        remoteAddress: '127.0.0.77',
      });
    // Someone typed their password into the username field.
    assert.equal((await send('Tr0ub4dor&3-typed-here', 'whatever-else-9')).statusCode, 401);
    assert.equal((await send('henry', 'Wrong-Password-42')).statusCode, 401);
    assert.equal((await send('henry', 'correct horse battery')).statusCode, 200);
    const failed = lines.filter((l) => l.includes('login failed'));
    assert.equal(failed.length, 2, failed.join('\n'));
    for (const line of failed) {
      assert.equal(FAILREGEX.exec(line)?.[1], '127.0.0.77', line);
      assert.match(line, DATE);
      const entry = JSON.parse(line);
      assert.equal(entry.source_ip, '127.0.0.77');
      assert.match(entry.username_tag, /^[A-Za-z0-9_-]{12}$/);
    }
    assert.match(failed[0]!, /: unknown_user"/);
    assert.match(failed[1]!, /: wrong_password"/);
    const all = lines.join('\n');
    for (const secret of ['Tr0ub4dor', 'whatever-else-9', 'Wrong-Password-42', 'correct horse'])
      assert.ok(!all.includes(secret), `${secret} reached the log`);
  } finally {
    await ctx.close();
    await db.drop();
    fs.rmSync(keyDir, { recursive: true, force: true });
  }
});
