import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type Admission, createExplorerAdmission } from './explorer.admission.ts';

const held = (a: Admission) => {
  assert.ok('release' in a, JSON.stringify(a));
  return a;
};

test('explorer admission: per database, per account, per process; releases restore each exactly once', () => {
  const admit = createExplorerAdmission({ perDatabase: 2, perAccount: 3, perProcess: 4 });
  const a1 = held(admit({ databaseId: 'd1', accountId: 'A' }));
  held(admit({ databaseId: 'd1', accountId: 'A' }));
  assert.deepEqual(admit({ databaseId: 'd1', accountId: 'A' }), {
    refused: 'Too many explorer queries are running on this database',
  });
  held(admit({ databaseId: 'd2', accountId: 'A' }));
  assert.deepEqual(admit({ databaseId: 'd3', accountId: 'A' }), {
    refused: 'Too many explorer queries are running for this account',
  });
  held(admit({ databaseId: 'd4', accountId: 'B' }));
  assert.deepEqual(admit({ databaseId: 'd5', accountId: 'C' }), {
    refused: 'The server is running too many explorer queries',
  });
  // A release frees its database, its account and the process; a second release changes nothing.
  a1.release();
  a1.release();
  held(admit({ databaseId: 'd5', accountId: 'C' }));
  assert.ok('refused' in admit({ databaseId: 'd6', accountId: 'D' }), 'the process is full again');
});
