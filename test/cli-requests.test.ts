// `bulwark request` and `bulwark policy explain` as real processes against a real server, a real
// agent and a real tenant database: exit code 2 while a request is pending (create, show, execute),
// a self-approval refused, a second person's approval, then execute and result (exit 0); a
// rejected request exits 3; a usage error exits 1 (never 2); an applied policy changes what
// explain says and lets a write run without approval.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { createAccount } from './helpers/databases.ts';
import { type ExplorerStack, startExplorerStack } from './helpers/explorer-stack.ts';
import { type Person, person } from './requests-helpers.ts';

const CLI = path.resolve(import.meta.dirname, '../src/cli/index.ts');

let stack: ExplorerStack;
let tmp: string;
let DB: string;
let requester: Person;
let approver: Person;

before(async () => {
  stack = await startExplorerStack({
    node: 'cli-req-node',
    account: 'clireq',
    explorerChannel: true,
    tenantPrefix: 'cr',
  });
  DB = stack.t.name;
  await stack.t.asOwner(
    'CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL); INSERT INTO items SELECT g, 0 FROM generate_series(1, 10) g',
  );
  requester = await person(stack.s, stack.key.accountId, 'member', 'cli-req');
  approver = await person(stack.s, stack.key.accountId, 'member', 'cli-appr');
  await createAccount(stack.s, 'elsewhere');
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-cli-req-'));
});
after(async () => {
  stack?.s.app.server.closeAllConnections();
  await stack?.stop();
  if (tmp) await fs.rm(tmp, { recursive: true, force: true });
});

type Run = { code: number; stdout: string; stderr: string };
/** The CLI as `who` (an access token works as the bearer, as a key does). */
function cli(who: Person | { key: string }, args: string[], input?: string): Promise<Run> {
  const key = 'key' in who ? who.key : who.headers.authorization!.slice('Bearer '.length);
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [CLI, ...args],
      {
        env: {
          PATH: process.env.PATH ?? '',
          HOME: tmp,
          XDG_CONFIG_HOME: tmp,
          BULWARK_URL: stack.url.replace('localhost', '127.0.0.1'),
          BULWARK_KEY: key,
        },
        timeout: 90_000,
      },
      (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    );
    child.stdin?.end(input ?? '');
  });
}

const qty = async (ids: number[]) =>
  (await stack.t.asAdmin('SELECT qty FROM items WHERE id = ANY($1) ORDER BY id', [ids])).rows.map(
    (r) => r.qty,
  );

test('pending exits 2 until a second person approves; then execute and result exit 0', async () => {
  const created = await cli(requester, [
    'request',
    'create',
    DB,
    '--reason',
    'restock two items',
    '--sql',
    'UPDATE items SET qty = 5 WHERE id <= 2',
    '--json',
  ]);
  assert.equal(created.code, 2, created.stderr);
  const r = JSON.parse(created.stdout);
  assert.equal(r.status, 'pending');
  assert.equal(r.dry_run.affected_rows, 2);
  assert.deepEqual(await qty([1, 2]), [0, 0], 'the dry run changed nothing');

  const [show, early, self, bad] = await Promise.all([
    cli(requester, ['request', 'show', DB, r.id]),
    cli(requester, ['request', 'execute', DB, r.id]),
    cli(requester, ['request', 'approve', DB, r.id]),
    cli(requester, ['request', 'show', DB, 'not-a-uuid']),
  ]);
  assert.equal(show.code, 2, show.stderr);
  assert.match(show.stdout, new RegExp(`request ${r.id} on ${DB}: PENDING`));
  assert.match(show.stdout, /what: {7}write \(UPDATE\) as migrator/);
  assert.match(show.stdout, /approvals: {2}0 of 1 — needs 1, never the requester's own/);
  assert.match(show.stdout, /dry run: {4}2 row\(s\) affected/);
  assert.match(show.stdout, / {4}UPDATE items SET qty = 5 WHERE id <= 2/);
  assert.equal(early.code, 2, `execute of a pending request: ${early.stderr}`);
  assert.match(early.stderr, /invalid_state/);
  assert.equal(self.code, 5, self.stderr);
  assert.match(self.stderr, /policy_denied/);
  assert.equal(bad.code, 1, 'a usage error is 1 here: 2 means pending');

  const inbox = await cli(approver, ['request', 'list', '--awaiting-me', '--json']);
  assert.equal(inbox.code, 0, inbox.stderr);
  assert.ok(JSON.parse(inbox.stdout).items.some((x: { id: string }) => x.id === r.id));

  const approved = await cli(approver, ['request', 'approve', DB, r.id, '--comment', 'looks right']);
  assert.equal(approved.code, 0, approved.stderr);
  assert.match(approved.stdout, /: APPROVED/);
  assert.match(approved.stdout, /✓ cli-appr-member-\S+ .*: looks right/);
  assert.equal((await cli(requester, ['request', 'show', DB, r.id])).code, 0);

  const executed = await cli(requester, ['request', 'execute', DB, r.id]);
  assert.equal(executed.code, 0, executed.stderr);
  assert.match(executed.stdout, /: EXECUTED/);
  assert.match(executed.stdout, /last run: {3}executed .*: 2 row\(s\) affected/);
  assert.deepEqual(await qty([1, 2, 3]), [5, 5, 0]);

  const result = await cli(approver, ['request', 'result', DB, r.id, '--json']);
  assert.equal(result.code, 0, result.stderr);
  assert.equal(JSON.parse(result.stdout).affected_rows, 2);
  const human = await cli(requester, ['request', 'result', DB, r.id]);
  assert.match(human.stdout, /statements: UPDATE 2\naffected rows: 2/);
  const again = await cli(requester, ['request', 'execute', DB, r.id]);
  assert.equal(again.code, 1, `a second run is refused (max_executions 1): ${again.stderr}`);

  const list = await cli(requester, ['request', 'list', DB]);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, new RegExp(`${r.id}\\s+${DB}\\s+executed\\s+write\\s+1/1`));
});

