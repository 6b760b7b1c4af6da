import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import type { Tenant } from './helpers/explorer.ts';
import { type ExplorerStack, startExplorerStack } from './helpers/explorer-stack.ts';
import type { TestKey } from './helpers/keys.ts';
import type { TestServer } from './helpers/server.ts';

// `bulwark db query` and `bulwark db tables` as a user runs them: the real CLI in a child process,
// against a listening server, a real agent (explorer channel) and a real tenant database.
const CLI = path.resolve(import.meta.dirname, '../src/cli/index.ts');

let stack: ExplorerStack;
let s: TestServer;
let url: string;
let t: Tenant;
let key: TestKey;
let tmp: string;

before(async () => {
  stack = await startExplorerStack({
    node: 'cli-node',
    account: 'cli-explorer',
    explorerChannel: true,
    tenantPrefix: 'cx',
  });
  ({ s, url, t, key } = stack);
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-cli-explorer-'));
  await t.asOwner(`
    CREATE TABLE notes (id int PRIMARY KEY, body text, amount numeric(10, 2), flag boolean);
    INSERT INTO notes VALUES
      (1, E'\\x1b[31mred\\x1b[0m', 1.50, true),
      (2, NULL, NULL, NULL),
      (3, repeat('x', 200), 20.00, false);
    CREATE VIEW note_bodies AS SELECT id, body FROM notes;
  `);
});

after(async () => {
  s?.app.server.closeAllConnections();
  await stack?.stop();
  if (tmp) await fs.rm(tmp, { recursive: true, force: true });
});

type Run = { code: number; stdout: string; stderr: string };
function cli(args: string[], opts: { input?: string; url?: string } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [CLI, ...args],
      {
        env: {
          PATH: process.env.PATH ?? '',
          HOME: tmp,
          XDG_CONFIG_HOME: tmp,
          BULWARK_URL: opts.url ?? url,
          BULWARK_KEY: key.key,
        },
        timeout: 90_000,
        maxBuffer: 64 * 1024 * 1024,
      },
      (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
      },
    );
    child.stdin?.end(opts.input ?? '');
  });
}

/** The caret's column and the line it points into (`LINE n: …` of psql). */
function caret(stderr: string): { line: string; column: number } {
  const lines = stderr.split('\n');
  const i = lines.findIndex((l) => l.startsWith('LINE '));
  assert.ok(i >= 0, stderr);
  const under = lines[i + 1] ?? '';
  assert.match(under, /^ *\^$/, stderr);
  return { line: lines[i]!, column: under.indexOf('^') };
}

test('db query prints an aligned, terminal-safe table: NULL, escaped control characters, cut cells, row count', async () => {
  const r = await cli(['db', 'query', t.name, 'select id, body, amount, flag from notes order by id']);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(!r.stdout.includes('\x1b'), 'no raw ESC reaches the terminal');
  assert.ok(r.stdout.includes('\\x1b[31mred\\x1b[0m'), r.stdout);
  const lines = r.stdout.trimEnd().split('\n');
  assert.match(lines[0]!, /^id \| body +\| amount \| flag$/);
  assert.match(lines[1]!, /^-+\+-+\+-+\+-+$/);
  assert.equal(lines[3], ` 2 | ${'NULL'.padEnd(60)} | ${'NULL'.padStart(6)} | NULL`);
  assert.equal(lines[4], ` 3 | ${'x'.repeat(59)}… | ${'20.00'.padStart(6)} | false`, 'a long cell is cut');
  // Columns line up: every separator sits where the header's does.
  const bars = (l: string) => [...l.matchAll(/\|/g)].map((m) => m.index);
  for (const l of [lines[2]!, lines[3]!, lines[4]!]) assert.deepEqual(bars(l), bars(lines[0]!), l);
  assert.match(lines[5]!, /^3 rows \(\d+\.\d ms\)$/);

  const cut = await cli(['db', 'query', t.name, 'select id from notes order by id', '--limit', '2']);
  assert.equal(cut.code, 0, cut.stderr);
  assert.match(cut.stdout, /\n2 rows \(\d+\.\d ms\) \(truncated by rows\)\n$/);
});

