import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { DEFAULT_SEVERITIES } from '../sql/sql-findings.ts';
import { decide } from './governance.ts';
import { formatDuration, parseDuration } from './policy-duration.ts';
import {
  FINDING_CODES,
  formatPolicyErrors,
  MAX_POLICY_BYTES,
  MAX_POLICY_ERRORS,
  parsePolicyFile,
} from './policy-file.ts';

const EXAMPLE = path.resolve(import.meta.dirname, '../../../docs/examples/policy.yaml');

function errorsOf(source: string) {
  const r = parsePolicyFile(source);
  assert.equal(r.ok, false, `expected errors for ${JSON.stringify(source)}`);
  return r.ok ? [] : r.errors;
}

/** Each bad file: the one error expected (line, field, and a fragment of the message). */
const BAD: [name: string, source: string, line: number, field: string, message: RegExp][] = [
  ['empty file', '', 1, 'version', /empty/],
  ['only a comment', '# nothing\n', 1, 'version', /empty/],
  ['version missing', 'defaults: {}\n', 1, 'version', /required/],
  ['version 2', 'version: 2\n', 1, 'version', /must be 1/],
  ['version as text', 'version: "1"\n', 1, 'version', /must be 1/],
  ['root is a list', '- version: 1\n', 1, '', /mapping/],
  ['unknown root key', 'version: 1\npolicies: {}\n', 2, 'policies', /unknown key "policies"/],
  ['duplicate key', 'version: 1\nversion: 1\n', 2, 'version', /unique/],
  [
    'syntax error names its field',
    'version: 1\ndefaults:\n  break_glass: [owner,, admin]\n',
    3,
    'defaults.break_glass',
    /Unexpected ,/,
  ],
  [
    'duplicate nested key',
    'version: 1\ndefaults:\n  max_access: 8h\n  max_access: 9h\n',
    4,
    'defaults.max_access',
    /unique/,
  ],
  ['tab indentation', 'version: 1\ndefaults:\n\tmax_executions: 1\n', 3, '', /Tabs/],
  ['two documents', 'version: 1\n---\nversion: 1\n', 2, '', /multiple documents/],
  [
    'unknown rule-set key',
    'version: 1\ndefaults:\n  max_approvals: 3\n',
    3,
    'defaults.max_approvals',
    /unknown key "max_approvals"; expected one of: classes,/,
  ],
  [
    'unknown class',
    'version: 1\ndefaults:\n  classes:\n    select: {}\n',
    4,
    'defaults.classes.select',
    /unknown key/,
  ],
  [
    'unknown class-rule key',
    'version: 1\ndefaults:\n  classes:\n    write:\n      approvers: 1\n',
    5,
    'defaults.classes.write.approvers',
    /unknown key "approvers"/,
  ],
  [
    'approvals above 10',
    'version: 1\ndatabases:\n  shop:\n    classes:\n      write:\n        approvals: 11\n',
    6,
    'databases.shop.classes.write.approvals',
    /0 to 10/,
  ],
  [
    'negative approvals',
    'version: 1\ndefaults:\n  classes:\n    write: { approvals: -1 }\n',
    4,
    'defaults.classes.write.approvals',
    /0 to 10/,
  ],
  [
    'fractional approvals',
    'version: 1\ndefaults:\n  classes:\n    write: { approvals: 1.5 }\n',
    4,
    'defaults.classes.write.approvals',
    /whole number/,
  ],
  [
    'approvals as text',
    'version: 1\ndefaults:\n  classes:\n    write: { approvals: two }\n',
    4,
    'defaults.classes.write.approvals',
    /whole number/,
  ],
  [
    'admin_approvals above approvals',
    'version: 1\ndefaults:\n  classes:\n    write:\n      approvals: 1\n      admin_approvals: 2\n',
    6,
    'defaults.classes.write.admin_approvals',
    /cannot exceed approvals \(1\)$/,
  ],
  [
    'approvals lowered under an inherited admin_approvals',
    'version: 1\ndatabases:\n  shop:\n    classes:\n      ddl:\n        approvals: 0\n',
    6,
    'databases.shop.classes.ddl.approvals',
    /admin_approvals \(1\) cannot exceed approvals \(0\); one of them is inherited/,
  ],
  [
    'unknown requester role',
    'version: 1\ndefaults:\n  classes:\n    write:\n      requesters: [owner, superuser]\n',
    5,
    'defaults.classes.write.requesters.1',
    /one of: owner, admin, member, viewer/,
  ],
  [
    'requesters not a list',
    'version: 1\ndefaults:\n  classes:\n    write:\n      requesters: owner\n',
    5,
    'defaults.classes.write.requesters',
    /list of roles/,
  ],
  [
    'a role listed twice',
    'version: 1\ndefaults:\n  break_glass:\n    - owner\n    - owner\n',
    5,
    'defaults.break_glass.1',
    /listed twice/,
  ],
  [
    'lifetime without a unit',
    'version: 1\ndefaults:\n  request_lifetime: 3600\n',
    3,
    'defaults.request_lifetime',
    /duration/,
  ],
  [
    'lifetime with two units',
    'version: 1\ndefaults:\n  approval_lifetime: 1h30m\n',
    3,
    'defaults.approval_lifetime',
    /duration/,
  ],
  [
    'lifetime too short',
    'version: 1\ndefaults:\n  request_lifetime: 30s\n',
    3,
    'defaults.request_lifetime',
    /1m to 90d/,
  ],
  [
    'lifetime too long',
    'version: 1\ndefaults:\n  approval_lifetime: 91d\n',
    3,
    'defaults.approval_lifetime',
    /1m to 90d/,
  ],
  [
    'max_access above 7 days',
    'version: 1\ndefaults:\n  max_access: 8d\n',
    3,
    'defaults.max_access',
    /1m to 7d/,
  ],
  [
    'max_executions 0',
    'version: 1\ndefaults:\n  max_executions: 0\n',
    3,
    'defaults.max_executions',
    /1 to 100/,
  ],
  [
    'max_executions 101',
    'version: 1\ndefaults:\n  max_executions: 101\n',
    3,
    'defaults.max_executions',
    /1 to 100/,
  ],
  [
    'unknown finding code',
    'version: 1\ndefaults:\n  findings:\n    missing_limit: warn\n',
    4,
    'defaults.findings.missing_limit',
    /unknown key "missing_limit"; expected one of: missing_where/,
  ],
  [
    'bad finding severity',
    'version: 1\ndefaults:\n  findings:\n    cascade: error\n',
    4,
    'defaults.findings.cascade',
    /one of: warn, block, off/,
  ],
  [
    'bad environment label',
    'version: 1\nenvironments:\n  Production: {}\n',
    3,
    'environments.Production',
    /environment label/,
  ],
  [
    'environment label too long',
    `version: 1\nenvironments:\n  ${'e'.repeat(33)}: {}\n`,
    3,
    `environments.${'e'.repeat(33)}`,
    /environment label/,
  ],
  ['bad database name', 'version: 1\ndatabases:\n  Shop: {}\n', 3, 'databases.Shop', /database name/],
  [
    'database name with a dash',
    'version: 1\ndatabases:\n  my-shop: {}\n',
    3,
    'databases.my-shop',
    /database name/,
  ],
  [
    'undeclared environment',
    'version: 1\nenvironments:\n  production: {}\ndatabases:\n  shop:\n    environment: prod\n',
    6,
    'databases.shop.environment',
    /"prod" is not declared under environments/,
  ],
  [
    'environment key outside databases',
    'version: 1\nenvironments:\n  production:\n    environment: production\n',
    4,
    'environments.production.environment',
    /unknown key "environment"/,
  ],
  ['defaults not a mapping', 'version: 1\ndefaults: strict\n', 2, 'defaults', /mapping/],
  [
    'merge key',
    'version: 1\nenvironments:\n  base: &b\n    max_executions: 2\ndatabases:\n  shop:\n    <<: *b\n',
    7,
    'databases.shop.<<',
    /merge keys \(<<\) are not supported/,
  ],
  ['numeric key', 'version: 1\ndatabases:\n  1: {}\n', 3, 'databases', /plain names/],
];

