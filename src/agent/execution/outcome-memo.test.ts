import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ExecutionOutcome } from '../../shared/contracts/execution.ts';
import { createOutcomeMemo } from './outcome-memo.ts';

const outcome = (n: number): ExecutionOutcome => ({
  kind: 'executed',
  committed: true,
  statements: [],
  affected_rows: n,
  result: null,
  duration_ms: 1,
});

test('outcomes are kept by exact token until expiry, bounded in entries and bytes (oldest out)', () => {
  let now = 1_000_000;
  const memo = createOutcomeMemo({ maxEntries: 2, maxBytes: 100, now: () => now });
  memo.remember('a', 1_000 + 10, outcome(1), 10);
  assert.deepEqual(memo.recall('a'), outcome(1));
  assert.equal(memo.recall('a '), null);
  memo.remember('b', 1_010, outcome(2), 10);
  memo.remember('c', 1_010, outcome(3), 10); // a goes: two entries at most
  assert.equal(memo.recall('a'), null);
  memo.remember('d', 1_010, outcome(4), 95); // b and c go: 100 bytes at most
  assert.equal(memo.recall('b'), null);
  assert.equal(memo.recall('c'), null);
  assert.deepEqual(memo.recall('d'), outcome(4));
  memo.remember('huge', 1_010, outcome(5), 101); // larger than the whole memo: not kept
  assert.equal(memo.recall('huge'), null);
  now = 1_011_000; // past exp
  assert.equal(memo.recall('d'), null);
});
