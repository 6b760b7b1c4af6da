import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { firstAdminLines } from '../src/embedded/first-admin.ts';
import { createLocalUser } from '../src/server/modules/people/users.service.ts';
import { createTestDb, type TestDb } from './helpers/db.ts';

// The first admin's invite, as `bulwark up` makes it on each start (the e2e test in up.e2e.test.ts
// sees the printed link of a real first start and redeems it): made once, on an install without
// users, by one of any number of concurrent starts.

let db: TestDb;
before(async () => {
  db = await createTestDb();
});
after(() => db.drop());

const pendingAdminInvites = async () =>
  (await db.pool.query('SELECT count(*)::int AS n FROM invites WHERE platform_admin AND expires_at > now()'))
    .rows[0].n as number;

test('made once on an empty install, pending on later starts, made again only after it expired unused, never once users exist', async () => {
  const starts = await Promise.all(
    Array.from({ length: 5 }, () => firstAdminLines(db.url, 'http://127.0.0.1:8080', ' --data-dir /srv/b')),
  );
  const issued = starts.filter((lines) => lines.some((l) => l.includes('#invite=')));
  assert.equal(issued.length, 1, 'one of five concurrent starts made it');
  assert.match(
    issued[0]![0]!,
    /^ {2}first admin: open {2}http:\/\/127\.0\.0\.1:8080\/#invite=bwi_[\w-]{43}$/,
  );
  assert.match(
    issued[0]![1]!,
    /one-time invite of a platform admin who owns account "default", expires .*; shown only now/,
  );
  // The first admin owns the install's first account (so creating a database works at once).
  const invite = await db.pool.query(
    'SELECT a.name, i.role FROM invites i JOIN accounts a ON a.id = i.account_id WHERE i.platform_admin',
  );
  assert.deepEqual(invite.rows, [{ name: 'default', role: 'owner' }]);
  for (const lines of starts.filter((l) => l !== issued[0]))
    assert.match(
      lines.join('\n'),
      /first admin: an invite made .* is pending \(for a new one: bulwark admin invite --platform-admin --data-dir \/srv\/b\)/,
    );
  assert.equal(await pendingAdminInvites(), 1);
  const event = await db.pool.query(
    "SELECT actor_type, details FROM audit_events WHERE action = 'invite.created' AND details->>'first_admin' = 'true'",
  );
  assert.equal(event.rowCount, 1);
  assert.equal(event.rows[0].actor_type, 'system');

  // Expired unused, nobody signed up: the next start makes a new one.
  await db.pool.query("UPDATE invites SET expires_at = now() - interval '1 second'");
  const again = await firstAdminLines(db.url, 'http://127.0.0.1:8080', '');
  assert.match(again[0]!, /#invite=bwi_/);
  assert.equal(await pendingAdminInvites(), 1);

  // Someone signed up: nothing more is made or said.
  const client = await db.pool.connect();
  try {
    await createLocalUser(client, {
      username: 'someone',
      password: 'a long enough passphrase',
      platformAdmin: false,
    });
  } finally {
    client.release();
  }
  await db.pool.query("UPDATE invites SET expires_at = now() - interval '1 second'");
  assert.deepEqual(await firstAdminLines(db.url, 'http://127.0.0.1:8080', ''), []);
  assert.equal(await pendingAdminInvites(), 0);
});
