import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { AppError, ERROR_CATALOG, ERROR_CODES, type ErrorCode, errorStatuses } from './errors.ts';

const API_MD = path.resolve(import.meta.dirname, '../../docs/api.md');

/** docs/api.md's error table (under "## Errors"): code → its statuses, its own first. */
function documentedErrors(): Map<string, number[]> {
  const text = fs.readFileSync(API_MD, 'utf8');
  const start = text.indexOf('\n## Errors\n');
  assert.ok(start >= 0, 'docs/api.md has an "## Errors" section');
  const end = text.indexOf('\n## ', start + 1);
  const section = text.slice(start, end < 0 ? undefined : end);
  const rows = new Map<string, number[]>();
  for (const line of section.split('\n')) {
    const m = /^\|\s*`([a-z_]+)`\s*\|\s*([^|]+?)\s*\|/.exec(line);
    if (!m) continue;
    const status = /^(\d{3})(?:\s*\(([\d,\s]+)\))?$/.exec(m[2]!);
    assert.ok(status, `docs/api.md: the status of ${m[1]} reads "${m[2]}", not "NNN" or "NNN (NNN, …)"`);
    assert.ok(!rows.has(m[1]!), `docs/api.md lists ${m[1]} twice`);
    const also = status[2] ? status[2].split(',').map((s) => Number(s.trim())) : [];
    rows.set(m[1]!, [Number(status[1]), ...also]);
  }
  assert.ok(rows.size > 0, "docs/api.md's error table has rows");
  return rows;
}

test("docs/api.md's error table and the error catalog list the same codes with the same statuses", () => {
  const documented = documentedErrors();
  for (const code of ERROR_CODES) {
    assert.ok(documented.has(code), `${code} is in the catalog but not in docs/api.md's error table`);
    assert.deepEqual(
      documented.get(code),
      errorStatuses(code),
      `the statuses of ${code} (docs/api.md vs catalog)`,
    );
  }
  for (const code of documented.keys()) {
    assert.ok(
      (ERROR_CODES as string[]).includes(code),
      `${code} is in docs/api.md's error table but not in ERROR_CATALOG (src/shared/errors.ts)`,
    );
  }
});

test('every catalog status is an HTTP error status, each alternative distinct from the own', () => {
  for (const code of ERROR_CODES) {
    const statuses = errorStatuses(code);
    assert.equal(new Set(statuses).size, statuses.length, `${code} lists a status twice`);
    for (const s of statuses) assert.ok(Number.isInteger(s) && s >= 400 && s <= 599, `${code}: ${s}`);
  }
});

test('AppError takes its status from the catalog; an alternative must be one the catalog lists', () => {
  for (const code of ERROR_CODES) {
    const e = new AppError(code, 'm');
    assert.equal(e.status, ERROR_CATALOG[code].status, code);
    assert.equal(e.code, code);
  }
  assert.equal(new AppError('cancelled', 'gone').status, 499);
  assert.equal(new AppError('bad_request', 'too long', undefined, 414).status, 414);
  // The type refuses a status the catalog does not list; so does the constructor at run time.
  const loose = (code: ErrorCode, status: number) =>
    Reflect.construct(AppError, [code, 'm', undefined, status]) as AppError;
  assert.throws(() => loose('not_found', 410), /410 is not a status of error code not_found/);
  assert.throws(() => loose('bad_request', 418), /418 is not a status of error code bad_request/);
});
