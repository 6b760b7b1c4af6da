import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { serverConfigSchema } from '../src/server/config.ts';
import { createKeyringFile } from '../src/server/crypto/secret-box.ts';
import { createServerContext, type ServerContext } from '../src/server/main.ts';
import { createLogger } from '../src/shared/logger.ts';
import { enrollFakeAgent } from './helpers/databases.ts';
import { createTestDb, type TestDb } from './helpers/db.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';

// Review: an allowlist `note` is `{type: string, maxLength: 200}` in the API document (and in the
// route's schema), but a note holding U+0000 or a lone UTF-16 surrogate — both valid JSON strings
// within those bounds — reached PostgreSQL's jsonb, which refuses them: U+0000 (22P05, unmapped)
// answered `500 internal` with an "unhandled error" stack in server.log; a lone surrogate (22P02)
// `400 bad_request "Invalid value"` naming nothing. Schema-valid input must be accepted (stored
// like the audit log stores it, U+FFFD in place of what jsonb cannot hold) or refused by the schema
// (`validation_failed` naming the field, with the document saying so), never by the database.

let db: TestDb;
let ctx: ServerContext;
let keyDir: string;
let admin: TestKey;

before(async () => {
  db = await createTestDb();
  keyDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bulwark-keyring-'));
  const masterKeyFile = path.join(keyDir, 'keyring.json');
  createKeyringFile(masterKeyFile);
  const config = serverConfigSchema.parse({
    databaseUrl: db.url,
    dataDir: '/nonexistent',
    masterKeyFile,
    poolerPublicHost: 'db.example.com',
    poolerSslmode: 'require',
  });
  ctx = await createServerContext({ config, db: db.pool, log: createLogger('test', 'silent') });
  const s = { db, app: ctx.app, nodes: ctx.nodes } as unknown as Parameters<typeof enrollFakeAgent>[0];
  await enrollFakeAgent(s, 'n1');
  admin = await createTestKey({ db }, { account: 'acme' });
  const res = await ctx.app.inject({
    method: 'POST',
    url: '/v1/databases',
    headers: admin.headers,
    payload: { name: 'notes_db' },
  });
  assert.equal(res.statusCode, 202, res.body);
});

after(async () => {
  await ctx?.close();
  await db?.drop();
  fs.rmSync(keyDir, { recursive: true, force: true });
});

const NOTES = ['nul \u0000 inside', 'lone \ud800 surrogate', 'lone \udfff low'];

for (const note of NOTES) {
  for (const method of ['POST', 'PUT'] as const) {
    test(`${method} allowlist with a schema-valid note ${JSON.stringify(note)} is accepted or refused by the schema`, async () => {
      const entry = { cidr: '203.0.113.0/24', note };
      const res = await ctx.app.inject({
        method,
        url: '/v1/databases/notes_db/allowlist',
        headers: admin.headers,
        payload: method === 'POST' ? entry : { entries: [entry] },
      });
      if (res.statusCode === 200) return;
      assert.equal(res.statusCode, 400, res.body);
      const body = res.json();
      assert.equal(body.error.code, 'validation_failed', res.body);
      assert.match(JSON.stringify(body.error.details), /note/, res.body);
    });
  }
}
