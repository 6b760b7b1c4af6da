import assert from 'node:assert/strict';
import { test } from 'node:test';
import { withTx } from '../src/server/db/pool.ts';
import { ARGON2_PARAMS, verifyPassword } from '../src/server/modules/people/passwords.ts';
import { createLocalUser } from '../src/server/modules/people/users.service.ts';
import { AppError } from '../src/shared/errors.ts';
import { createTestDb } from './helpers/db.ts';

const isCode = (code: string) => (e: unknown) => e instanceof AppError && e.code === code;

test('createLocalUser: stores an argon2id hash with the stated parameters, and the membership', async () => {
  const db = await createTestDb();
  try {
    const account = await db.pool.query<{ id: string }>(
      "INSERT INTO accounts (name) VALUES ('acme') RETURNING id",
    );
    const accountId = account.rows[0]!.id;
    const user = await withTx(db.pool, (tx) =>
      createLocalUser(tx, {
        username: 'alice',
        password: 'correct horse battery',
        platformAdmin: false,
        membership: { accountId, role: 'admin' },
      }),
    );
    assert.equal(user.username, 'alice');
    assert.equal(user.status, 'active');
    const row = await db.pool.query<{ password_hash: string; password_changed_at: Date | null }>(
      'SELECT password_hash, password_changed_at FROM users WHERE id = $1',
      [user.id],
    );
    const phc = row.rows[0]!.password_hash;
    assert.match(
      phc,
      new RegExp(
        `^\\$argon2id\\$v=19\\$m=${ARGON2_PARAMS.memoryCost},t=${ARGON2_PARAMS.timeCost},p=${ARGON2_PARAMS.parallelism}\\$`,
      ),
    );
    assert.doesNotMatch(phc, /correct horse/);
    assert.ok(row.rows[0]!.password_changed_at);
    assert.equal(await verifyPassword(phc, 'correct horse battery'), true);
    const m = await db.pool.query('SELECT role FROM memberships WHERE account_id = $1 AND user_id = $2', [
      accountId,
      user.id,
    ]);
    assert.deepEqual(m.rows, [{ role: 'admin' }]);
  } finally {
    await db.drop();
  }
});

test('createLocalUser refuses a weak password, a bad or taken username; nothing is stored', async () => {
  const db = await createTestDb();
  try {
    const make = (username: string, password: string) =>
      withTx(db.pool, (tx) => createLocalUser(tx, { username, password, platformAdmin: false }));
    await assert.rejects(make('bob', 'too-short'), isCode('weak_password'));
    await assert.rejects(make('bob', 'qwerty123456'), isCode('weak_password'), 'a common password');
    await assert.rejects(make('bob', 'QwErTy123456'), isCode('weak_password'), 'common, any case');
    await assert.rejects(make('bob.example.one', 'BOB.EXAMPLE.ONE'), (e: unknown) => {
      return e instanceof AppError && e.code === 'weak_password' && e.details?.reason === 'equals_username';
    });
    await assert.rejects(make('Bob', 'correct horse battery'), isCode('bad_request'), 'upper case');
    await assert.rejects(make('b', 'correct horse battery'), isCode('bad_request'), 'too short');
    await assert.rejects(make('9lives', 'correct horse battery'), isCode('bad_request'));
    const count = await db.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM users');
    assert.equal(count.rows[0]!.n, 0);
    await make('bob', 'correct horse battery');
    await assert.rejects(make('bob', 'another good password'), isCode('conflict'));
    const after = await db.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM users');
    assert.equal(after.rows[0]!.n, 1);
  } finally {
    await db.drop();
  }
});