test('db query --json prints the API answer; --csv prints the CSV exactly as the API sends it', async () => {
  const sql = 'select id, body, flag from notes where id < 3 order by id';
  const [json, csv, both] = await Promise.all([
    cli(['db', 'query', t.name, sql, '--json']),
    cli(['db', 'query', t.name, sql, '--csv']),
    cli(['db', 'query', t.name, sql, '--csv', '--json']),
  ]);
  assert.equal(json.code, 0, json.stderr);
  const out = JSON.parse(json.stdout);
  assert.deepEqual(
    out.columns.map((c: { name: string }) => c.name),
    ['id', 'body', 'flag'],
  );
  assert.deepEqual(out.rows, [
    [1, '\x1b[31mred\x1b[0m', true],
    [2, null, null],
  ]);
  assert.equal(out.truncated, false);

  assert.equal(csv.code, 0, csv.stderr);
  const api = await s.app.inject({
    method: 'POST',
    url: `/v1/databases/${t.name}/explorer/query?format=csv`,
    headers: key.headers,
    payload: { sql },
  });
  assert.equal(api.statusCode, 200, api.body);
  assert.equal(csv.stdout, api.body);
  assert.ok(csv.stdout.startsWith('id,body,flag\r\n'), JSON.stringify(csv.stdout));
  assert.equal(both.code, 2, 'not --csv and --json together');
});

test('db query reads the SQL from stdin (-) or a file', async () => {
  const file = path.join(tmp, 'q.sql');
  await fs.writeFile(file, 'select secret\n  from canary\n order by id;\n');
  const [stdin, fromFile, fileStdin] = await Promise.all([
    cli(['db', 'query', t.name, '-'], { input: 'select secret from canary order by id\n' }),
    cli(['db', 'query', t.name, '--file', file, '--json']),
    cli(['db', 'query', t.name, '--file', '-', '--json'], { input: 'select 40 + 2 as answer' }),
  ]);
  assert.equal(stdin.code, 0, stdin.stderr);
  assert.match(stdin.stdout, /^secret\n-+\nalpha\nbeta\ngamma\n3 rows /);
  assert.equal(fromFile.code, 0, fromFile.stderr);
  assert.deepEqual(JSON.parse(fromFile.stdout).rows, [['alpha'], ['beta'], ['gamma']]);
  assert.equal(fileStdin.code, 0, fileStdin.stderr);
  assert.deepEqual(JSON.parse(fileStdin.stdout).rows, [[42]]);
});

test('a refused or failed query exits 2 with the reason and a caret under its position', async () => {
  const [refused, multiline, failed, failedJson, missing] = await Promise.all([
    cli(['db', 'query', t.name, 'select 1; select 2']),
    cli(['db', 'query', t.name, '-'], { input: 'select id\n  from canary;\n\tselect 2' }),
    cli(['db', 'query', t.name, 'select id, nope from canary']),
    cli(['db', 'query', t.name, 'select id, nope from canary', '--json']),
    cli(['db', 'query', 'nothere', 'select 1']),
  ]);
  assert.equal(refused.code, 2, refused.stderr);
  assert.equal(refused.stdout, '');
  assert.match(refused.stderr, /^error: exactly one statement is allowed \(query_refused, request [^)]+\)\n/);
  const r1 = caret(refused.stderr);
  assert.equal(r1.line, 'LINE 1: select 1; select 2');
  assert.equal(r1.column, 'LINE 1: select 1; '.length, refused.stderr);

  assert.equal(multiline.code, 2, multiline.stderr);
  const r2 = caret(multiline.stderr);
  assert.equal(r2.line, 'LINE 3:  select 2', 'the line that holds the position; a tab shows as one space');
  assert.equal(r2.column, 'LINE 3:  '.length, multiline.stderr);

  assert.equal(failed.code, 2, failed.stderr);
  assert.match(
    failed.stderr,
    /^error: column "nope" does not exist \(query_failed, request [^)]+\)\nSQLSTATE 42703\n/,
  );
  const r3 = caret(failed.stderr);
  assert.equal(r3.line, 'LINE 1: select id, nope from canary');
  assert.equal(r3.column, 'LINE 1: select id, '.length, failed.stderr);

  assert.equal(failedJson.code, 2);
  const e = JSON.parse(failedJson.stderr).error;
  assert.equal(e.code, 'query_failed');
  assert.deepEqual(e.details, { sqlstate: '42703', position: 'select id, '.length });
  assert.equal(missing.code, 6, missing.stderr);
});

