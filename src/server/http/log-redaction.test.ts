import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import { createTestDb, type TestDb } from '../../../test/helpers/db.ts';
import { createTestKey } from '../../../test/helpers/keys.ts';
import { createLogger } from '../../shared/logger.ts';
import { serverConfigSchema } from '../config.ts';
import { createServerContext, type ServerContext } from '../main.ts';

let db: TestDb;
let ctx: ServerContext;
const lines: string[] = [];
before(async () => {
  db = await createTestDb();
  const stream = new Writable({
    write(chunk, _enc, cb) {
      lines.push(String(chunk));
      cb();
    },
  });
  // The server's real logger, at the level that logs every request.
  const config = serverConfigSchema.parse({ databaseUrl: db.url, dataDir: '/nonexistent', logLevel: 'info' });
  ctx = await createServerContext({ config, db: db.pool, log: createLogger('server', 'info', stream) });
  await ctx.keyAuth.listenerReady();
});
after(async () => {
  await ctx.close();
  await db.drop();
});

test('credentials in request URLs never reach the server log, in any form or route', async () => {
  const k = await createTestKey({ db }, { account: 'acme' });
  const secretOf = k.key.slice(4);
  const encoded = [...k.key].map((c) => `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`).join('');
  const urls = [
    `/v1/whoami?key=${k.key}`, // a known route
    `/v1/whoami?api_key=${encodeURIComponent(k.key)}&x=1`,
    `/v1/whoami?%6Bey=${encoded}`, // encoded name and value
    `/nope?token=${k.key}`, // the 404 handler
    `/v1/keys/${k.key}`, // in the path
    `/v1/keys/${encoded}`, // in the path, percent-encoded
    `/v1/whoami%3Fkey%3D${k.key}`, // a query hidden by encoding its ?
    `/docs/static/x?key=${k.key}`,
    `/v1/agent/poll?password=hunter2secret`,
  ];
  for (const url of urls) {
    const res = await ctx.app.inject({ url, headers: { authorization: k.headers.authorization } });
    assert.ok(res.statusCode < 500, `${url}: ${res.statusCode}`);
  }
  const all = lines.join('');
  assert.ok(all.includes('"url":"/v1/whoami?key=[redacted]"'), 'requests are still logged, redacted');
  for (const needle of [secretOf, encoded.slice(12), 'hunter2secret'])
    assert.ok(!all.includes(needle), `the log carries ${needle}`);
});