test('a rejected request exits 3; --wait gives up while pending with 2; SQL from stdin', async () => {
  const started = Date.now();
  const created = await cli(
    requester,
    ['request', 'create', DB, '-', '--reason', 'zero them', '--wait', '1', '--json'],
    'UPDATE items SET qty = 0 WHERE id = 9',
  );
  assert.equal(created.code, 2, created.stderr);
  assert.ok(Date.now() - started >= 1000);
  const { id } = JSON.parse(created.stdout);
  const rejected = await cli(approver, ['request', 'reject', DB, id, '--comment', 'not now']);
  assert.equal(rejected.code, 0, rejected.stderr);
  const [show, execute, noComment] = await Promise.all([
    cli(requester, ['request', 'show', DB, id, '--json']),
    cli(requester, ['request', 'execute', DB, id]),
    cli(approver, ['request', 'reject', DB, id]),
  ]);
  assert.equal(show.code, 3, show.stderr);
  assert.equal(JSON.parse(show.stdout).rejection.comment, 'not now');
  assert.equal(execute.code, 3, execute.stderr);
  assert.equal(noComment.code, 1);
  assert.match(noComment.stderr, /reject needs --comment/);

  const other = await cli(requester, [
    'request',
    'create',
    DB,
    '--reason',
    'changed my mind',
    '--sql',
    'UPDATE items SET qty = 3 WHERE id = 8',
    '--json',
  ]);
  assert.equal(other.code, 2, other.stderr);
  const otherId = JSON.parse(other.stdout).id;
  const cancelled = await cli(requester, ['request', 'cancel', DB, otherId]);
  assert.equal(cancelled.code, 0, cancelled.stderr);
  assert.match(cancelled.stdout, /: CANCELLED/);
  assert.equal((await cli(requester, ['request', 'show', DB, otherId])).code, 3);
});

test('policy explain, and an applied policy that lets writes here run without approval', async () => {
  const before = await cli(requester, ['policy', 'explain', DB, 'DELETE FROM items']);
  assert.equal(before.code, 0, before.stderr);
  assert.match(before.stdout, /class: {4}destructive \(DELETE\)/);
  assert.match(before.stdout, /BLOCK missing_where \(statement 1\)/);
  assert.match(before.stdout, /policy: {3}none applied \(built-in rules\)/);
  assert.match(before.stdout, /rule: {5}builtin/);
  assert.match(before.stdout, /approvals needed: 2, 1 of them by an owner or admin/);
  assert.match(before.stdout, /verdict: {2}a blocking finding/);

  const file = path.join(tmp, 'policy.yaml');
  await fs.writeFile(
    file,
    `version: 1\nenvironments:\n  sandbox:\n    classes:\n      write: { approvals: 0 }\ndatabases:\n  ${DB}:\n    environment: sandbox\n`,
  );
  const applied = await cli(stack.key, ['policy', 'apply', file]);
  assert.equal(applied.code, 0, applied.stderr);

  const after = JSON.parse(
    (await cli(requester, ['policy', 'explain', DB, '-', '--json'], 'UPDATE items SET qty = 1 WHERE id = 4'))
      .stdout,
  );
  assert.deepEqual(
    { ...after.policy, why: undefined },
    {
      version: 1,
      rule: 'environments.sandbox.classes.write',
      why: undefined,
      environment: 'sandbox',
      approvals_required: 0,
      admin_approvals_required: 0,
      allowed: true,
    },
  );
  const created = await cli(requester, [
    'request',
    'create',
    DB,
    '--reason',
    'sandbox fix',
    '--sql',
    'UPDATE items SET qty = 1 WHERE id = 4',
  ]);
  assert.equal(created.code, 0, `approved at once: ${created.stderr}`);
  assert.match(created.stdout, /: APPROVED/);
  assert.match(created.stdout, /policy: {5}version 1 · environments\.sandbox\.classes\.write/);
});

test('break glass: an admin runs a pending DDL request with a reason; an API key may not', async () => {
  const admin = await person(stack.s, stack.key.accountId, 'admin', 'cli-bg');
  const created = await cli(requester, [
    'request',
    'create',
    DB,
    '--reason',
    'a table for the incident',
    '--sql',
    'CREATE TABLE incident_notes (id int PRIMARY KEY, note text)',
    '--json',
  ]);
  assert.equal(created.code, 2, created.stderr);
  const { id } = JSON.parse(created.stdout);
  const short = await cli(admin, ['request', 'execute', DB, id, '--break-glass', 'now']);
  assert.equal(short.code, 1, 'a reason under 10 characters is refused before any call');
  const byKey = await cli(stack.key, [
    'request',
    'execute',
    DB,
    id,
    '--break-glass',
    'incident 7: we need it now',
  ]);
  assert.equal(byKey.code, 5, byKey.stderr);
  assert.equal((await stack.t.asAdmin("SELECT to_regclass('public.incident_notes') AS t")).rows[0].t, null);

  const glass = await cli(admin, [
    'request',
    'execute',
    DB,
    id,
    '--break-glass',
    'incident 7: we need it now',
  ]);
  assert.equal(glass.code, 0, glass.stderr);
  assert.match(glass.stdout, /: EXECUTED/);
  assert.match(glass.stdout, /BREAK GLASS by cli-bg-admin-\S+ .*: incident 7: we need it now/);
  assert.equal(
    (await stack.t.asAdmin("SELECT to_regclass('public.incident_notes')::text AS t")).rows[0].t,
    'incident_notes',
  );
});
