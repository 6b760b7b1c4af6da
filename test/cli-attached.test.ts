// `bulwark db list` and `bulwark db show` with an attached database (issue 17): the real CLI
// against a fully wired test server, the attached databases registered by an enrolled agent's
// report (POST /v1/agent/attached). A node offers, the account decides: a reported database waits
// (provisioning, `db show` says it is not accepted) until `bulwark db accept` (an admin key; a read
// key gets exit 5); `bulwark db reject --confirm` removes one (exit 2 without the name repeated, 1
// for a hosted database). The list has a KIND column and `--json` passes `kind` and `attached`
// through; `show` of an attached database prints its agent check and findings (made terminal-safe)
// and asks neither its connection nor its allowlist (both 409); a managing command on it fails with
// the server's reason.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { enrollFakeAgent, type FakeAgent } from './helpers/databases.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

const CLI = path.resolve(import.meta.dirname, '../src/cli/index.ts');

let s: TestServer;
let tmp: string;
let env: Record<string, string>;
let key: TestKey;
let readKey: TestKey;
let agent: FakeAgent;
/** The URLs the server answered, to see what the CLI asked. */
const asked: string[] = [];

const WARN = {
  role: 'reader',
  severity: 'warn',
  kind: 'security_definer',
  object: 'public.refresh_totals()',
  // A control sequence from the agent's host must not reach the terminal as such.
  detail: 'the reader may call a SECURITY DEFINER function\u001b[31m',
};
const REFUSE = {
  role: 'migrator',
  severity: 'refuse',
  kind: 'superuser',
  object: 'billing_mig',
  detail: 'the migrator is a superuser',
};

before(async () => {
  s = await createTestServer();
  s.app.addHook('onResponse', async (req) => {
    asked.push(`${req.method} ${req.url}`);
  });
  const url = (await s.app.listen({ host: '127.0.0.1', port: 0 })).replace('localhost', '127.0.0.1');
  agent = await enrollFakeAgent(s, 'legacy');
  key = await createTestKey(s, { account: 'acme' });
  readKey = await createTestKey(s, { account: 'acme', level: 'read' });
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-cli-attached-'));
  env = { BULWARK_URL: url, BULWARK_KEY: key.key };
  const hosted = await s.app.inject({
    method: 'POST',
    url: '/v1/databases',
    headers: key.headers as Record<string, string>,
    payload: { name: 'shop', node: 'legacy' },
  });
  assert.equal(hosted.statusCode, 202, hosted.body);
  await report([]);
});

/** The agent's report: billing (passed with a warning), archive (refused), and `extra` offers. */
async function report(extra: string[]): Promise<void> {
  const r = await s.app.inject({
    method: 'POST',
    url: '/v1/agent/attached',
    headers: { authorization: `Bearer ${agent.token}` },
    payload: {
      databases: [
        { name: 'billing', account_id: key.accountId, ok: true, server_version: '16.4', findings: [WARN] },
        { name: 'archive', account_id: key.accountId, ok: false, server_version: '15.7', findings: [REFUSE] },
        ...extra.map((name) => ({
          name,
          account_id: key.accountId,
          ok: true,
          server_version: '16.4',
          findings: [],
        })),
      ],
    },
  });
  assert.equal(r.statusCode, 200, r.body);
}
after(async () => {
  s.app.server.closeAllConnections();
  await s.stop();
  await fs.rm(tmp, { recursive: true, force: true });
});

type Run = { code: number; stdout: string; stderr: string };
function cli(args: string[], as: TestKey = key): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      {
        env: { PATH: process.env.PATH ?? '', HOME: tmp, XDG_CONFIG_HOME: tmp, ...env, BULWARK_KEY: as.key },
        timeout: 90_000,
      },
      (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
      },
    );
  });
}

