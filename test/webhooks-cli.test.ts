// `bulwark webhook` as a real process against a real server: create (the secret on stdout once),
// list, test (delivered to a real receiver on 127.0.0.2), deliveries, delete; usage errors exit 2.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { createTestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { waitFor } from './helpers/wait.ts';
import { type Receiver, startReceiver } from './helpers/webhook-receiver.ts';

const CLI = path.resolve(import.meta.dirname, '../src/cli/index.ts');

let s: TestServer;
let url: string;
let tmp: string;
let key: string;
let receiver: Receiver;
before(async () => {
  s = await createTestServer({ webhookAllowedHosts: ['127.0.0.2'], webhookPollMs: 100 });
  url = (await s.app.listen({ host: '127.0.0.1', port: 0 })).replace('localhost', '127.0.0.1');
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-cli-webhook-'));
  key = (await createTestKey(s, { account: 'acme' })).key;
  receiver = await startReceiver('127.0.0.2');
});
after(async () => {
  await receiver?.close();
  await s?.stop();
  await fs.rm(tmp, { recursive: true, force: true });
});

type Run = { code: number; stdout: string; stderr: string };
function cli(args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, 'webhook', ...args],
      {
        env: {
          PATH: process.env.PATH ?? '',
          HOME: tmp,
          XDG_CONFIG_HOME: tmp,
          BULWARK_KEY: key,
          BULWARK_URL: url,
        },
        timeout: 90_000,
      },
      (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    );
  });
}

test('bulwark webhook: create, list, test, deliveries, delete', async () => {
  const made = await cli(['create', '--url', receiver.url('/cli'), '--events', 'webhook.test,key.*']);
  assert.equal(made.code, 0, made.stderr);
  assert.match(made.stdout.trim(), /^whsec_[A-Za-z0-9_-]{43}$/, 'the secret alone on stdout');
  const [list, badUrl, badEvents] = await Promise.all([
    cli(['list', '--json']),
    cli(['create', '--url', 'ftp://x', '--events', '*']),
    cli(['create', '--url', receiver.url(), '--events', 'Nope!']),
  ]);
  assert.equal(list.code, 0, list.stderr);
  const hooks = JSON.parse(list.stdout) as { id: string; events: string[] }[];
  assert.equal(hooks.length, 1);
  assert.deepEqual(hooks[0]!.events, ['webhook.test', 'key.*']);
  assert.equal(badUrl.code, 2);
  assert.equal(badEvents.code, 2);
  const id = hooks[0]!.id;

  const t = await cli(['test', id, '--json']);
  assert.equal(t.code, 0, t.stderr);
  const { delivery_id } = JSON.parse(t.stdout) as { delivery_id: string };
  await waitFor('the test delivery', () =>
    receiver.received.find((r) => r.headers['bulwark-delivery'] === delivery_id),
  );
  const log = await waitFor(
    'the delivery logged as succeeded',
    async () => {
      const r = await cli(['deliveries', id, '--status', 'succeeded', '--json']);
      const items = JSON.parse(r.stdout) as { id: string }[];
      return items.some((d) => d.id === delivery_id) ? r : null;
    },
    { timeoutMs: 30_000, everyMs: 200 },
  );
  assert.equal(log.code, 0);
  const human = await cli(['deliveries', id]);
  assert.match(human.stdout, /webhook\.test\s+succeeded\s+1\/8\s+200/);

  const del = await cli(['delete', id]);
  assert.equal(del.code, 0, del.stderr);
  const missing = await cli(['delete', id]);
  assert.equal(missing.code, 6, 'not found');
});