describe('policy file: each bad file gives its line and field', () => {
  for (const [name, source, line, field, message] of BAD)
    test(name, () => {
      const errors = errorsOf(source);
      assert.equal(errors.length, 1, JSON.stringify(errors));
      const [e] = errors;
      assert.deepEqual({ line: e?.line, field: e?.field }, { line, field }, JSON.stringify(e));
      assert.match(e?.message ?? '', message);
      assert.ok((e?.column ?? 0) >= 1);
    });
});

describe('policy file', () => {
  test('the documented example loads, and decide() follows it', () => {
    const r = parsePolicyFile(fs.readFileSync(EXAMPLE, 'utf8'));
    assert.ok(r.ok, r.ok ? '' : formatPolicyErrors('policy.yaml', r.errors));
    const p = r.policy;
    const destructive = decide(p, { database: 'shop', cls: 'destructive', role: 'member' });
    assert.equal(destructive.allowed, false);
    assert.equal(destructive.rule, 'environments.production.classes.destructive');
    const staging = decide(p, { database: 'shop_preview', cls: 'write', role: 'member' });
    assert.deepEqual([staging.allowed, staging.approvals, staging.environment], [true, 0, 'staging']);
    const read = decide(p, { database: 'analytics', cls: 'read', role: 'viewer' });
    assert.equal(read.allowed, false);
    assert.equal(read.rule, 'databases.analytics.classes.read');
    assert.equal(read.rules.approval_lifetime_s, 4 * 3600);
    assert.equal(read.rules.max_access_s, 4 * 3600);
    assert.equal(read.rules.findings.index_not_concurrent, 'block');
    const other = decide(p, { database: 'unlisted', cls: 'ddl', role: 'admin' });
    assert.deepEqual([other.approvals, other.admin_approvals, other.rule], [2, 1, 'builtin']);
  });

  test('columns point at the value, and errors come sorted by position', () => {
    const errors = errorsOf('version: 1\ndefaults:\n  max_executions: 0\n  bogus: 1\n  max_access: 1w\n');
    assert.deepEqual(
      errors.map((e) => [e.line, e.column, e.field]),
      [
        [3, 19, 'defaults.max_executions'],
        [4, 3, 'defaults.bogus'],
        [5, 15, 'defaults.max_access'],
      ],
    );
    assert.equal(
      formatPolicyErrors('p.yaml', errors.slice(0, 1)),
      'p.yaml:3:19 defaults.max_executions: must be a whole number from 1 to 100',
    );
  });

  test('an environment may be declared empty, and an alias is read as what it names', () => {
    const r = parsePolicyFile(
      'version: 1\nenvironments:\n  staging:\n  production: &prod\n    max_executions: 3\ndatabases:\n  shop: *prod\n  preview:\n    environment: staging\n',
    );
    assert.ok(r.ok);
    assert.deepEqual(r.policy.environments?.['staging'], {});
    assert.equal(r.policy.databases?.['shop']?.max_executions, 3);
    assert.equal(
      decide(r.policy, { database: 'preview', cls: 'read', role: 'viewer' }).environment,
      'staging',
    );
  });

  test('a file over 256 KiB is refused before it is parsed', () => {
    const big = `version: 1\n${'#'.repeat(MAX_POLICY_BYTES)}\n`;
    const errors = errorsOf(big);
    assert.equal(errors.length, 1);
    assert.match(errors[0]?.message ?? '', /at most 262144/);
  });

  test('a file nested absurdly deep is refused before parsing, quickly', () => {
    for (const [source, message] of [
      [`version: 1\ndefaults: ${'['.repeat(100_000)}`, /brackets nested more than 64 deep/],
      [`version: 1\ndefaults: ${'{a: '.repeat(60_000)}`, /brackets nested more than 64 deep/],
      [`version: 1\n${'- '.repeat(60_000)}x\n`, /indented more than 128 columns deep/],
      [
        `version: 1\n${Array.from({ length: 200 }, (_, i) => `${' '.repeat(i)}k${i}:`).join('\n')}\n`,
        /indented/,
      ],
    ] as const) {
      const started = performance.now();
      const errors = errorsOf(source);
      assert.ok(performance.now() - started < 500, 'no deep recursion');
      assert.equal(errors.length, 1);
      assert.match(errors[0]?.message ?? '', message);
    }
    // Balanced brackets and ordinary indentation are not counted against a file.
    assert.ok(parsePolicyFile(`version: 1\n${'# [ ] { }\n'.repeat(1000)}`).ok);
  });

  test('a huge unknown key is reported, cut short', () => {
    const [e] = errorsOf(`version: 1\n${'k'.repeat(1000)}: 1\n`);
    assert.ok(
      (e?.field.length ?? 0) <= 200 && (e?.message.length ?? 0) <= 400,
      JSON.stringify(e).slice(0, 300),
    );
    assert.match(e?.message ?? '', /^unknown key "kkk/);
  });

  test('errors are capped', () => {
    const lines = Array.from({ length: 200 }, (_, i) => `  bad_${i}: 1`).join('\n');
    assert.equal(errorsOf(`version: 1\ndefaults:\n${lines}\n`).length, MAX_POLICY_ERRORS);
  });

  test('an unparsable file reports the YAML error, not a schema error', () => {
    const errors = errorsOf('version: 1\ndefaults: {max_executions: 1\n');
    assert.ok(errors.length >= 1);
    assert.ok(
      errors.every((e) => !/unknown key|must be a whole/.test(e.message)),
      JSON.stringify(errors),
    );
  });

  test('a policy may set every finding the classifier has, and no other', () => {
    assert.deepEqual([...FINDING_CODES].sort(), Object.keys(DEFAULT_SEVERITIES).sort());
  });

  test('durations', () => {
    assert.equal(parseDuration('30m'), 1800);
    assert.equal(parseDuration('7d'), 604_800);
    for (const bad of ['', '0m', '1.5h', '1h30m', '10', 'h', '01h', '1 h', '1H'])
      assert.equal(parseDuration(bad), null, bad);
    assert.equal(formatDuration(86_400), '1d');
    assert.equal(formatDuration(5400), '90m');
    assert.equal(formatDuration(45), '45s');
  });
});
