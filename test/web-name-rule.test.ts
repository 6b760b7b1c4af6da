import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { createBody } from '../src/server/modules/databases/databases.schemas.ts';
import { nameProblem } from '../web/src/pages/databases/name-rule.ts';

// The dashboard checks a new database's name as it is typed (web/src/pages/databases/name-rule.ts,
// with the pattern generated from the API document). It must agree with the server's own check:
// a name it calls fine is accepted by POST /v1/databases' schema, and every name it refuses is refused.

const accepted = (name: string) => createBody.safeParse({ name }).success;

test('the dashboard and the API agree on chosen names', () => {
  const cases = [
    'shop',
    'a',
    'a'.repeat(63),
    'a'.repeat(64),
    'Shop',
    '1shop',
    '_x',
    'shop-2',
    'shop 2',
    'pg_x',
    'bulwark',
    'bulwark_control',
    'bulwark_x',
    'bulwarkx',
    'postgres',
    'postgresx',
    'template0',
    'template1',
    'pgbouncer',
    'pgx',
    'sh\u00f6p',
    'shop\n',
    '',
  ];
  for (const name of cases) assert.equal(nameProblem(name) === null, accepted(name), JSON.stringify(name));
});

test('the dashboard and the API agree on arbitrary names', () => {
  const chars = fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789_-. AZé\u0000'.split(''));
  const names = fc.oneof(
    fc.string({ unit: chars, maxLength: 70 }),
    fc
      .constantFrom('pg_', 'bulwark_', 'postgres', 'template', 'pgbouncer')
      .chain((p) => fc.string({ unit: chars, maxLength: 8 }).map((s) => p + s)),
    fc.string({ maxLength: 70 }),
  );
  fc.assert(
    fc.property(names, (name) => (nameProblem(name) === null) === accepted(name)),
    { numRuns: 3000, seed: 1913 },
  );
});