test('an offered attached database waits until bulwark db accept (an admin; a read key: exit 5)', async () => {
  const waiting = await cli(['db', 'show', 'billing']);
  assert.equal(waiting.code, 0, waiting.stderr);
  assert.match(waiting.stdout, /^billing\s+provisioning\s+legacy\s/m);
  assert.match(
    waiting.stdout,
    /^accepted {2}no: offered by node legacy, waiting for an owner or admin \(bulwark db accept billing\)$/m,
  );
  const json = JSON.parse((await cli(['db', 'show', 'billing', '--json'])).stdout);
  assert.equal(json.status, 'provisioning');
  assert.equal(json.attached.accepted_at, null);

  const denied = await cli(['db', 'accept', 'billing'], readKey);
  assert.equal(denied.code, 5, denied.stderr);
  assert.equal(
    JSON.parse((await cli(['db', 'show', 'billing', '--json'])).stdout).attached.accepted_at,
    null,
  );
  const hosted = await cli(['db', 'accept', 'shop']);
  assert.equal(hosted.code, 1, hosted.stderr);
  assert.match(hosted.stderr, /shop is a hosted database/);
  const missing = await cli(['db', 'accept', 'nowhere', '--json']);
  assert.equal(missing.code, 6, missing.stderr);
  assert.equal(JSON.parse(missing.stderr).error.status, 404);

  const accepted = await cli(['db', 'accept', 'billing']);
  assert.equal(accepted.code, 0, accepted.stderr);
  assert.equal(accepted.stdout, 'attached database billing accepted from node legacy; it is ready\n');
  const refused = await cli(['db', 'accept', 'archive', '--json']);
  assert.equal(refused.code, 0, refused.stderr);
  const archive = JSON.parse(refused.stdout);
  assert.equal(archive.status, 'failed');
  assert.ok(archive.attached.accepted_at, 'the answer carries when it was accepted');
  // Accepting again changes nothing.
  const again = await cli(['db', 'accept', 'billing', '--json']);
  assert.equal(again.code, 0, again.stderr);
  assert.equal(JSON.parse(again.stdout).status, 'ready');
  const shown = await cli(['db', 'show', 'billing']);
  assert.match(shown.stdout, /^accepted {2}\d{4}-\d\d-\d\d \d\d:\d\d$/m);
});

test('bulwark db list: a KIND column; --json passes kind and attached through', async () => {
  const [human, json] = await Promise.all([cli(['db', 'list']), cli(['db', 'list', '--json'])]);
  assert.equal(human.code, 0, human.stderr);
  const lines = human.stdout.trimEnd().split('\n');
  assert.match(lines[0]!, /^NAME\s+STATUS\s+NODE\s+CREATED\s+KIND\s+PROBLEM$/);
  const kindAt = lines[0]!.indexOf('KIND');
  const kindOf = (name: string) => {
    const line = lines.find((l) => l.startsWith(`${name} `));
    assert.ok(line, `${name} is listed:\n${human.stdout}`);
    return line.slice(kindAt).split(/\s+/)[0];
  };
  assert.deepEqual(
    ['shop', 'billing', 'archive'].map(kindOf),
    ['hosted', 'attached', 'attached'],
    human.stdout,
  );
  assert.equal(json.code, 0, json.stderr);
  const items = JSON.parse(json.stdout).items as {
    name: string;
    kind: string;
    attached: { server_version: string; findings: unknown[] } | null;
  }[];
  const byName = new Map(items.map((d) => [d.name, d]));
  assert.equal(byName.get('shop')?.kind, 'hosted');
  assert.equal(byName.get('shop')?.attached, null);
  assert.equal(byName.get('billing')?.kind, 'attached');
  assert.equal(byName.get('billing')?.attached?.server_version, '16.4');
  assert.deepEqual(byName.get('billing')?.attached?.findings, [WARN]);
});

