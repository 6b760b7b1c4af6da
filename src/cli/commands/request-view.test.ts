import assert from 'node:assert/strict';
import { test } from 'node:test';
import { commandName, explainText, type Preflight } from './policy-explain.ts';
import { exitCodeOf, listRow, type Request, requestText, STATUSES } from './request-view.ts';

const request = (over: Partial<Request> = {}): Request => ({
  id: '00000000-0000-4000-8000-000000000001',
  database: 'shop',
  status: 'pending',
  kind: 'sql',
  sql: 'UPDATE t SET a = 1 WHERE id = 1',
  sql_sha256: 'ab'.repeat(32),
  reason: 'fix',
  capability: 'migrator',
  access: null,
  classification: {
    class: 'write',
    statements: [{ class: 'write', command: 'UpdateStmt', reasons: [] }],
    reasons: [],
    parse_error: null,
  },
  findings: [],
  requester: { kind: 'user', id: null, name: 'alice' },
  policy: {
    version: 0,
    rule: 'builtin',
    why: 'w',
    environment: null,
    approvals_required: 1,
    admin_approvals_required: 0,
  },
  approvals: [],
  rejection: null,
  approvals_counted: 0,
  admin_approvals_counted: 0,
  dry_run: null,
  dry_run_error: null,
  approved_rows: null,
  executions: { count: 0, max: 1 },
  break_glass: null,
  last_execution: null,
  result_available: false,
  result_expires_at: null,
  expires_at: '2026-12-09T00:00:00.000Z',
  approval_expires_at: null,
  created_at: '2026-12-02T00:00:00.000Z',
  updated_at: '2026-12-02T00:00:00.000Z',
  ...over,
});

test('each status has the exit code a CI job waits on: 0 done, 2 pending, 3 closed', () => {
  const codes = Object.fromEntries(STATUSES.map((s) => [s, exitCodeOf(s)]));
  assert.deepEqual(codes, {
    pending: 2,
    approved: 0,
    rejected: 3,
    cancelled: 3,
    expired: 3,
    executing: 2,
    executed: 0,
    failed: 3,
  });
});

test('what a person or a database wrote cannot drive the terminal', () => {
  const text = requestText(
    request({
      reason: 'fix\u001b[2J now',
      sql: "UPDATE t SET a = 1\nWHERE note = '\u202e\u0007'",
      requester: { kind: 'user', id: null, name: 'eve\r\u001b]0;x\u0007' },
    }),
  );
  assert.equal(/[\u0000-\u0008\u000b-\u001f\u007f\u202e]/.test(text), false, text);
  assert.match(text, /fix\\x1b\[2J now/);
  assert.match(text, / {4}WHERE note = '\\u202e\\x07'/);
  assert.match(listRow(request({ reason: 'a\u001bb' })).reason, /a\\x1bb/);
});

test('parse-tree node names read as SQL, and explain names the deciding rule', () => {
  assert.deepEqual(['UpdateStmt', 'AlterTableStmt', 'CreateStmt', 'IndexStmt', 'DropStmt'].map(commandName), [
    'UPDATE',
    'ALTER TABLE',
    'CREATE TABLE',
    'CREATE INDEX',
    'DROP',
  ]);
  const p: Preflight = {
    classification: {
      class: 'ddl',
      statements: [{ class: 'ddl', command: 'IndexStmt', reasons: [] }],
      reasons: [],
      parse_error: null,
    },
    findings: [
      { code: 'index_not_concurrent', severity: 'block', message: 'use CONCURRENTLY', statement_index: 0 },
    ],
    policy: {
      version: 3,
      rule: 'environments.production.classes.ddl',
      why: 'policy environments.production: ddl requests need 2 approvals',
      environment: 'production',
      approvals_required: 2,
      admin_approvals_required: 1,
      allowed: true,
    },
    dry_run: null,
    dry_run_error: null,
  };
  const text = explainText('shop', p);
  assert.match(text, /^class: {4}ddl \(CREATE INDEX\)$/m);
  assert.match(text, /BLOCK index_not_concurrent \(statement 1\): use CONCURRENTLY/);
  assert.match(text, /^policy: {3}version 3, environment production$/m);
  assert.match(text, /^rule: {5}environments\.production\.classes\.ddl$/m);
  assert.match(text, /^approvals needed: 2, 1 of them by an owner or admin, never the requester's own$/m);
  assert.match(text, /^verdict: {2}a blocking finding/m);
});