test('bad options and SQL over the limit are refused (exit 2) before any request', async () => {
  let hits = 0;
  const counter = http.createServer((_req, res) => {
    hits += 1;
    res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":{"code":"not_found"}}');
  });
  await new Promise<void>((resolve) => counter.listen(0, '127.0.0.1', resolve));
  const counterUrl = `http://127.0.0.1:${(counter.address() as AddressInfo).port}`;
  try {
    const runs = await Promise.all([
      cli(['db', 'query', t.name, 'select 1', '--limit', '0'], { url: counterUrl }),
      cli(['db', 'query', t.name, 'select 1', '--limit', '10001'], { url: counterUrl }),
      cli(['db', 'query', t.name, 'select 1', '--limit', 'ten'], { url: counterUrl }),
      cli(['db', 'query', t.name, 'select 1', '--timeout', '99'], { url: counterUrl }),
      cli(['db', 'query', t.name, 'select 1', '--timeout', '30001'], { url: counterUrl }),
      cli(['db', 'query', t.name, '-'], { url: counterUrl, input: `select '${'a'.repeat(20_000)}'` }),
      cli(['db', 'query', t.name, '-'], { url: counterUrl, input: 'é'.repeat(40_000) }),
      cli(['db', 'query', t.name, `select '${'a'.repeat(20_000)}'`], { url: counterUrl }),
      cli(['db', 'query', t.name, '-'], { url: counterUrl, input: '  \n' }),
      cli(['db', 'query', t.name], { url: counterUrl }),
      cli(['db', 'query', t.name, 'select 1', '--file', '/dev/null'], { url: counterUrl }),
      cli(['db', 'query', 'Bad;Name', 'select 1'], { url: counterUrl }),
    ]);
    for (const r of runs) assert.equal(r.code, 2, `${r.stderr}`);
    assert.match(runs[0]!.stderr, /--limit .*must be 1–10000 rows/);
    assert.match(runs[3]!.stderr, /--timeout .*must be 100–30000 milliseconds/);
    assert.match(runs[5]!.stderr, /longer than 20000 characters/);
    assert.equal(hits, 0, 'no request was made');
    // The counter does count: a valid command reaches it.
    const control = await cli(['db', 'query', t.name, 'select 1', '--limit', '10000'], { url: counterUrl });
    assert.equal(control.code, 6, control.stderr);
    assert.equal(hits, 1);
  } finally {
    await new Promise((resolve) => counter.close(resolve));
  }
});

test('db tables lists tables and views with their columns (name, type, nullable); --json', async () => {
  const [human, json] = await Promise.all([
    cli(['db', 'tables', t.name]),
    cli(['db', 'tables', t.name, '--json']),
  ]);
  assert.equal(human.code, 0, human.stderr);
  const block = (title: string) => human.stdout.split('\n\n').find((b) => b.startsWith(`${title}\n`)) ?? '';
  const notes = block('notes (table)').split('\n');
  assert.match(notes[1]!, /^ {2}column +\| type +\| nullable$/);
  assert.ok(
    notes.some((l) => /^ {2}id +\| integer +\| no$/.test(l)),
    human.stdout,
  );
  assert.ok(
    notes.some((l) => /^ {2}amount +\| numeric\(10,2\) +\| yes$/.test(l)),
    human.stdout,
  );
  assert.match(block('note_bodies (view)'), /\n {2}body +\| text +\| yes/);
  assert.match(human.stdout, /^canary \(table\)$/m);

  assert.equal(json.code, 0, json.stderr);
  const tables = JSON.parse(json.stdout).tables as {
    name: string;
    kind: string;
    columns: { name: string; type: string; nullable: boolean }[];
  }[];
  assert.deepEqual(tables.find((x) => x.name === 'notes')?.columns, [
    { name: 'id', type: 'integer', nullable: false },
    { name: 'body', type: 'text', nullable: true },
    { name: 'amount', type: 'numeric(10,2)', nullable: true },
    { name: 'flag', type: 'boolean', nullable: true },
  ]);
  assert.equal(tables.find((x) => x.name === 'note_bodies')?.kind, 'view');
});