test('bulwark db show of an attached database: its check and findings, no connection asked', async () => {
  const from = asked.length;
  const shown = await cli(['db', 'show', 'billing']);
  assert.equal(shown.code, 0, shown.stderr);
  const out = shown.stdout;
  assert.match(out, /^billing\s+ready\s+legacy\s+\S+ \S+\s+attached\s+-$/m);
  assert.match(out, /attached {2}an existing database listed by node legacy's agent: Bulwark explores it/);
  assert.match(out, /does not manage, back up or move it/);
  assert.match(out, /^checked {3}\d{4}-\d\d-\d\d \d\d:\d\d \(PostgreSQL 16\.4\)$/m);
  assert.match(out, /^SEVERITY\s+ROLE\s+FINDING\s+OBJECT\s+DETAIL$/m);
  assert.match(
    out,
    /^warn\s+reader\s+security_definer\s+public\.refresh_totals\(\)\s+the reader may call a SECURITY DEFINER function\\x1b\[31m$/m,
  );
  assert.ok(!out.includes('\u001b'), 'no raw escape character reaches the terminal');
  assert.doesNotMatch(out, /connect {3}|allowed {3}|password {2}/);
  const calls = asked.slice(from);
  assert.deepEqual(calls, ['GET /v1/databases/billing'], 'only the database itself is asked');

  const refused = await cli(['db', 'show', 'archive']);
  assert.equal(refused.code, 0, refused.stderr);
  assert.match(refused.stdout, /^archive\s+failed\s+legacy\s+\S+ \S+\s+attached\s+\S/m);
  assert.match(
    refused.stdout,
    /^refuse\s+migrator\s+superuser\s+billing_mig\s+the migrator is a superuser$/m,
  );

  const json = await cli(['db', 'show', 'billing', '--json']);
  assert.equal(json.code, 0, json.stderr);
  const d = JSON.parse(json.stdout);
  assert.equal(d.kind, 'attached');
  assert.deepEqual(d.attached.findings, [WARN]);
  assert.equal(d.connection, undefined);
  assert.equal(d.allowlist, undefined);
});

test('bulwark db show of a hosted database is unchanged (connection, allowlist), with its kind', async () => {
  const shown = await cli(['db', 'show', 'shop']);
  assert.equal(shown.code, 0, shown.stderr);
  assert.match(shown.stdout, /^shop\s+provisioning\s+legacy\s+\S+ \S+\s+hosted\s+-$/m);
  // The owner of its generated name on the node, never its label (ADR 0039).
  assert.match(shown.stdout, /^connect {3}postgresql:\/\/bulwark_db_p_[0-9a-f]{16}_owner@/m);
  assert.match(shown.stdout, /^allowed {3}\S/m);
  const json = JSON.parse((await cli(['db', 'show', 'shop', '--json'])).stdout);
  assert.equal(json.kind, 'hosted');
  assert.equal(json.attached, null);
  assert.ok(json.connection.uri);
});

test('a managing command on an attached database fails with the server reason', async () => {
  const [reveal, rotate] = await Promise.all([
    cli(['db', 'reveal', 'billing']),
    cli(['db', 'rotate', 'billing']),
  ]);
  for (const r of [reveal, rotate]) {
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /billing is an attached database: Bulwark does not/);
  }
});

test('bulwark db reject --confirm: the offer is gone and its node may not offer it again', async () => {
  await report(['spare']);
  assert.equal(JSON.parse((await cli(['db', 'show', 'spare', '--json'])).stdout).status, 'provisioning');
  const unconfirmed = await cli(['db', 'reject', 'spare', '--confirm', 'other']);
  assert.equal(unconfirmed.code, 2, unconfirmed.stderr);
  assert.match(unconfirmed.stderr, /--confirm must repeat the database name/);
  const noConfirm = await cli(['db', 'reject', 'spare']);
  assert.notEqual(noConfirm.code, 0);
  const denied = await cli(['db', 'reject', 'spare', '--confirm', 'spare'], readKey);
  assert.equal(denied.code, 5, denied.stderr);
  const hosted = await cli(['db', 'reject', 'shop', '--confirm', 'shop']);
  assert.equal(hosted.code, 1, hosted.stderr);
  assert.match(hosted.stderr, /shop is a hosted database/);
  assert.equal(JSON.parse((await cli(['db', 'show', 'shop', '--json'])).stdout).kind, 'hosted');

  const rejected = await cli(['db', 'reject', 'spare', '--confirm', 'spare', '--json']);
  assert.equal(rejected.code, 0, rejected.stderr);
  assert.deepEqual(JSON.parse(rejected.stdout), { name: 'spare', status: 'rejected' });
  const gone = await cli(['db', 'show', 'spare']);
  assert.equal(gone.code, 6, gone.stderr);
  // An accepted one is dropped the same way (human output).
  const dropped = await cli(['db', 'reject', 'billing', '--confirm', 'billing']);
  assert.equal(dropped.code, 0, dropped.stderr);
  assert.equal(dropped.stdout, 'attached database billing rejected: it is no longer in this account\n');
  assert.equal((await cli(['db', 'show', 'billing'])).code, 6);
  // The node offers it again: refused, not registered.
  const r = await s.app.inject({
    method: 'POST',
    url: '/v1/agent/attached',
    headers: { authorization: `Bearer ${agent.token}` },
    payload: {
      databases: [
        { name: 'spare', account_id: key.accountId, ok: true, server_version: '16.4', findings: [] },
      ],
    },
  });
  assert.equal(r.statusCode, 200, r.body);
  assert.equal(r.json().databases[0].status, 'refused');
  assert.equal((await cli(['db', 'show', 'spare'])).code, 6);
});
