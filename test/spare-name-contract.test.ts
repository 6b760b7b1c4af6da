import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import test from 'node:test';
import { newSpareName, spareTag } from '../src/agent/postgres/spare-sql.ts';
import { SPARE_NAME_PATTERN } from '../src/shared/contracts/jobs.ts';

test("every spare name an agent makes is of the shape the server accepts as a create's physical_name", () => {
  for (let i = 0; i < 50; i++) {
    const name = newSpareName(spareTag(randomBytes(32)));
    assert.match(name, SPARE_NAME_PATTERN);
  }
  // A generated name (ADR 0039) and a label are not spares' names.
  assert.doesNotMatch('bulwark_db_p_0123456789abcdef', SPARE_NAME_PATTERN);
  assert.doesNotMatch('cart', SPARE_NAME_PATTERN);
});
